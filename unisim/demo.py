"""`make demo` / `unisim demo`: the whole chain on built-in samples, on a CPU, in minutes.

    sample data in three official formats ─▶ convert each ─▶ a weighted mixture ─▶ train the CPU base model
    (4 history frames, and the 1-frame ablation, each for the same wall-clock budget) ─▶ roll out from a held-out
    tabletop frame (a text action, a control action) ─▶ unisim eval on held-out tabletop clips ─▶ report.html

Formats: the tabletop world in the Language Table RLDS format (train and held-out episodes from different seeds),
an activity-video sample in the Something-Something V2 layout, an image-text sample in img2dataset's webdataset
layout. Everything goes under `workdir` (default `demo-output/`, or $DEMO_OUT); `report.html` is the page to open.
The text encoder is a tiny RANDOMLY INITIALISED T5 (no pretrained weights can be downloaded here) unless
`--text_encoder PATH` names a real one.

The model is `bench/fidelity.py`'s (trainer/configs/tabletop_cpu.py), trained for `budget_minutes` (default 4)
each instead of that bench's 30 minutes on the tabletop alone: the report states the budget beside its table, and
`bench/RESULTS.md` has the full run's figures. The tabletop is converted without controls as text, as in the
bench: with it the text would carry each clip's own controls, and the shuffled-controls row would read them there.
"""

from __future__ import annotations

import html
import json
import os
import time

import numpy as np

MIXTURE_WEIGHTS = {"tabletop": 0.6, "activity-video": 0.2, "image-text": 0.2}


class _Clock:
    def __init__(self):
        self.start, self.stages = time.monotonic(), []

    def done(self, stage: str, began: float) -> None:
        self.stages.append((stage, time.monotonic() - began))
        print(f"[demo] {stage}: {time.monotonic() - began:.1f} s", flush=True)


