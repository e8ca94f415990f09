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


def _convert(dataset: str, source: str, output: str, encoder: str, clip_threads: int,
             controls_as_text: bool | None = None) -> dict:
    from unisim.pipelines import convert
    from unisim.pipelines.embed import EncoderSettings

    text = convert.TextOptions(controls_as_text=controls_as_text, encoder=EncoderSettings(encoder))
    manifest, _ = convert.run(convert.ConvertConfig(dataset=dataset, source=source, output=output,
                                                    records_per_shard=32, text=text),
                              clip_threads=clip_threads, command=f"unisim demo: convert {dataset}")
    return {"dataset": dataset, "records": manifest.records, "rejected": manifest.rejected,
            "reasons": manifest.rejected_reasons, "output": output}


def run(workdir: str, *, episodes: int = 200, held_out_episodes: int = 24, budget_minutes: float = 4.0,
        steps: int | None = None, clip_threads: int = 1, text_encoder: str | None = None, eval_clips: int = 32) -> int:
    """`steps` caps each model's training steps (smoke runs); `budget_minutes` is each model's wall-clock budget."""
    from unisim.samples import activity_video, image_text, tabletop

    workdir = os.path.abspath(workdir)
    clock = _Clock()
    print(f"[demo] expect about {10 if steps is None else 3} minutes on an idle 2-core machine, more on a busy one "
          f"(measured: 8.6–10.3 min idle, 40 min beside other jobs); each model trains for {budget_minutes:g} "
          f"minutes of wall time{f' or {steps} steps' if steps else ''}. Output: {workdir}", flush=True)
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

        text_encoder = tiny_t5.write_tiny_t5(os.path.join(workdir, "tiny-t5"), corpus=tabletop.instruction_corpus())
        print(f"[demo] text encoder: a tiny RANDOMLY INITIALISED T5 stand-in at {text_encoder} (no pretrained "
              "weights can be downloaded here; pass --text_encoder PATH for a real checkpoint)")

    # ---- convert each
    began = time.monotonic()
    converted = {name: _convert(dataset, source, os.path.join(clips, name), text_encoder, clip_threads,
                                False if name.startswith("tabletop") else None)
                 for name, (dataset, source) in formats.items()}
    clock.done("convert (Beam, 4 datasets)", began)

    # ---- a weighted mixture, then the tiny base model and the 1-history-frame ablation, same budget
    mixture = os.path.join(workdir, "mixture.py")
    with open(mixture, "w", encoding="utf-8") as f:
        f.write("# The demo's training mixture: (converted directory, weight, name)\nMIXTURE = [\n" + "".join(
            f"    ({converted[name]['output']!r}, {weight}, {name!r}),\n" for name, weight in MIXTURE_WEIGHTS.items())
            + "]\n")
    from unisim.trainer import configs, train

    trained = {}
    for name, history in (("base", 4), ("base-1frame", 1)):
        began = time.monotonic()
        config = configs.load(train_config_path(), [f"config.max_train_seconds={budget_minutes * 60}",
                                                    f"config.input.history_frames={history}",
                                                    "config.sample_every=0", "config.log_every=50"])
        train.train(config, os.path.join(runs, name), mixture, steps)
        trained[name] = os.path.join(runs, name)
        clock.done(f"train the base model, {history} history frame(s), {budget_minutes:g} min budget"
                   f"{f' or {steps} steps' if steps else ''}", began)

    # ---- roll out from a held-out tabletop frame: a text action and a control action
    began = time.monotonic()
    rollouts = _rollouts(trained["base"], converted["tabletop-heldout"]["output"], workdir)
    clock.done("roll out (text action, control action)", began)

    # ---- evaluate on held-out clips
    began = time.monotonic()
    from unisim.simulator.evaluation import evaluate

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


def _start_image(held_out: str, path: str) -> str:
    """The last history frame of the first held-out record, at its stored size: the README's `--image` example."""
    import cv2

    from unisim.shards import reader

    record = next(reader.iter_records(held_out))
    frame = cv2.imdecode(np.frombuffer(record.frames[max(0, record.context_frames - 1)], np.uint8), cv2.IMREAD_COLOR)
    cv2.imwrite(path, frame)
    return path


