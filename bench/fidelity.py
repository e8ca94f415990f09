"""Does the simulator follow actions? One command from nothing to a table, on the real parts only (issue 17).

    python bench/fidelity.py --workdir /tmp/fidelity [--budget_minutes 30] [--history_ablation] [--output f.json]
    python bench/fidelity.py --workdir /tmp/fidelity --eval_only --heldout OTHER_CLIPS [--output f.json]

1. sources: tabletop training episodes (seed 0) and held-out episodes from a seed neither training nor the choice of
   the CPU config has seen (seed 2; seed 1 was the validation seed), in the Language Table RLDS format
   (`unisim sample tabletop`);
2. the tiny random T5 stand-in at WORKDIR/text_encoder (`unisim sample tiny_t5`: no pretrained weights here);
3. `unisim convert` of both, at the base size (24×40, PNG) and without controls as text (`--controls_as_text off`:
   with it the text would carry each clip's own controls, and the shuffled-controls row would read them there);
4. `unisim train --config trainer/configs/tabletop_cpu.py` for `--budget_minutes` of wall time (the trainer's
   `config.max_train_seconds`) into WORKDIR/run, and with `--history_ablation` the same with one history frame
   into WORKDIR/run-history1;
5. `unisim eval` on at least 32 held-out clips: the model, the null condition, copy-last-frame, the model given
   another clip's controls (Genie's ΔtPSNR test) and the ablation; the table is printed and written to --output
   (default WORKDIR/fidelity.json) with the device, training time and steps;
6. WORKDIR/fidelity.gif and fidelity.png: held-out clips, true frames beside the model's and the shuffled-controls
   model's, 4× enlarged.

Every stage is the real command, run as a user would run it; a stage whose output is already in WORKDIR (a
finished conversion, a run with a run.json and checkpoint) is kept, so an interrupted bench resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "trainer", "configs", "tabletop_cpu.py")
# Seed 1 is the validation seed the CPU config was chosen on (bench/RESULTS.md); the bench holds out seed 2, which
# neither training nor that choice has seen.
TRAIN_SEED, HELDOUT_SEED = 0, 2
# Long held-out episodes for multi-segment rollouts: 3 pushes chained in each (about 40–60 steps), from a seed that
# nothing else uses, converted so that each episode's first clip holds 4 history + 4 × 8 target frames (a first clip
# has no context frames: 40 frames per clip less the 4 of context that only later clips carry).
LONG_HELDOUT_SEED, LONG_SEGMENTS = 3, 4
LONG_SAMPLE_OPTIONS = ["--max_steps", "60", "--tasks_per_episode", "3"]
CONVERT_OPTIONS = ["--height", "24", "--width", "40", "--image_format", "png", "--controls_as_text", "off"]


def unisim(*args: str) -> str:
    """One `unisim` command in its own process, as a user would run it; returns the last line it printed (where
    `unisim sample` says what it wrote). A failure stops the bench."""
    print(f"[fidelity] unisim {' '.join(args)}", flush=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-m", "unisim.cli", *args], check=True, cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, text=True).stdout
    print(out, end="", flush=True)
    return out.strip().splitlines()[-1] if out.strip() else ""


def sources_and_clips(workdir: str, episodes: int, heldout_episodes: int, workers: int) -> dict[str, str]:
    encoder = os.path.join(workdir, "text_encoder")
    if not os.path.exists(os.path.join(encoder, "config.json")):
        unisim("sample", "tiny_t5", "--output", encoder)
    out = {"text_encoder": encoder}
    long_clips = ["--frames_per_clip", str(2 * 4 + LONG_SEGMENTS * 8)]
    for name, seed, count, sample, convert in (
            ("train", TRAIN_SEED, episodes, [], []), ("heldout", HELDOUT_SEED, heldout_episodes, [], []),
            ("heldout_long", LONG_HELDOUT_SEED, heldout_episodes, LONG_SAMPLE_OPTIONS, long_clips)):
        clips = os.path.join(workdir, "clips", name)
        if not os.path.exists(os.path.join(clips, "manifest.json")):
            source = os.path.join(workdir, "sources", name)
            builder = unisim("sample", "tabletop", "--output", source, "--episodes", str(count), "--seed", str(seed),
                             "--workers", str(workers), *sample)
            unisim("convert", "--dataset", "language_table", "--source", builder,
                   "--output", clips, "--text_encoder", encoder, "--direct_num_workers", str(workers),
                   *CONVERT_OPTIONS, *convert)
        out[name] = clips
    return out


def train(run: str, clips: str, budget_s: float, *overrides: str) -> None:
    if os.path.exists(os.path.join(run, "run.json")) and os.path.isdir(os.path.join(run, "checkpoints")):
        print(f"[fidelity] {run} is trained already: kept (delete it to train again)", flush=True)
        return
    unisim("train", "--config", CONFIG, "--workdir", run, "--mixture", f"{clips}:1",
           f"--config.max_train_seconds={budget_s}", *overrides)


def training_summary(run: str) -> dict:
    """Steps, wall time and examples/s of a run, from its metrics.jsonl (the last row of each step counts)."""
    rows = {}
    with open(os.path.join(run, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            rows[row["step"]] = row
    last = rows[max(rows)]
    return {"steps": last["step"], "train_seconds": last.get("elapsed_seconds"), "final_loss": last["loss"]}


def device() -> str:
    import jax

    d = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    try:  # the model name, which platform.processor() leaves empty on Linux
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{d.platform} ({d.device_kind}; {os.cpu_count()} cores of {cpu}), {jax.device_count()} device(s)"


def contact_sheet(workdir: str, run: str, heldout: str, clips: int = 6) -> list[str]:
    """fidelity.png (a still) and fidelity.gif: for a few held-out clips, rows of true | model | shuffled frames."""
    import numpy as np
    from PIL import Image

    from unisim.simulator.evaluation import evaluate
    from unisim.simulator.core import SamplerSettings, Simulator

    sim = Simulator.from_checkpoints(run, sampler=SamplerSettings(steps=8), max_batch=clips)
    held = evaluate.held_out_clips(heldout, sim.base_size, sim.frames, clips)
    model = evaluate.generate(sim, held, seed=0)
    other = evaluate.generate(sim, held, seed=0, controls_from=evaluate.shuffled(held))
    rows = []
    for clip, a, b in zip(held, model, other):
        n = len(clip["targets"])
        pad = lambda v: np.concatenate([v[:n], np.repeat(v[n - 1:n], sim.frames - n, 0)])  # noqa: E731
        # Each row: the last history frame, then true | model | shuffled-controls target frames, side by side.
        rows.append([np.concatenate([clip["history"][-1], pad(clip["targets"])[t], a[t], b[t]], axis=1)
                     for t in range(sim.frames)])
    frames = [np.concatenate([r[t] for r in rows], axis=0) for t in range(sim.frames)]
    big = [Image.fromarray(f).resize((f.shape[1] * 4, f.shape[0] * 4), Image.NEAREST) for f in frames]
    big = [_labelled(frame, ("last history frame", f"true, frame {t + 1}", f"model, frame {t + 1}",
                             "shuffled controls")) for t, frame in enumerate(big)]
    gif, png = os.path.join(workdir, "fidelity.gif"), os.path.join(workdir, "fidelity.png")
    big[0].save(gif, save_all=True, append_images=big[1:], duration=200, loop=0)
    big[-1].save(png)
    return [gif, png]


def _labelled(frame, labels):
    """`frame` under a white strip naming its equal-width columns."""
    from PIL import Image, ImageDraw

    out = Image.new("RGB", (frame.width, frame.height + 14), (255, 255, 255))
    out.paste(frame, (0, 14))
    draw = ImageDraw.Draw(out)
    for i, label in enumerate(labels):
        draw.text((i * frame.width // len(labels) + 4, 1), label, fill=(0, 0, 0))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="sources, clips, the encoder and the run (WORKDIR/run)")
    parser.add_argument("--budget_minutes", type=float, default=30.0, help="training wall time (default 30)")
    parser.add_argument("--output", help="the result as JSON (default WORKDIR/fidelity.json)")
    parser.add_argument("--history_ablation", action="store_true", help="also train a 1-history-frame model")
    parser.add_argument("--eval_only", action="store_true", help="evaluate WORKDIR/run without training")
    parser.add_argument("--heldout", help="with --eval_only: converted held-out clips (made with WORKDIR/text_encoder)")
    parser.add_argument("--episodes", type=int, default=600, help="training episodes (default 600)")
    parser.add_argument("--heldout_episodes", type=int, default=48, help="held-out episodes (default 48)")
    parser.add_argument("--clips", type=int, default=32, help="held-out clips evaluated (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="processes / threads for sources and conversion")
    args = parser.parse_args(argv)
    if args.clips < 32:
        parser.error("--clips: the evaluation uses at least 32 held-out clips")
    if args.heldout and not args.eval_only:
        parser.error("--heldout goes with --eval_only (without it the held-out clips are made here)")
    workdir = os.path.abspath(args.workdir)
    run, ablation = os.path.join(workdir, "run"), os.path.join(workdir, "run-history1")
    began = time.monotonic()
    if args.eval_only:
        if not os.path.exists(os.path.join(run, "run.json")):
            parser.error(f"--eval_only: {run} holds no trained run")
        heldout = os.path.abspath(args.heldout) if args.heldout else os.path.join(workdir, "clips", "heldout")
    else:
        data = sources_and_clips(workdir, args.episodes, args.heldout_episodes, args.workers)
        heldout = data["heldout"]
        train(run, data["train"], args.budget_minutes * 60)
        if args.history_ablation:
            train(ablation, data["train"], args.budget_minutes * 60, "--config.input.history_frames=1")
    with_ablation = os.path.exists(os.path.join(ablation, "run.json"))
    table = os.path.join(workdir, "eval.json")
    long_heldout = os.path.join(workdir, "clips", "heldout_long")
    rollouts = (["--segments", str(LONG_SEGMENTS), "--rollout_data", long_heldout]
                if os.path.exists(os.path.join(long_heldout, "manifest.json")) else [])
    unisim("eval", "--checkpoint", run, "--data", heldout, "--clips", str(args.clips), "--steps", "8",
           "--output", table, *(["--history_ablation", ablation] if with_ablation else []), *rollouts)
    with open(table, encoding="utf-8") as f:
        evaluation = json.load(f)
    result = {"device": device(), **training_summary(run), "budget_minutes": args.budget_minutes,
              "clips": evaluation["clips"], "heldout": heldout, "heldout_seed": HELDOUT_SEED,
              "train_seed": TRAIN_SEED, "config": os.path.relpath(CONFIG, ROOT), "sampler": evaluation["sampler"],
              "rows": {row["key"]: row for row in evaluation["rows"]}}
    if "rollout" in evaluation:
        result["rollout"] = evaluation["rollout"]
    if with_ablation:
        result["history_1_training"] = training_summary(ablation)
    result["goals"] = goals(result["rows"])
    result["media"] = contact_sheet(workdir, run, heldout)
    output = args.output or os.path.join(workdir, "fidelity.json")
    with open(output, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(format_result(result))
    print(f"[fidelity] wrote {output} and {', '.join(result['media'])} in {(time.monotonic() - began) / 60:.1f} min")
    return 0


def goals(rows: dict) -> dict:
    """Issue 17's goals, each with the figures it compares and whether it holds."""
    model, copy, null = (rows[k]["action_error_px"] for k in ("model", "copy_last_frame", "null_condition"))
    out = {"action_error_vs_copy": {"ratio": model / copy, "goal": "<= 0.5", "met": model <= 0.5 * copy},
           "action_error_vs_null": {"ratio": model / null, "goal": "<= 0.5", "met": model <= 0.5 * null}}
    if "shuffled_controls" in rows:
        gap = rows["model"]["psnr"] - rows["shuffled_controls"]["psnr"]
        out["psnr_gap_vs_shuffled_db"] = {"gap": gap, "goal": ">= 1.0", "met": gap >= 1.0}
    out["psnr_vs_copy_db"] = {"gap": rows["model"]["psnr"] - rows["copy_last_frame"]["psnr"], "goal": "> 0 (stretch)",
                              "met": rows["model"]["psnr"] > rows["copy_last_frame"]["psnr"]}
    return out


def format_result(result: dict) -> str:
    lines = [f"device: {result['device']}", f"training: {result['steps']} steps in {result['train_seconds']:.0f} s "
             f"(budget {result['budget_minutes']:g} min), final loss {result['final_loss']:.4f}",
             f"held-out clips: {result['clips']} (seed {result['heldout_seed']}; training seed {result['train_seed']})",
             "| row | action error (px) | effector found | PSNR (dB) | SSIM |", "| --- | --- | --- | --- | --- |"]
    for key, r in result["rows"].items():
        error = "—" if r["action_error_px"] is None else f"{r['action_error_px']:.2f} ± {r['action_error_sem']:.2f}"
        found = "—" if r["effector_found"] is None else f"{100 * r['effector_found']:.0f} %"
        lines.append(f"| {key} | {error} | {found} | {r['psnr']:.2f} | {r['ssim']:.3f} |")
    for name, goal in result["goals"].items():
        figure = goal.get("ratio", goal.get("gap"))
        lines.append(f"goal {name}: {figure:.3f} (want {goal['goal']}): {'MET' if goal['met'] else 'NOT MET'}")
    if "rollout" in result:
        from unisim.simulator.evaluation.evaluate import format_rollout

        lines += ["", format_rollout(result["rollout"])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
