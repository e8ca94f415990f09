"""What the human-activity adapters share: videos checked once each, and one episode per annotated action.

Ego4D narrations, EPIC-KITCHENS segments, Something-Something labels and captioned videos are all "an action in
a video": an `Episode` whose frames are the whole video (decoded lazily, `adapters/video.py`) and whose `span`
is the annotated stretch. The pipeline makes exactly one clip per such episode (`pipelines.clips.plan_span_clip`),
so records = annotations − rejected. Reasons given here:

- `missing_video`: the annotation names a video that is not there;
- `truncated_video`: an MP4 cut short that no longer opens (its index, written last, is lost);
- `undecodable_video`: the file does not open as a video for another reason;
- `empty_video`: it opens but has no frames;
- `timestamp_out_of_range`: the annotated time is not inside the video;
- `span_past_video_end`: the annotated action ends more than `SPAN_END_TOLERANCE_S` after the video does (an
  overrun within it is timestamp rounding: the span is cut at the video's end and counted as `span_end_clamped`);
- `invalid_text_encoding`: the text is not valid Unicode (JSON escapes can spell lone surrogates).
Later, per clip, a video that ends before a frame the clip needs gives `truncated_video`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence

import numpy as np

from unisim import fileio
from unisim.fileio import images
from unisim.adapters import video
from unisim.adapters.base import DatasetAdapter, Episode
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.text import decode_text


class VideoChecks:
    """Probes each video once while its annotations are read (they come grouped by video, or nearly so)."""

    def __init__(self, cache_size: int = 8):
        self._cache: dict[str, video.VideoInfo | tuple[str, str]] = {}
        self._size = cache_size

    def __call__(self, path: str) -> video.VideoInfo | tuple[str, str]:
        """The video's info, or (reason, detail) when it cannot be used."""
        if path not in self._cache:
            if len(self._cache) >= self._size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[path] = self._check(path)
        return self._cache[path]

    @staticmethod
    def _check(path: str) -> video.VideoInfo | tuple[str, str]:
        if not fileio.exists(path):
            return "missing_video", f"no {path}"
        info = video.probe(path)
        if info is None:
            cut = video.mp4_truncation(path) if path.lower().endswith((".mp4", ".mov", ".m4v")) else None
            if cut:
                return "truncated_video", f"{path} does not open: {cut}"
            return "undecodable_video", f"{path} does not open as a video"
        if info.frames <= 0:
            return "empty_video", f"{path} has no frames"
        if info.width * info.height > images.DECOMPRESSION_BOMB_PIXELS:  # every frame would be decoded at this size
            return "image_too_large", (f"{path} has {info.width}×{info.height} frames, over "
                                       f"{images.DECOMPRESSION_BOMB_PIXELS:,} pixels")
        return info


def csv_rows(text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(row number, fields)]) of an annotation CSV, the header being row 1; blank lines are skipped.
    The CSV module copes with quoted fields (EPIC's list columns)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    return header, [(number, fields) for number, fields in enumerate(reader, 2) if fields]


def parse_seconds(value) -> float | None:
    """A time as annotations write it: seconds (number or numeric string) or "[HH:]MM:SS[.fff]"; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        parts = value.strip().split(":")
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            return None
        if len(numbers) > 3 or any(n < 0 for n in numbers[:-1]):
            return None
        seconds = sum(n * 60 ** (len(numbers) - 1 - i) for i, n in enumerate(numbers))
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# How far an annotated action may end after its video and still be kept, cut at the end: timestamps rounded to
# 0.01 s (EPIC-KITCHENS) and a duration rounded to the frame or to whole seconds are off by far less. Beyond it the
# annotation belongs to another (longer) cut of the video, or most of the action would be missing.
SPAN_END_TOLERANCE_S = 0.5


def frame_at(seconds: float, fps: float) -> int:
    """The source frame shown at `seconds` (the one starting at or just before it)."""
    return int(math.floor(seconds * fps + 1e-6))


def action_episode(adapter: DatasetAdapter, *, key: str, frames: Sequence, fps: float, span: tuple[int, int],
                   text: str, split: str, source_file: str, source_index: int,
                   annotation_file: str) -> Episode | Rejection:
    """The episode of one annotated action, or its rejection. `span` is in source frames; it must start inside the
    video and may end up to `SPAN_END_TOLERANCE_S` after it (then it is cut there, and `altered` says so; a span
    ending within the last frame is not an overrun). Rejections name the annotation file."""
    def reject(reason: str, detail: str) -> Rejection:
        return adapter.reject(reason, detail, key, annotation_file, source_index)

    try:
        text = decode_text(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        return reject("invalid_text_encoding", str(e))
    start, stop = int(span[0]), min(int(span[1]), len(frames))
    if not 0 <= start < len(frames):
        return reject("timestamp_out_of_range", f"the action starts at frame {start} ({start / fps:.2f} s) but "
                                                f"the video has {len(frames)} frames ({len(frames) / fps:.2f} s)")
    overrun = int(span[1]) - len(frames) - 1  # frames past the video's last one (a span ends one after its last)
    if overrun / fps > SPAN_END_TOLERANCE_S:
        return reject("span_past_video_end", f"the action ends at {(int(span[1]) - 1) / fps:.2f} s but the video has "
                                             f"{len(frames)} frames ({len(frames) / fps:.2f} s): more than "
                                             f"{SPAN_END_TOLERANCE_S} s past its end")
    return Episode(episode_id=key, frames=frames, fps=fps, text=text, controls=np.zeros((len(frames), 0), np.float32),
                   split=split, source_file=source_file, source_index=source_index, span=(start, max(stop, start + 1)),
                   altered=("span_end_clamped",) if overrun > 0 else ())


def video_action(adapter: DatasetAdapter, checks: VideoChecks, *, key: str, path: str,
                 seconds: tuple[float, float] | None, text: str, split: str, source_index: int,
                 annotation_file: str) -> Episode | Rejection:
    """`action_episode` on a video file: `seconds` is the annotated (start, stop), None for the whole video."""
    info = checks(path)
    if not isinstance(info, video.VideoInfo):
        return adapter.reject(info[0], info[1], key, annotation_file, source_index)
    span = (0, info.frames) if seconds is None else (frame_at(seconds[0], info.fps), frame_at(seconds[1], info.fps) + 1)
    return action_episode(adapter, key=key, frames=video.VideoFrames(path, 0, info.frames), fps=info.fps, span=span,
                          text=text, split=split, source_file=path, source_index=source_index,
                          annotation_file=annotation_file)