def _rollouts(base: str, held_out: str, workdir: str) -> list[dict]:
    from unisim.simulator.core import Action, SamplerSettings, Simulator
    from unisim.simulator.evaluation.evaluate import held_out_clips
    from unisim.simulator.rollout import write_video

    _start_image(held_out, os.path.join(workdir, "start.png"))

    simulator = Simulator.from_checkpoints(base, sampler=SamplerSettings(steps=8), max_batch=1)
    clip = held_out_clips(held_out, simulator.base_size, simulator.frames, 1)[0]
    segments = max(1, 16 // simulator.frames)  # 16 frames, whatever the model's segment length
    out = []
    for name, actions in (("text", [Action(text=clip["text"])] * segments),
                          ("controls", [Action(controls=[0.03, 0.0])] * segments)):  # the effector moves +x (down)
        video = simulator.rollout(actions, observation=clip["history"], seed=0)
        path = write_video(os.path.join(workdir, f"rollout-{name}.gif"), video, fps=10, gif_scale=8)
        label = clip["text"] if name == "text" else "controls Δx = +0.03, Δy = 0 for every frame (image down)"
        out.append({"name": name, "path": path, "action": label, "frames": len(video), "segments": segments,
                    "segment_frames": simulator.frames})
    return out


def _svg_curve(rows: list[dict], width: int = 520, height: int = 200) -> str:
    """The loss curve as an SVG with labelled axes (step, loss)."""
    losses = np.array([r["loss"] for r in rows], np.float64)
    steps = np.array([r["step"] for r in rows], np.float64)
    if len(losses) < 2:
        return ""
    left, right, top, bottom = 60, 10, 10, 30
    low, high = float(losses.min()), float(losses.max())
    xs = left + (steps - steps[0]) / max(steps[-1] - steps[0], 1) * (width - left - right)
    ys = top + (high - losses) / max(high - low, 1e-12) * (height - top - bottom)
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    axis = 'stroke="#444" stroke-width="1"'
    labels = [(left - 6, top + 4, "end", f"{high:.4f}"), (left - 6, height - bottom, "end", f"{low:.4f}"),
              (left, height - 8, "start", f"step {int(steps[0])}"), (width - right, height - 8, "end",
                                                                       f"step {int(steps[-1])}"),
              (14, (height - bottom + top) / 2, "middle", "loss")]
    text = "".join(f'<text x="{x}" y="{y}" text-anchor="{anchor}" font-size="11">{label}</text>'
                   for x, y, anchor, label in labels)
    return (f'<svg width="{width}" height="{height}"><line x1="{left}" y1="{top}" x2="{left}" '
            f'y2="{height - bottom}" {axis}/><line x1="{left}" y1="{height - bottom}" x2="{width - right}" '
            f'y2="{height - bottom}" {axis}/><polyline fill="none" stroke="#c0c" stroke-width="2" points="{points}"/>'
            f'{text}</svg>')


def _eval_table(result: dict) -> str:
    """`unisim eval`'s rows as an HTML table."""
    esc = html.escape
    cells = []
    for r in result["rows"]:
        error = "—" if r["action_error_px"] is None else f"{r['action_error_px']:.2f}" + (
            "" if r["action_error_sem"] is None else f" ± {r['action_error_sem']:.2f}")
        found = "—" if r["effector_found"] is None else f"{100 * r['effector_found']:.0f} %"
        fvd = "—" if r.get("fvd") is None else f"{r['fvd']:.4f}"
        cells.append(f"<tr><td>{esc(r['name'])}</td><td>{error}</td><td>{found}</td><td>{r['psnr']:.2f}</td>"
                     f"<td>{r['ssim']:.3f}</td><td>{fvd}</td></tr>")
    return ("<table><tr><th>condition</th><th>action error (px)</th><th>effector found</th><th>PSNR (dB)</th>"
            "<th>SSIM</th><th>FVD* (random net)</th></tr>" + "".join(cells) + "</table>"
            f"<p><small>{result['clips']} held-out clips; sampler {esc(result['sampler']['sampler'])} "
            f"{result['sampler']['steps']} steps, η {result['sampler']['guidance']}</small></p>")


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
    parts.append(f"<h2>Evaluation (unisim eval, after {budget_minutes:g} minutes of training each)</h2>"
                 + _eval_table(result) + "<p>Action error: distance between the generated and the true "
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