def _convert(cli_main, dataset: str, source: str, output: str, encoder: str, extra: list[str] = ()) -> dict:
    status = cli_main(["convert", "--dataset", dataset, "--source", source, "--output", output, "--text_encoder",
                       encoder, "--records_per_shard", "32", *extra])
    if status:
        raise RuntimeError(f"converting {dataset} failed (exit {status})")
    with open(os.path.join(output, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    return {"dataset": dataset, "records": manifest["records"], "rejected": manifest["rejected"],
            "reasons": manifest["rejected_reasons"], "output": output}


def run(workdir: str, *, episodes: int = 200, held_out_episodes: int = 24, budget_minutes: float = 4.0,
        steps: int | None = None, clip_threads: int = 1, text_encoder: str | None = None, eval_clips: int = 32) -> int:
    """`steps` caps each model's training steps (smoke runs); `budget_minutes` is each model's wall-clock budget."""
    from unisim.cli import _demo_corpus
    from unisim.cli import main as cli_main
    from unisim.samples import activity_video, image_text, tabletop

    workdir = os.path.abspath(workdir)
    clock = _Clock()
    sources, clips, runs = (os.path.join(workdir, name) for name in ("sources", "clips", "runs"))

    # ---- sample data in three official formats
    began = time.monotonic()
    formats = {
        "tabletop": ("language_table", tabletop.write_sample(os.path.join(sources, "tabletop"), num_episodes=episodes,
                                                             seed=0, num_shards=min(4, episodes), workers=2)),
        "tabletop-heldout": ("language_table", tabletop.write_sample(os.path.join(sources, "tabletop-heldout"),
                                                                     num_episodes=held_out_episodes, seed=1,
                                                                     workers=2)),
        "activity-video": ("ssv2", activity_video.write_sample(os.path.join(sources, "activity-video"))),
        "image-text": ("laion", image_text.write_sample(os.path.join(sources, "image-text"))),
    }
    clock.done("sample data (Language Table RLDS, Something-Something V2, img2dataset)", began)
    if text_encoder is None:
        from unisim.samples import tiny_t5

        text_encoder = tiny_t5.write_tiny_t5(os.path.join(workdir, "tiny-t5"), corpus=_demo_corpus())
        print(f"[demo] text encoder: a tiny RANDOMLY INITIALISED T5 stand-in at {text_encoder} (no pretrained "
              "weights can be downloaded here; pass --text_encoder PATH for a real checkpoint)")

    # ---- convert each
    began = time.monotonic()
    converted = {name: _convert(cli_main, dataset, source, os.path.join(clips, name), text_encoder,
                                ["--direct_num_workers", str(clip_threads),
                                 *(["--controls_as_text", "off"] if name.startswith("tabletop") else [])])
                 for name, (dataset, source) in formats.items()}
    clock.done("convert (Beam, 4 datasets)", began)

    # ---- a weighted mixture, then the tiny base model and the 1-history-frame ablation, same budget
    mixture = os.path.join(workdir, "mixture.py")
    with open(mixture, "w", encoding="utf-8") as f:
        f.write("# The demo's training mixture: (converted directory, weight, name)\nMIXTURE = [\n" + "".join(
            f"    ({converted[name]['output']!r}, {weight}, {name!r}),\n" for name, weight in MIXTURE_WEIGHTS.items())
            + "]\n")
    from unisim.trainer import train

    trained = {}
    for name, history in (("base", 4), ("base-1frame", 1)):
        began = time.monotonic()
        train.main(["--config", train_config_path(), "--workdir", os.path.join(runs, name), "--mixture", mixture,
                    *(["--steps", str(steps)] if steps else []), f"--config.max_train_seconds={budget_minutes * 60}",
                    f"--config.input.history_frames={history}", "--config.sample_every=0", "--config.log_every=50"])
        trained[name] = os.path.join(runs, name)
        clock.done(f"train the base model, {history} history frame(s), {budget_minutes:g} min budget"
                   f"{f' or {steps} steps' if steps else ''}", began)

    # ---- roll out from a held-out tabletop frame: a text action and a control action
    began = time.monotonic()
    rollouts = _rollouts(trained["base"], converted["tabletop-heldout"]["output"], workdir)
    clock.done("roll out (text action, control action)", began)

    # ---- evaluate on held-out clips
    began = time.monotonic()
    from unisim.simulator import evaluate

    result = evaluate.evaluate(trained["base"], converted["tabletop-heldout"]["output"],
                               history_ablation=trained["base-1frame"], clips=eval_clips)
    with open(os.path.join(workdir, "eval.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    table = evaluate.format_table(result)
    print(table)
    clock.done("unisim eval (held-out tabletop clips)", began)

    report = _report(workdir, clock, converted, trained["base"], rollouts, result, budget_minutes)
    total = time.monotonic() - clock.start
    print(f"[demo] done in {total / 60:.1f} min. Open {report}\n[demo] shards: {clips}\n[demo] models: {runs}\n"
          f"[demo] rollouts: {', '.join(r['path'] for r in rollouts)}\n[demo] evaluation: "
          f"{os.path.join(workdir, 'eval.json')}")
    return 0


def train_config_path() -> str:
    from unisim.trainer.configs import tabletop_cpu

    return tabletop_cpu.__file__


def _rollouts(base: str, held_out: str, workdir: str) -> list[dict]:
    from unisim.simulator.core import Action, SamplerSettings, Simulator
    from unisim.simulator.evaluate import held_out_clips
    from unisim.simulator.rollout import write_video

    simulator = Simulator.from_checkpoints(base, sampler=SamplerSettings(steps=8), max_batch=1)
    clip = held_out_clips(held_out, simulator.base_size, simulator.frames, 1)[0]
    segments = max(1, 16 // simulator.frames)  # 16 frames, whatever the model's segment length
    out = []
    for name, actions in (("text", [Action(text=clip["text"])] * segments),
                          ("controls", [Action(controls=[0.03, 0.0])] * segments)):  # the effector moves +x (down)
        video = simulator.rollout(actions, observation=clip["history"], seed=0)
        path = write_video(os.path.join(workdir, f"rollout-{name}.gif"), video, fps=10)
        label = clip["text"] if name == "text" else "controls Δx = +0.03, Δy = 0 for every frame (image down)"
        out.append({"name": name, "path": path, "action": label, "frames": len(video), "segments": segments,
                    "segment_frames": simulator.frames})
    return out


def _svg_curve(rows: list[dict], width: int = 480, height: int = 160) -> str:
    losses = np.array([r["loss"] for r in rows], np.float64)
    if len(losses) < 2:
        return ""
    xs = np.linspace(10, width - 10, len(losses))
    ys = height - 10 - (losses - losses.min()) / max(np.ptp(losses), 1e-9) * (height - 20)
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    return (f'<svg width="{width}" height="{height}" style="border:1px solid #ccc"><polyline fill="none" '
            f'stroke="#c0c" stroke-width="2" points="{points}"/></svg><br><small>loss from {losses[0]:.3f} '
            f'(step {rows[0]["step"]}) to {losses[-1]:.3f} (step {rows[-1]["step"]})</small>')


def _report(workdir: str, clock: _Clock, converted: dict, base: str, rollouts: list[dict], result: dict,
            budget_minutes: float) -> str:
    esc = html.escape
    with open(os.path.join(base, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    mixture = rows[-1]["mixture"] if rows else {}
    parts = ["<!doctype html><meta charset='utf-8'><title>UniSim demo</title>",
             "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto}td,th{padding:4px 10px;"
             "border-bottom:1px solid #ddd;text-align:left}img{image-rendering:pixelated;margin-right:12px}</style>",
             "<h1>UniSim demo</h1><p>Built-in samples in three official formats → Beam conversion → a weighted "
             "mixture → the CPU base model (trainer/configs/tabletop_cpu.py) trained on this machine → rollouts and "
             f"the held-out evaluation. Each model trained for <b>{budget_minutes:g} minutes</b> of wall time "
             f"({rows[-1]['step'] if rows else 0} steps for the 4-history-frame model); the 30-minute run of "
             "bench/fidelity.py on the tabletop alone is in bench/RESULTS.md. The text encoder is a tiny <b>randomly "
             "initialised</b> T5 unless a real one was given.</p>",
             "<h2>Data</h2><table><tr><th>dataset</th><th>records</th><th>rejected</th><th>mixture weight</th>"
             "<th>realized share</th></tr>"]
    for name, c in converted.items():
        share = mixture.get(name)  # None: not in the mixture (the held-out clips)
        weights = (f"<td>{share['target']:.2f}</td><td>{share['realized']:.2f}</td>" if share
                   else "<td>held out</td><td>—</td>")
        parts.append(f"<tr><td>{esc(name)} ({esc(c['dataset'])})</td><td>{c['records']}</td><td>{c['rejected']} "
                     f"{esc(json.dumps(c['reasons']))}</td>{weights}</tr>")
    parts.append("</table><h2>Training</h2>" + _svg_curve(rows))
    parts.append("<h2>Rollouts from a held-out frame</h2>")
    for r in rollouts:
        parts.append(f"<figure><img src='{esc(os.path.basename(r['path']))}'><figcaption>{esc(r['name'])} action: "
                     f"{esc(r['action'])} ({r['frames']} frames: the start frame, then {r['segments']} "
                     f"{r['segment_frames']}-frame steps)</figcaption></figure>")
    from unisim.simulator.evaluate import format_table

    parts.append(f"<h2>Evaluation (unisim eval, after {budget_minutes:g} minutes of training each)</h2><pre>"
                 + esc(format_table(result)) + "</pre><p>Action error: distance between the generated and the true "
                 "end-effector displacement (magenta, found by colour) over one step, in base-frame pixels; lower is "
                 "better. Shuffled controls: the same model, history and text with another held-out clip's controls "
                 "— a model that follows its controls gets worse there. FVD* uses a fixed random network: compare "
                 "rows, not papers.</p>")
    parts.append("<h2>Time</h2><table>" + "".join(f"<tr><td>{esc(s)}</td><td>{t:.1f} s</td></tr>"
                                                  for s, t in clock.stages)
                 + f"<tr><th>total</th><th>{time.monotonic() - clock.start:.1f} s</th></tr></table>")
    path = os.path.join(workdir, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return path
