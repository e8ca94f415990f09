"""Cutting an episode into clips: which source frames each clip keeps. Pure functions, no Beam, no images.

An episode at `source_fps` is resampled to `target_fps` by taking, for output time k / target_fps, the source
frame at or just before it (frames are skipped when downsampling, repeated when upsampling). The resampled
sequence is cut into clips of `frames_per_clip - context_frames` target frames each; every clip but the first
also carries the `context_frames` frames just before its targets as history (clips overlap by that much), so the
trainer can condition on up to `context_frames` previous frames. The last clip, or an episode shorter than one
clip, gives a shorter record rather than being dropped.

An annotated action (an episode with a `span`: a narration, a labelled segment) gives exactly one clip instead
(`plan_span_clip`), as the paper counts one example per annotation (Table 5): its `frames_per_clip -
context_frames` target frames are either at the target rate and centred on the span (default), or spread evenly
over the span (`fit`: the clip shows the whole action, and its rate follows the span's length). History frames
are taken from before the targets at the same spacing, as far as the video allows.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class ClipPlan:
    clip_index: int
    frame_indices: np.ndarray  # source frame index of every frame in the clip, context first
    context_frames: int


def resample_indices(num_frames: int, source_fps: float, target_fps: float | None) -> np.ndarray:
    """Source frame indices that make the sequence play at `target_fps` (None: keep every frame)."""
    if num_frames <= 0:
        return np.zeros(0, np.int32)
    if target_fps is None or math.isclose(target_fps, source_fps):
        return np.arange(num_frames, dtype=np.int32)
    if source_fps <= 0 or target_fps <= 0:
        raise ValueError(f"fps must be positive (source {source_fps}, target {target_fps})")
    duration = num_frames / source_fps
    count = max(1, math.floor(duration * target_fps + 1e-9))
    # Small epsilon so that exact multiples (30 → 10 fps: frames 0, 3, 6, …) do not fall one frame short.
    return np.minimum(np.floor(np.arange(count) * (source_fps / target_fps) + 1e-6), num_frames - 1).astype(np.int32)


def plan_clips(frame_indices: np.ndarray, frames_per_clip: int, context_frames: int) -> list[ClipPlan]:
    """Splits resampled frames into overlapping clips (see the module docstring)."""
    if not 0 <= context_frames < frames_per_clip:
        raise ValueError(f"need 0 <= context_frames ({context_frames}) < frames_per_clip ({frames_per_clip})")
    target = frames_per_clip - context_frames
    plans = []
    for clip_index, start in enumerate(range(0, len(frame_indices), target)):
        stop = min(start + target, len(frame_indices))
        first = max(0, start - context_frames)
        plans.append(ClipPlan(clip_index, np.asarray(frame_indices[first:stop], np.int32), start - first))
    return plans


def plan_span_clip(num_frames: int, source_fps: float, span: tuple[int, int], target_fps: float | None,
                   frames_per_clip: int, context_frames: int, fit: bool = False) -> tuple[ClipPlan, float]:
    """The one clip of an annotated action and its frame rate (see the module docstring).

    Centred clips that would run past either end of the video are shifted inside it. Raises ValueError for a
    span outside the video.
    """
    start, stop = int(span[0]), int(span[1])
    if not 0 <= start < stop <= num_frames:
        raise ValueError(f"span [{start}, {stop}) is not inside the video's {num_frames} frames")
    if not 0 <= context_frames < frames_per_clip:
        raise ValueError(f"need 0 <= context_frames ({context_frames}) < frames_per_clip ({frames_per_clip})")
    targets = frames_per_clip - context_frames
    if fit:  # never finer than the source: a span shorter than the clip is shown at the source rate instead
        step = max((stop - start) / targets, 1.0)
    else:
        step = 1.0 if target_fps is None else source_fps / target_fps
    count = int(max(1, min(targets, math.floor(num_frames / step + 1e-9))))
    first = (start + stop) / 2 - count * step / 2
    first = min(max(first, 0.0), num_frames - count * step)
    history = min(context_frames, math.floor(first / step + 1e-6))
    positions = first + step * np.arange(-history, count)
    indices = np.clip(np.floor(positions + 1e-6), 0, num_frames - 1).astype(np.int32)
    return ClipPlan(0, indices, history), source_fps / step
