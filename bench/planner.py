"""Long-horizon plans from simulated experience (issue 34; the paper's §4.1 / Table 2 at tabletop scale): a goal-
conditioned planner trained on hindsight-labelled rollouts of the learned simulator, against one trained on the
recorded short-horizon episodes, judged in the physics world by the reduction in distance to goal (RDG, Eq. 4).

    python bench/planner.py --workdir /tmp/fidelity --output planner.json
    python bench/planner.py --workdir /tmp/fidelity --eval_only --seeds 4000000:4000100 --output other.json

Stages (each kept when its output is in WORKDIR already, so an interrupted run resumes):

1. **simulator**: WORKDIR/run, the model `bench/fidelity.py` trains (trained here first, by fidelity's stages, when
   absent);
2. **text run**: WORKDIR/run_text — WORKDIR/run trained on for `--text_minutes` with `input.control_drop`, so that
   text without controls (how a planner's instructions are given) is a trained condition (fidelity's run never saw
   it: without this, text-only success is 0);
3. **text following**: from the first frames of the held-out episodes (WORKDIR/clips/heldout), every push their
   blocks allow, text only for 4 steps, judged on the generated frames; and with another instruction's text;
4. **hindsight data**: rollouts in the learned simulator from the recorded training episodes' first frames, 3–5
   text-only instructions each, for `--rollout_minutes` (`agents.hindsight.imagine_for`), relabelled
   (`agents.hindsight.relabel`) → WORKDIR/planner/hindsight.npz; pybullet is not run;
5. **planners**: the same network fitted `--planner_steps` on the recorded episodes (short_horizon: first frame,
   last frame, instruction) and on the hindsight data → WORKDIR/planner/{short_horizon,hindsight};
6. **evaluate**: on the goals of `--seeds` (each layout after 3–5 scripted pushes, `agents.world.make_goal`) every
   planner (and random, oracle) gives 5 instructions, each carried out by the scripted controller in pybullet; RDG
   over the moved blocks and over all, mean with a 95 % interval;
7. **gif**: WORKDIR/planner.gif — a generated rollout of the hindsight data (with its goal), and the hindsight
   planner's execution in pybullet of one held-out goal (with that goal; the short-horizon planner's when no hindsight
   planner could be trained).

Held-out layouts: `world.reset(seed)` for `--seeds`, checked disjoint from the training layouts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent  # the held-out check and the simulator loader the agent bench uses
import fidelity  # the simulator's own bench: its workdir layout, stages and device line

def log(message: str) -> None:
    print(f"[planner] {message}", flush=True)


def text_run(workdir: str, run: str, clips: str, minutes: float, control_drop: float) -> str:
    """WORKDIR/run_text: `run`'s latest checkpoint trained on with `input.control_drop` (kept when present)."""
    out = os.path.join(workdir, "run_text")
    if os.path.exists(os.path.join(out, "run.json")):
        log(f"{out} is trained already: kept (delete it to train again)")
        return out
    import orbax.checkpoint as ocp

    latest = ocp.CheckpointManager(os.path.join(run, "checkpoints")).latest_step()
    if latest is None:
        raise SystemExit(f"{run} has no checkpoint to start the text run from")
    os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
    shutil.copytree(os.path.join(run, "checkpoints", str(latest)), os.path.join(out, "checkpoints", str(latest)))
    with open(os.path.join(run, "run.json"), encoding="utf-8") as f:
        saved = json.load(f)["config"]["input"]
    # The run's own input settings carried over (those the fidelity bench may have set), control_drop added.
    kept = [f"--config.input.{k}={saved[k]}" for k in ("text_drop", "history_ghost", "condition_drop") if k in saved]
    fidelity.unisim("train", "--config", fidelity.CONFIG, "--workdir", out, "--mixture", f"{clips}:1",
                    f"--config.max_train_seconds={minutes * 60}", f"--config.input.control_drop={control_drop}", *kept)
    return out


