"""Train an agent only inside the learned simulator, then judge it untouched in the physics world (issue 30; the
paper's §4.2 / Table 3 at tabletop scale).

    python bench/agent.py --workdir /tmp/fidelity --output agent.json [--policy_minutes 45] [--seeds 1000000:1000100]
    python bench/agent.py --workdir /tmp/fidelity --eval_only --seeds 2000000:2000100 --output other.json

Stages (each kept when its output is in WORKDIR already, so an interrupted run resumes):

1. **simulator**: WORKDIR/run, the model `bench/fidelity.py` trains (its sources, clips and text encoder in the same
   workdir); trained here first, by fidelity's own stages, when absent;
2. **bc**: behaviour cloning on the recorded training episodes (WORKDIR/clips/train: the frames and controls the
   simulator was trained on) → WORKDIR/policies/bc;
3. **sim_trained**: from BC, improved only inside the learned simulator (`agents.imagination.improve`: hindsight-
   relabelled imitation of imagined rollouts, starting from recorded training frames) for what is left of
   `--policy_minutes` after BC → WORKDIR/policies/sim_trained;
4. **evaluate**: every policy (bc, sim_trained, random, scripted) on the layouts of `--seeds` in pybullet, per task
   family, success with a 95 % Wilson interval; the sim-trained policy also judged inside the learned simulator
   from the same start frames and tasks, and the agreement of the two judgments;
5. **gif**: WORKDIR/agent.gif — the sim-trained policy acting in the learned simulator beside the same policy in
   pybullet from the same start, one episode per family.

Held-out layouts: `world.reset(seed)` for the seeds given; the training episodes' layouts are
`tabletop.episode_seed(0, i)` (32-bit SeedSequence draws), checked disjoint from them before anything is judged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fidelity  # the simulator's own bench: its workdir layout, stages and device line

from unisim.agents.tasks import FAMILIES

POLICIES = ("bc", "sim_trained", "random", "scripted")


def log(message: str) -> None:
    print(f"[agent] {message}", flush=True)


def simulator_run(workdir: str, episodes: int, workers: int, budget_minutes: float) -> dict:
    run = os.path.join(workdir, "run")
    data = fidelity.sources_and_clips(workdir, episodes, 48, workers)
    fidelity.train(run, data["train"], budget_minutes * 60)
    return {"run": run, **data}


def load_simulator(run: str, max_batch: int = 32, steps: int = 8, guidance: float = 0.0):
    from unisim.simulator.core import SamplerSettings, Simulator

    # η = 0 by default: the action-conditional model alone, one model call per sampler step (guidance doubles it).
    return Simulator.from_checkpoints(run, sampler=SamplerSettings(steps=steps, guidance=guidance),
                                      max_batch=max_batch)


def train_bc(clips: str, out: str, steps: int):
    from unisim.agents.policy import Policy, PolicyConfig, fit, recorded_demos

    began = time.monotonic()
    demos = recorded_demos(clips, PolicyConfig())
    log(f"bc: {len(demos)} samples from {clips}")
    policy = fit(Policy.create(PolicyConfig()), demos, steps, log=log)
    policy.save(out)
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump({"seconds": time.monotonic() - began, "samples": len(demos), "steps": steps}, f)
    return policy


def training_starts(clips: str, size, limit: int = 100_000) -> list[np.ndarray]:
    """Recorded start frames for imagined episodes: every training clip's history (its first frames)."""
    from unisim.simulator.evaluation.evaluate import held_out_clips

    return [c["history"] for c in held_out_clips(clips, size, 8, limit, min_targets=1)]


def held_out_seeds(parser, spec: str, minimum: int, training_episodes: int, what: str) -> range:
    """The layouts of `--seeds A:B`: at least `minimum`, none of them a training episode's layout."""
    from unisim.samples.tabletop import episode_seed

    a, b = (int(x) for x in spec.split(":"))
    seeds = range(a, b)
    if len(seeds) < minimum:
        parser.error(f"--seeds: judge on at least {minimum} held-out {what}")
    used = {episode_seed(fidelity.TRAIN_SEED, i) for i in range(training_episodes)}
    overlap = sorted(used & set(seeds))
    if overlap:
        raise SystemExit(f"--seeds overlaps the training layouts: {overlap[:5]}")
    return seeds


