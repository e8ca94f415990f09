"""Does the simulator follow actions? (`unisim eval`) Measured on held-out tabletop clips (the sample world's
magenta end effector can be found by colour).

    unisim eval --checkpoint runs/base --data demo-output/clips/tabletop-heldout \
        [--history_ablation runs/base-1frame] [--clips 32] [--steps 8] [--output eval.json]

Each held-out clip gives the true history (its last `history_frames` context frames), the true action (the
instruction as it was embedded, and the recorded control deltas leading to each target frame) and the true next
frames (one segment: the model's `frames`), all at the model's base size, decoded exactly as the trainer's input
decodes them. Rows:

- `model`: the simulator given history and action (text and controls), guidance η;
- `null condition`: the same model and history with the null condition (Eq. 2 with η = −1 is ε(z | history));
- `copy last frame`: the last history frame repeated — the no-motion baseline;
- `shuffled controls`: the same model, history and text with the controls of another held-out clip (the next
  one, cyclically): Genie's ΔtPSNR test — a model that follows its controls gets worse here;
- `text only`: the same model, history and text without controls (where the model has both): how a planner's
  instructions are given; trained by `input.control_drop`;
- `model, 1 history frame` (with --history_ablation): a model trained with `--config.input.history_frames=1`
  for the same number of steps or the same time — the paper's Table 1 ablation, on this world.

Each row's `key` names it in JSON: model, null_condition, copy_last_frame, shuffled_controls, text_only,
history_<n>.

Columns: `action error` — |generated − true| end-effector displacement from the last history frame to the last
target frame, in pixels of the base frame (the effector's centroid by colour; where a generated frame shows no
effector, its displacement counts as zero and `effector found` drops); PSNR and SSIM against the true frames;
FVD* — the Fréchet distance of clip features from a FIXED RANDOM video network (evaluation/fidelity.py), only for
comparing rows of one run, never published FVD (plug in I3D with --fidelity_net i3d:PATH).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from unisim.simulator.core import Action, SamplerSettings, Simulator

MAGENTA_MARGIN = 100  # (R + B) / 2 − G above this, with R and B bright: the effector (EFFECTOR_RGB = 255, 0, 255)
MIN_EFFECTOR_PIXELS = 2  # at 24×40 the true effector covers about 6 such pixels; single noisy pixels are not it


def effector_centroid(frame: np.ndarray) -> np.ndarray | None:
    """(y, x) of the magenta effector in an RGB uint8 frame: the largest connected blob of clearly magenta pixels,
    its centroid weighted by how magenta each pixel is; None when there is no blob of `MIN_EFFECTOR_PIXELS`."""
    import cv2

    f = frame.astype(np.float32)
    score = (f[..., 0] + f[..., 2]) / 2 - f[..., 1] - MAGENTA_MARGIN
    score = np.where((f[..., 0] > 100) & (f[..., 2] > 100), score, 0).clip(0)
    count, labels, stats, _ = cv2.connectedComponentsWithStats((score > 0).astype(np.uint8), connectivity=8)
    if count < 2:
        return None
    blob = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[blob, cv2.CC_STAT_AREA] < MIN_EFFECTOR_PIXELS:
        return None
    weights = np.where(labels == blob, score, 0)
    ys, xs = np.mgrid[: frame.shape[0], : frame.shape[1]]
    return np.array([(ys * weights).sum() / weights.sum(), (xs * weights).sum() / weights.sum()])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004: 11×11 Gaussian window, σ 1.5, K1 0.01, K2 0.03) over frames and channels."""
    import cv2

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5)  # noqa: E731
    values = []
    for x, y in zip(a.astype(np.float64), b.astype(np.float64)):
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        values.append(((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())
    return float(np.mean(values))


def held_out_clips(directory: str, size: tuple[int, int], frames: int, count: int, min_targets: int = 4,
                   history: int = 4, segments: int = 1, cache_dir: str | None = None) -> list[dict]:
    """Up to `count` clips with at least `min_targets` target frames (at most `frames`): history (the context
    frames, or the first `history` frames of a clip without), targets, text and the [frames, D] controls leading to
    each target (the last row repeated past the clip's end, since the model always makes `frames`), at `size`.

    `segments` > 1: only clips with `segments` × `frames` target frames, all of them kept (an autoregressive
    rollout of that many steps), with their controls [segments × frames, D]. A remote `directory` (gs://) has its
    shards copied to `cache_dir` (default: the trainer's shard cache)."""
    if segments > 1:
        frames, min_targets = segments * frames, segments * frames
    from unisim.shards import reader
    from unisim.trainer.data import InputConfig

    # Read as training reads a converted directory: local in place, a remote one (gs://) copied to the cache.
    manifest = reader.read_manifest(directory)
    filled = [s for s in manifest.shards if s.records]
    clips = []
    for record in reader.iter_records(directory, manifest, filled, validate=False,
                                      cache_dir=cache_dir or InputConfig().cache_dir):
        # A clip at an episode's start has no context frames: its first frames (up to `history`, leaving
        # `min_targets`) become the history, so that every model sees the history it was built for.
        context = record.context_frames or max(1, min(history, len(record.frames) - min_targets))
        targets = min(len(record.frames) - context, frames)
        if targets < min_targets:
            continue
        stored = (record.height, record.width)
        controls = None
        if record.controls.size:
            rows = np.asarray(record.controls[context - 1: context - 1 + targets], np.float64)
            controls = np.concatenate([rows, np.repeat(rows[-1:], frames - len(rows), axis=0)])
        clips.append({"key": f"{record.episode_id}/{record.clip_index}", "text": record.conditioning_text,
                      "history": reader.decode_resized(record.frames[:context], stored, size),
                      "targets": reader.decode_resized(record.frames[context: context + targets], stored, size),
                      "controls": controls})
        if len(clips) == count:
            break
    if not clips:
        # An episode's first clip has no context frames: its history comes out of its own frames.
        hint = (f" (convert long held-out episodes with --frames_per_clip {2 * history + min_targets} or more, e.g. "
                "`unisim sample tabletop --tasks_per_episode 3 --max_steps 60`)" if segments > 1 else "")
        raise ValueError(f"{directory}: no clip with history and at least {min_targets} target frames{hint}")
    return clips


def generate(simulator: Simulator, clips: list[dict], seed: int, controls_from: list[dict] | None = None,
             text_only: bool = False) -> list[np.ndarray]:
    """Each clip's next frames from its history and text, with the controls of `controls_from` (default: its own),
    or with none (`text_only`)."""
    sessions = [simulator.new_session(c["history"], seed=seed + i) for i, c in enumerate(clips)]
    actions = [Action(text=c["text"], controls=None if text_only else o["controls"])
               for c, o in zip(clips, controls_from or clips)]
    return simulator.step_sessions(sessions, actions)


def rollout(simulator: Simulator, clips: list[dict], seed: int, segments: int, text: bool = True) -> list[np.ndarray]:
    """Each clip rolled out autoregressively for `segments` steps from its true history, with its text (unless
    `text` is False: controls only) and its recorded controls of each segment: after the first, the history is the
    model's own frames. Returns [segments × frames, h, w, 3] each."""
    n = simulator.frames
    sessions = [simulator.new_session(c["history"], seed=seed + i) for i, c in enumerate(clips)]
    videos: list[list[np.ndarray]] = [[] for _ in clips]
    for s in range(segments):
        actions = [Action(text=c["text"] if text else None, controls=c["controls"][s * n:(s + 1) * n]) for c in clips]
        for video, frames in zip(videos, simulator.step_sessions(sessions, actions)):
            video.append(frames)
    return [np.concatenate(v) for v in videos]


def score_segments(name: str, clips: list[dict], videos: list[np.ndarray], segments: int, frames: int) -> list[dict]:
    """`score` of each segment of a rollout: its frames against the true ones, and the effector's displacement from
    the last true history frame to the segment's last frame against the true displacement (so the error of segment
    k is where the effector is after k steps, everything before included)."""
    rows = []
    for s in range(segments):
        part = slice(s * frames, (s + 1) * frames)
        cut = [{**c, "targets": c["targets"][part]} for c in clips]
        row = score(name, cut, [v[part] for v in videos], net=None)
        rows.append({"segment": s + 1, **{k: row[k] for k in ("action_error_px", "action_error_sem",
                                                             "effector_found", "psnr", "ssim")}})
    return rows


def evaluate_rollouts(model: Simulator, data: str, segments: int, clips: int, seed: int = 0) -> dict:
    """The model rolled out `segments` steps on held-out clips long enough for it, per segment against the true
    frames, beside copy-last-frame; the goal (issue 30): after the last segment, the effector error at most half
    of copy-last-frame's. A model trained with text dropped (`input.text_drop`) is also rolled out on controls
    alone (`model_controls_only`: how an agent's actions are given)."""
    held = held_out_clips(data, model.base_size, model.frames, clips, segments=segments)
    copy = [np.repeat(c["history"][-1:], segments * model.frames, axis=0) for c in held]
    rows = {"model": score_segments("model", held, rollout(model, held, seed, segments), segments, model.frames),
            "copy_last_frame": score_segments("copy last frame", held, copy, segments, model.frames)}
    if model.base.config.input.get("text_drop", 0.0) > 0 and model.controls:
        rows["model_controls_only"] = score_segments("model, controls only", held,
                                                     rollout(model, held, seed, segments, text=False), segments,
                                                     model.frames)
    last_model, last_copy = rows["model"][-1]["action_error_px"], rows["copy_last_frame"][-1]["action_error_px"]
    ratio = last_model / last_copy if last_model is not None and last_copy else None
    return {"segments": segments, "frames_per_segment": model.frames, "clips": len(held), "rows": rows,
            "goal": {"ratio": ratio, "want": "<= 0.5", "met": ratio is not None and ratio <= 0.5}}


def shuffled(clips: list[dict]) -> list[dict]:
    """Each clip's neighbour (i + 1, cyclically): a fixed derangement, so no clip keeps its own controls."""
    return clips[1:] + clips[:1]


def score(name: str, clips: list[dict], generated: list[np.ndarray], net, key: str | None = None) -> dict:
    """One row: the generated videos (cut to each clip's true length) against the true targets."""
    errors, found, psnrs, ssims = [], 0, [], []
    generated = [video[: len(clip["targets"])] for clip, video in zip(clips, generated)]
    for clip, video in zip(clips, generated):
        start, end = effector_centroid(clip["history"][-1]), effector_centroid(clip["targets"][-1])
        if start is not None and end is not None:
            predicted = effector_centroid(video[-1])
            found += predicted is not None
            moved = (predicted - start) if predicted is not None else np.zeros(2)
            errors.append(float(np.linalg.norm(moved - (end - start))))
        psnrs.append(psnr(video, clip["targets"]))
        ssims.append(ssim(video, clip["targets"]))
    row = {"key": key or name.replace(" ", "_"), "name": name, "clips": len(clips),
           "action_error_px": float(np.mean(errors)) if errors else None,
           "action_error_sem": float(np.std(errors) / np.sqrt(len(errors))) if len(errors) > 1 else None,
           "effector_found": found / len(errors) if errors else None, "psnr": float(np.mean(psnrs)),
           "ssim": float(np.mean(ssims))}
    if net is not None and len(clips) > 1:
        from unisim.simulator.evaluation import fidelity

        frames = net.frames  # every clip's first `frames` (the shortest clip's length: see `evaluate`)
        row["fvd"] = fidelity.fvd(np.stack([c["targets"][:frames] for c in clips]),
                                  np.stack([v[:frames] for v in generated]), net)
    return row


def evaluate(checkpoint: str, data: str, *, history_ablation: str | None = None, clips: int = 32,
             sampler: SamplerSettings = SamplerSettings(steps=8), seed: int = 0,
             fidelity_net: str | None = "random-video", segments: int = 1, rollout_data: str | None = None) -> dict:
    """The one-segment table (rows in the module docstring); with `segments` > 1 also `rollout`: autoregressive
    rollouts of that many segments on the held-out clips long enough for them (`evaluate_rollouts`), from
    `rollout_data` (default: `data`)."""
    if segments < 1:
        raise ValueError(f"segments must be at least 1, got {segments}")
    model = Simulator.from_checkpoints(checkpoint, sampler=sampler, max_batch=clips)
    held_out = held_out_clips(data, model.base_size, model.frames, clips)
    net = None
    if fidelity_net:
        from unisim.simulator.evaluation import fidelity

        shortest = min(len(c["targets"]) for c in held_out)
        net = fidelity.feature_network(fidelity_net if "?" in fidelity_net or ":" in fidelity_net
                                       else f"{fidelity_net}?frames={shortest}")
    rows = [score("model", held_out, generate(model, held_out, seed), net)]
    null = Simulator(model.base, sampler=dataclasses.replace(sampler, guidance=-1.0), max_batch=clips)
    rows.append(score("null condition", held_out, generate(null, held_out, seed), net))
    rows.append(score("copy last frame", held_out,
                      [np.repeat(c["history"][-1:], model.frames, axis=0) for c in held_out], net))
    if len(held_out) > 1 and all(c["controls"] is not None for c in held_out) and model.controls:
        # Genie's ΔtPSNR test: the same history and text with another clip's controls. A model that follows its
        # controls must get worse here; one that reads the motion off the text or the history does not.
        rows.append(score("shuffled controls", held_out, generate(model, held_out, seed, shuffled(held_out)), net))
    if model.controls and model.base.description.text_encoder is not None and all(c["text"] for c in held_out):
        # The instruction alone, as a planner gives it: the model must find the motion in the text. A model never
        # trained without controls (`input.control_drop` 0) has not learned this condition.
        rows.append(score("text only", held_out, generate(model, held_out, seed, text_only=True), net))
    if history_ablation:
        ablation = Simulator.from_checkpoints(history_ablation, sampler=sampler, max_batch=clips)
        rows.append(score(f"model, {ablation.history_frames} history frame(s)", held_out,
                          generate(ablation, held_out, seed), net, key=f"history_{ablation.history_frames}"))
        rows[0]["name"] = f"model, {model.history_frames} history frames"
    result = {"checkpoint": checkpoint, "step": model.base.step, "data": data, "clips": len(held_out),
              "sampler": sampler.__dict__, "fidelity_net": fidelity_net, "base_size": list(model.base_size),
              "rows": rows}
    if segments > 1:
        result["rollout"] = evaluate_rollouts(model, rollout_data or data, segments, clips, seed)
        result["rollout"]["data"] = rollout_data or data
    return result


def format_table(result: dict) -> str:
    fmt = lambda v, spec: "—" if v is None else format(v, spec)  # noqa: E731
    lines = [f"held-out clips: {result['clips']} from {result['data']}; checkpoint step {result['step']}; "
             f"sampler {result['sampler']['sampler']} {result['sampler']['steps']} steps, "
             f"η {result['sampler']['guidance']}",
             "| condition | action error (px) | effector found | PSNR (dB) | SSIM | FVD* (random net) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        error = fmt(r["action_error_px"], ".2f") + ("" if r["action_error_sem"] is None
                                                     else f" ± {r['action_error_sem']:.2f}")
        found = "—" if r["effector_found"] is None else f"{100 * r['effector_found']:.0f} %"
        lines.append(f"| {r['name']} | {error} | {found} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                     f"{fmt(r.get('fvd'), '.4f')} |")
    if "rollout" in result:
        lines += ["", format_rollout(result["rollout"])]
    return "\n".join(lines)


def format_rollout(rollout: dict) -> str:
    fmt = lambda v, spec: "—" if v is None else format(v, spec)  # noqa: E731
    model, copy = rollout["rows"]["model"], rollout["rows"]["copy_last_frame"]
    lines = [f"autoregressive rollouts: {rollout['clips']} held-out clips, {rollout['segments']} segments of "
             f"{rollout['frames_per_segment']} frames (recorded controls; the history after segment 1 is generated)",
             "| segment | action error (px): model | copy last frame | ratio | PSNR model / copy | SSIM model / copy |",
             "| --- | --- | --- | --- | --- | --- |"]
    for m, c in zip(model, copy):
        ratio = m["action_error_px"] / c["action_error_px"] if m["action_error_px"] is not None and c[
            "action_error_px"] else None
        lines.append(f"| {m['segment']} | {fmt(m['action_error_px'], '.2f')} ± {fmt(m['action_error_sem'], '.2f')} | "
                     f"{fmt(c['action_error_px'], '.2f')} | {fmt(ratio, '.2f')} | {m['psnr']:.2f} / {c['psnr']:.2f} | "
                     f"{m['ssim']:.3f} / {c['ssim']:.3f} |")
    if "model_controls_only" in rollout["rows"]:
        lines.append("controls only (no text), action error per segment: " + ", ".join(
            f"{fmt(r['action_error_px'], '.2f')}" for r in rollout["rows"]["model_controls_only"]))
    goal = rollout["goal"]
    lines.append(f"goal: last segment's error ≤ 0.5 × copy-last-frame's: {fmt(goal['ratio'], '.2f')} "
                 f"({'MET' if goal['met'] else 'NOT MET'})")
    return "\n".join(lines)