def text_following(sim, heldout: str, text, starts: int, path: str) -> dict:
    """Item 1's figures (kept in `path` once measured: an interrupted run does not measure them again)."""
    from unisim.agents import hindsight

    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    firsts = [e.first for e in hindsight.recorded_episodes(heldout, sim.base_size, limit=starts)]
    out = {"starts": len(firsts)}
    for name, shuffled in (("named", False), ("shuffled_text", True)):
        began = time.monotonic()
        row = hindsight.text_following(sim, firsts, text, shuffled=shuffled)
        row["seconds"] = time.monotonic() - began
        out[name] = row
        log(f"text following, {name}: {row['success']:.2f} {[round(x, 2) for x in row['interval']]} of "
            f"{row['rollouts']} rollouts; other blocks drift {100 * (row['other_block_drift_m'] or 0):.1f} cm; "
            f"{row['seconds']:.0f} s")
    named, shuffled_rate = out["named"]["success"], out["shuffled_text"]["success"]
    out["recorded_controls"] = recorded_controls_following(sim, text)
    log(f"the named block pushed with the recorded controls: {out['recorded_controls']}")
    out["goal"] = {"named_at_least_0.6": named >= 0.6,
                   "named_at_least_3x_shuffled": named > 0 and named >= 3 * shuffled_rate}
    for row in (out["named"], out["shuffled_text"]):
        row["outcomes"] = row["outcomes"][:64]  # a sample in the JSON; the rates count them all
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    return out


