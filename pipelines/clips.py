"""Cutting an episode into clips: which source frames each clip keeps. Pure functions, no Beam, no images.

An episode at `source_fps` is resampled to `target_fps` by taking, for output time k / target_fps, the source
frame at or just before it (frames are skipped when downsampling, repeated when upsampling). The resampled
sequence is cut into clips of `frames_per_clip - context_frames` target frames each; every clip but the first
also carries the `context_frames` frames just before its targets as history (clips overlap by that much), so the
trainer can condition on up to `context_frames` previous frames. The last clip, or an episode shorter than one
clip, gives a shorter record rather than being dropped.
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