def judge_in_simulator(sim, policy, seeds: range, family: str) -> list[bool]:
    """The policy's success on the held-out layouts as the learned simulator judges it: start frame rendered by
    pybullet (evaluation only), the episode imagined, success read from the generated frames."""
    from unisim.agents import world
    from unisim.agents.imagination import imagine
    from unisim.samples import tabletop

    starts, tasks = [], []
    with tabletop.TabletopWorld() as physics:
        for seed in seeds:
            starts.append(world.observe(physics.reset(seed), sim.base_size)[None])
            tasks.append(world.task_for(seed, family, physics))
    out = []
    for i in range(0, len(starts), sim.max_batch):
        episodes = imagine(sim, policy, starts[i:i + sim.max_batch], tasks[i:i + sim.max_batch],
                           tasks[0].segments, np.random.default_rng(i), seed=i, stop_on_success=True)
        out += [e.success() for e in episodes]
    return out


def gif(workdir: str, sim, policy, seed: int) -> str:
    """One episode per family from the same start: the learned simulator | pybullet, every frame, 8× enlarged."""
    from PIL import Image

    from unisim.agents import world
    from unisim.samples import tabletop
    from unisim.simulator.core import Action

    rows = []
    with tabletop.TabletopWorld() as physics:
        for family in FAMILIES:
            first = physics.reset(seed)
            task = world.task_for(seed, family, physics)
            start = world.observe(first, sim.base_size)
            imagined, real = [start], [start]
            session = sim.new_session(start, seed=seed)
            for _ in range(task.segments):
                chunk = policy.act(imagined[-1][None], [task])[0]
                imagined += list(sim.step_sessions([session], [Action(controls=chunk)])[0])
                chunk = policy.act(real[-1][None], [task])[0]
                real += [world.observe(physics.step(a), sim.base_size) for a in chunk]
            rows.append((task.instruction, imagined, real))
    frames = []
    for t in range(max(len(r[1]) for r in rows)):
        strip = np.concatenate([np.concatenate([imagined[min(t, len(imagined) - 1)], real[min(t, len(real) - 1)]], 1)
                                for _, imagined, real in rows], 0)
        frames.append(Image.fromarray(strip).resize((strip.shape[1] * 8, strip.shape[0] * 8), Image.NEAREST))
    path = os.path.join(workdir, "agent.gif")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=120, loop=0)
    log(f"gif: rows {[r[0] for r in rows]}; left: learned simulator, right: pybullet")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="bench/fidelity.py's workdir (its run is trained if absent)")
    parser.add_argument("--output", help="the result as JSON (default WORKDIR/agent.json)")
    parser.add_argument("--policy_minutes", type=float, default=45.0, help="BC + learning in the simulator, wall")
    parser.add_argument("--bc_steps", type=int, default=3000, help="behaviour-cloning steps (batch 64)")
    parser.add_argument("--seeds", default="1000000:1000100", help="held-out layouts A:B (at least 100)")
    parser.add_argument("--eval_only", action="store_true", help="evaluate the saved policies; train nothing")
    parser.add_argument("--episodes", type=int, default=600, help="simulator training episodes (fidelity's)")
    parser.add_argument("--budget_minutes", type=float, default=30.0, help="simulator training, if it is trained here")
    parser.add_argument("--sampler_steps", type=int, default=8, help="DDIM steps of imagined segments")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    seeds = held_out_seeds(parser, args.seeds, 100, args.episodes, "layouts")
    workdir = os.path.abspath(args.workdir)
    policies_dir = os.path.join(workdir, "policies")
    began, seconds = time.monotonic(), {}

    from unisim.agents import world
    from unisim.agents.imagination import improve
    from unisim.agents.policy import Policy, recorded_demos

    stage = time.monotonic()
    if args.eval_only:
        run = os.path.join(workdir, "run")
        if not os.path.exists(os.path.join(run, "run.json")):
            parser.error(f"--eval_only: {run} holds no trained simulator")
        data = {"run": run}
    else:
        data = simulator_run(workdir, args.episodes, args.workers, args.budget_minutes)
    seconds["simulator"] = time.monotonic() - stage
    sim = load_simulator(data["run"], steps=args.sampler_steps)

    bc_dir, sim_dir = os.path.join(policies_dir, "bc"), os.path.join(policies_dir, "sim_trained")
    if not os.path.exists(os.path.join(bc_dir, "policy.json")):
        if args.eval_only:
            parser.error(f"--eval_only: no policy at {bc_dir}")
        train_bc(data["train"], bc_dir, args.bc_steps)
    if not os.path.exists(os.path.join(sim_dir, "policy.json")):
        if args.eval_only:
            parser.error(f"--eval_only: no policy at {sim_dir}")
        stage = time.monotonic()
        recorded = recorded_demos(data["train"])
        starts = training_starts(data["train"], sim.base_size)
        with open(os.path.join(bc_dir, "summary.json"), encoding="utf-8") as f:
            budget = args.policy_minutes * 60 - json.load(f)["seconds"]
        log(f"sim_trained: {budget / 60:.1f} min of learning in the simulator from {len(starts)} recorded starts")
        improved, summary = improve(sim, Policy.load(bc_dir), recorded, starts, budget_s=budget, log=log)
        improved.save(sim_dir)
        summary["seconds"] = time.monotonic() - stage
        with open(os.path.join(sim_dir, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    # Each learning stage's wall time is kept beside its policy, so a resumed run still reports it.
    for name, directory in (("bc", bc_dir), ("sim_trained", sim_dir)):
        with open(os.path.join(directory, "summary.json"), encoding="utf-8") as f:
            summary_file = json.load(f)
        seconds[name] = summary_file["seconds"]
        if name == "sim_trained":
            summary = summary_file
    policies = {"bc": Policy.load(bc_dir), "sim_trained": Policy.load(sim_dir), "random": "random",
                "scripted": "scripted"}

    stage = time.monotonic()
    rows = {name: {} for name in POLICIES}
    for name in POLICIES:
        for family in FAMILIES:
            rows[name][family] = world.evaluate(policies[name], seeds, family)
            log(f"{name} / {family}: {rows[name][family]['success']:.2f} {rows[name][family]['interval']}")
    seconds["evaluate_pybullet"] = time.monotonic() - stage
    stage = time.monotonic()
    in_sim = {}
    for family in FAMILIES:
        judged = judge_in_simulator(sim, policies["sim_trained"], seeds, family)
        real = [e["success"] for e in rows["sim_trained"][family]["outcomes"]]
        in_sim[family] = {"success_in_simulator": float(np.mean(judged)),
                          "success_in_pybullet": rows["sim_trained"][family]["success"],
                          "agreement": float(np.mean([x == y for x, y in zip(judged, real)])), "episodes": len(judged)}
    seconds["evaluate_in_simulator"] = time.monotonic() - stage
    media = gif(workdir, sim, policies["sim_trained"], seeds.start)
    for name in POLICIES:  # per-episode outcomes stay in the JSON's `outcomes`, not in the table
        for family in FAMILIES:
            rows[name][family]["interval"] = list(rows[name][family]["interval"])
    result = {"device": fidelity.device(), "seconds": time.monotonic() - began, "stage_seconds": seconds,
              "policy_learning_seconds": seconds["bc"] + seconds["sim_trained"],
              "seeds": [seeds.start, seeds.stop], "simulator": data["run"], "sampler_steps": args.sampler_steps,
              "rows": rows, "sim_trained_in_simulator": in_sim, "learning": summary, "gif": media,
              "goals": goals(rows)}
    output = args.output or os.path.join(workdir, "agent.json")
    with open(output, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(format_table(result))
    log(f"wrote {output} and {media} in {(time.monotonic() - began) / 60:.1f} min")
    return 0


def goals(rows: dict) -> dict:
    point_sim, point_bc = rows["sim_trained"]["point"]["success"], rows["bc"]["point"]["success"]
    push_sim, push_bc = rows["sim_trained"]["push"]["success"], rows["bc"]["push"]["success"]
    return {"point_sim_trained_at_least_0.7": point_sim >= 0.7,
            "point_sim_trained_at_least_bc_plus_0.3": point_sim >= point_bc + 0.3,
            "push_sim_trained_at_least_bc": push_sim >= push_bc}


def format_table(result: dict) -> str:
    lines = [f"device: {result['device']}; held-out layouts: seeds {result['seeds'][0]}–{result['seeds'][1] - 1}",
             "| policy | point: success [95 % CI] | push: success [95 % CI] |", "| --- | --- | --- |"]
    for name, row in result["rows"].items():
        cells = [f"{row[f]['success']:.2f} [{row[f]['interval'][0]:.2f}, {row[f]['interval'][1]:.2f}] "
                 f"(n={row[f]['episodes']})" for f in FAMILIES]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    lines.append("sim-trained judged inside the learned simulator vs in pybullet: " + "; ".join(
        f"{f}: {v['success_in_simulator']:.2f} vs {v['success_in_pybullet']:.2f} (agreement {v['agreement']:.2f})"
        for f, v in result["sim_trained_in_simulator"].items()))
    lines.append("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result["stage_seconds"].items()))
    lines.append("goals: " + ", ".join(f"{k}: {'MET' if v else 'NOT MET'}" for k, v in result["goals"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