def recorded_controls_following(sim, text, episodes: int = 16, seed: int = 5_000_000) -> dict:
    """The diagnosis behind text following: scripted pybullet episodes (seeds `seed`…, none used elsewhere) replayed
    in the learned simulator with their own recorded controls and text, from their first frame; how often the
    generated frames show the named block pushed ≥ 5 cm (`agents.tasks.succeeded` on detected positions), beside the
    same reading of pybullet's own frames. A simulator that cannot render a push given the true controls cannot
    carry one out from text."""
    from unisim.agents import detect, world
    from unisim.agents.tasks import Task, succeeded
    from unisim.samples import tabletop
    from unisim.simulator.core import Action

    recorded = [tabletop.scripted_episode(seed + i) for i in range(episodes)]
    firsts = [world.observe(e["steps"][0]["observation"]["rgb"], sim.base_size) for e in recorded]
    lasts = [world.observe(e["steps"][-1]["observation"]["rgb"], sim.base_size) for e in recorded]
    tasks = [Task("push", e["target_block"], e["direction"]) for e in recorded]
    sessions = [sim.new_session(f, seed=i) for i, f in enumerate(firsts)]
    starts = [detect.positions(f) for f in firsts]
    generated = [False] * episodes
    for k in range(-(-max(len(e["steps"]) for e in recorded) // sim.frames)):
        actions = []
        for e in recorded:
            chunk = np.zeros((sim.frames, 2))
            rows = np.stack([s["action"] for s in e["steps"]])[k * sim.frames:(k + 1) * sim.frames]
            chunk[:len(rows)] = rows
            actions.append(Action(text=text(e["instruction"]), controls=chunk))
        for i, video in enumerate(sim.step_sessions(sessions, actions)):
            generated[i] |= succeeded(tasks[i], starts[i], detect.positions(video[-1]))
    real = [succeeded(t, s, detect.positions(f)) for t, s, f in zip(tasks, starts, lasts)]
    return {"episodes": episodes, "pushed_in_generated_frames": float(np.mean(generated)),
            "pushed_in_pybullet_frames": float(np.mean(real))}


def hindsight_data(folder: str, sim, train_clips: str, text, minutes: float, sample_video: str):
    from unisim.agents import hindsight
    from unisim.agents.planner import PlanSamples

    path = os.path.join(folder, "hindsight.npz")
    if os.path.exists(os.path.join(folder, "hindsight.json")):
        with open(os.path.join(folder, "hindsight.json"), encoding="utf-8") as f:
            summary = json.load(f)
        return (PlanSamples.load(path) if summary["samples"] else None), summary
    starts = [e.first for e in hindsight.recorded_episodes(train_clips, sim.base_size)]
    log(f"hindsight data: {minutes:.0f} min of rollouts from {len(starts)} recorded start frames")
    rollouts, summary = hindsight.imagine_for(sim, starts, text, minutes * 60, log=log)
    relabelled = hindsight.relabel(rollouts)
    samples = PlanSamples.of(relabelled) if relabelled else None
    if samples is None:  # kept as a result: the hindsight row is then missing from the table, and its goals unmet
        log(f"none of the {summary['instructions']} instructions shows a push in its generated frames: nothing to "
            "train the hindsight planner on")
    else:
        samples.save(path)
    example = max(rollouts, key=lambda r: sum(label is not None for label in r.labels))
    np.savez_compressed(sample_video, video=np.stack(example.video), goal=example.goal,
                        instructions=np.array([t.instruction for t in example.instructions]),
                        labels=np.array([t.instruction if t else "" for t in example.labels]))
    summary["samples"] = len(relabelled)
    with open(os.path.join(folder, "hindsight.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    return samples, summary


def train_planner(directory: str, samples, steps: int, seed: int):
    from unisim.agents.planner import Planner, accuracy, fit

    if os.path.exists(os.path.join(directory, "planner.json")):
        return Planner.load(directory)
    began = time.monotonic()
    planner = fit(Planner.create(seed=seed), samples, steps, seed=seed, log=log)
    planner.save(directory)
    with open(os.path.join(directory, "summary.json"), "w", encoding="utf-8") as f:
        json.dump({"samples": len(samples), "steps": steps, "seconds": time.monotonic() - began,
                   "training_accuracy": accuracy(planner, samples)}, f)
    return planner


def gif(workdir: str, sample_video: str, planner, seed: int) -> str:
    """Top: a generated rollout of the hindsight data (the one with the most labels) | its goal (the last generated
    frame). Bottom: `planner`'s execution in pybullet of held-out goal `seed` | that goal. 8× enlarged."""
    from PIL import Image

    from unisim.agents import world
    from unisim.samples import tabletop

    with np.load(sample_video) as f:
        imagined, imagined_goal = list(f["video"]), f["goal"]
    real = []
    with tabletop.TabletopWorld() as physics:
        goal = world.make_goal(physics, seed)
        world.run_plan(physics, goal, planner, frames=real)
    strips = []
    for t in range(max(len(imagined), len(real))):
        top = np.concatenate([imagined[min(t, len(imagined) - 1)], imagined_goal], 1)
        bottom = np.concatenate([real[min(t, len(real) - 1)], goal.frame], 1)
        strip = np.concatenate([top, bottom], 0)
        strips.append(Image.fromarray(strip).resize((strip.shape[1] * 8, strip.shape[0] * 8), Image.NEAREST))
    path = os.path.join(workdir, "planner.gif")
    strips[0].save(path, save_all=True, append_images=strips[1:], duration=100, loop=0)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="bench/fidelity.py's workdir (its run is trained if absent)")
    parser.add_argument("--output", help="the result as JSON (default WORKDIR/planner.json)")
    parser.add_argument("--seeds", default="3000000:3000100", help="held-out layouts A:B of the goals (at least 50)")
    parser.add_argument("--eval_only", action="store_true", help="evaluate the saved planners; train nothing")
    parser.add_argument("--text_minutes", type=float, default=25.0, help="the text run's training, wall")
    parser.add_argument("--control_drop", type=float, default=0.4, help="the text run's input.control_drop")
    parser.add_argument("--rollout_minutes", type=float, default=20.0, help="hindsight rollouts, wall")
    parser.add_argument("--planner_steps", type=int, default=3000, help="fit steps of each planner (batch 64)")
    parser.add_argument("--text_starts", type=int, default=16, help="held-out start frames for text following")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance η of text rollouts")
    parser.add_argument("--sampler_steps", type=int, default=8, help="DDIM steps of imagined segments")
    parser.add_argument("--episodes", type=int, default=600, help="simulator training episodes (fidelity's)")
    parser.add_argument("--budget_minutes", type=float, default=30.0, help="simulator training, if trained here")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    seeds = agent.held_out_seeds(parser, args.seeds, 50, args.episodes, "goals")
    workdir = os.path.abspath(args.workdir)
    folder = os.path.join(workdir, "planner")
    os.makedirs(folder, exist_ok=True)
    began, seconds = time.monotonic(), {}

    from unisim.agents import hindsight, world
    from unisim.agents.planner import Planner, recorded_samples

    stage = time.monotonic()
    directories = {name: os.path.join(folder, name) for name in ("short_horizon", "hindsight")}
    if args.eval_only:
        if not any(os.path.exists(os.path.join(d, "planner.json")) for d in directories.values()):
            parser.error(f"--eval_only: no planner in {folder}")
        result = {}
    else:
        data = agent.simulator_run(workdir, args.episodes, args.workers, args.budget_minutes)
        seconds["simulator"] = time.monotonic() - stage
        stage = time.monotonic()
        run = text_run(workdir, data["run"], data["train"], args.text_minutes, args.control_drop)
        seconds["text_run"] = time.monotonic() - stage
        sim = agent.load_simulator(run, steps=args.sampler_steps, guidance=args.guidance)
        text = hindsight.conditioning(data["train"])
        stage = time.monotonic()
        following = text_following(sim, data["heldout"], text, args.text_starts,
                                   os.path.join(folder, "text_following.json"))
        seconds["text_following"] = time.monotonic() - stage
        stage = time.monotonic()
        sample_video = os.path.join(folder, "example_rollout.npz")
        samples, rollouts = hindsight_data(folder, sim, data["train"], text, args.rollout_minutes, sample_video)
        seconds["hindsight_rollouts"] = rollouts["seconds"]
        stage = time.monotonic()
        recorded = recorded_samples(hindsight.recorded_episodes(data["train"], sim.base_size))
        train_planner(directories["short_horizon"], recorded, args.planner_steps, seed=0)
        if samples is not None:
            train_planner(directories["hindsight"], samples, args.planner_steps, seed=0)
        seconds["planners"] = time.monotonic() - stage
        result = {"simulator": data["run"], "text_run": run, "text_following": following, "hindsight": rollouts,
                  "sampler": {"steps": args.sampler_steps, "guidance": args.guidance}}
    directories = {name: d for name, d in directories.items() if os.path.exists(os.path.join(d, "planner.json"))}
    planners = {name: Planner.load(d) for name, d in directories.items()}
    trained = {}
    for name, d in directories.items():
        with open(os.path.join(d, "summary.json"), encoding="utf-8") as f:
            trained[name] = json.load(f)

    stage = time.monotonic()
    rows = world.evaluate_plans({**planners, "random": "random", "oracle": "oracle"}, seeds, log=log)
    seconds["evaluate_pybullet"] = time.monotonic() - stage
    media = None
    sample_video = os.path.join(folder, "example_rollout.npz")
    if os.path.exists(sample_video) and planners:
        shown = "hindsight" if "hindsight" in planners else next(iter(planners))
        media = gif(workdir, sample_video, planners[shown], seeds.start)
        log(f"gif: top, a generated hindsight rollout; bottom, the {shown} planner in pybullet")
    result.update({"device": fidelity.device(), "seconds": time.monotonic() - began, "stage_seconds": seconds,
                   "seeds": [seeds.start, seeds.stop], "planners_trained": trained, "rows": rows, "gif": media})
    result["goals"] = goals(result)
    output = args.output or os.path.join(workdir, "planner.json")
    with open(output, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(format_table(result))
    log(f"wrote {output}{' and ' + media if media else ''} in {(time.monotonic() - began) / 60:.1f} min")
    return 0


def goals(result: dict) -> dict:
    rows = result["rows"]
    hindsight_rdg = rows["hindsight"]["rdg_moved"] if "hindsight" in rows else float("-inf")  # none trained
    short = rows["short_horizon"]["rdg_moved"] if "short_horizon" in rows else 0.0
    # "2 ×" and "3 ×" mean something only above zero: a negative RDG at least twice a more negative one is no gain.
    out = {"hindsight_rdg_moved_at_least_0.3": hindsight_rdg >= 0.3,
           "hindsight_at_least_2x_short_horizon": hindsight_rdg > 0 and hindsight_rdg >= 2 * max(short, 0.0)}
    if "text_following" in result:
        out.update(result["text_following"]["goal"])
    return out


def format_table(result: dict) -> str:
    lines = [f"device: {result['device']}; held-out goals: seeds {result['seeds'][0]}–{result['seeds'][1] - 1}",
             "| planner | RDG, moved blocks [95 % CI] | RDG, all blocks [95 % CI] | goals |",
             "| --- | --- | --- | --- |"]
    for name, row in result["rows"].items():
        lo, hi = row["rdg_moved_interval"]
        lo_all, hi_all = row["rdg_all_interval"]
        lines.append(f"| {name} | {row['rdg_moved']:.2f} [{lo:.2f}, {hi:.2f}] | {row['rdg_all']:.2f} "
                     f"[{lo_all:.2f}, {hi_all:.2f}] | {row['goals']} |")
    if "text_following" in result:
        t = result["text_following"]
        lines.append("text-only following (generated frames): " + "; ".join(
            f"{name} {t[name]['success']:.2f} [{t[name]['interval'][0]:.2f}, {t[name]['interval'][1]:.2f}] of "
            f"{t[name]['rollouts']}, other blocks drift {100 * (t[name]['other_block_drift_m'] or 0):.1f} cm, "
            f"{t[name]['blocks_lost']} blocks lost from view" for name in ("named", "shuffled_text")))
        r = t["recorded_controls"]
        lines.append(f"recorded controls and text, {r['episodes']} scripted episodes: the named block pushed in "
                     f"{r['pushed_in_generated_frames']:.2f} of the generated videos, "
                     f"{r['pushed_in_pybullet_frames']:.2f} of pybullet's")
    if "hindsight" in result:
        h = result["hindsight"]
        lines.append(f"hindsight data: {h['rollouts']} simulated trajectories, {h['instructions']} instructions "
                     f"({h['labelled']} labelled, {h['followed']} as commanded), {h['simulator_steps']} simulator "
                     f"steps in {h['seconds']:.0f} s")
    lines.append("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result["stage_seconds"].items()))
    lines.append("goals: " + ", ".join(f"{k}: {'MET' if v else 'NOT MET'}" for k, v in result["goals"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
