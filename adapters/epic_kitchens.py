"""EPIC-KITCHENS-100 (Damen et al. 2022): every narrated action segment becomes one clip.

`--source` is the directory that holds the annotation CSVs and the participant folders:

    EPIC_100_train.csv, EPIC_100_validation.csv    narration_id, participant_id, video_id, narration_timestamp,
                                                   start_timestamp, stop_timestamp, start_frame, stop_frame,
                                                   narration, verb, verb_class, noun, noun_class, all_nouns,
                                                   all_noun_classes
    EPIC_100_video_info.csv                        video_id, duration, fps, resolution (optional beside videos)
    <P>/videos/<video_id>.MP4                      the videos, or
    <P>/rgb_frames/<video_id>/frame_0000000001.jpg the extracted frames (numbered from 1)

The text action is the `narration` ("put rubbish in the bin"). A video is preferred when both are present. With
a video, the segment is [start_timestamp, stop_timestamp] at the video's own rate; with extracted frames it is
frames start_frame … stop_frame, and the rate and length come from EPIC_100_video_info.csv (frame rates differ
between videos: 59.94, 50, 29.97, …), so frames without it are rejected (`missing_video_info`). The clip is centred
on the segment at `--fps`, or spread over it with `--fit_spans` (segments last 0.5 s to over a minute).

**Frame numbers against timestamps.** In the real CSVs some videos' `start_frame` is not `start_timestamp × fps`
of EPIC_100_video_info.csv but about twice (or half) that: high-frame-rate videos whose frames were numbered at
another rate. Placing such a segment by frame number in a folder numbered at `fps` lands it at twice the time.
The rule, per video with extracted frames (`frame_numbering`): the ratio is the median of start_frame /
(start_timestamp × fps) over its segments at least `MIN_FRAMES_FOR_RATIO` frames in; within `RATIO_TOLERANCE` of
1 the two agree. Otherwise (the ratio taken as exactly 2 or ½ when within the tolerance of either) the frame files
decide, being what is on disk: when their count over the duration is the annotations' rate (fps × ratio, within
the tolerance), segments are placed by frame number at that rate;
else they are placed by timestamp at `fps` (the timestamps are the time, whatever the numbering). Each video that
disagrees is listed in the manifest (`adapter.frame_numbering`: ratio, rule chosen, rate, files). Videos (MP4)
are always placed by timestamp.

Work units are videos (`train:P03_02`), their segments read in start order so one decoder serves them all.
Rejected here: `malformed_annotation` (a row with the wrong number of fields or an unreadable time or frame),
`duplicate_annotation` (a narration_id twice), `missing_video` (neither media present), `missing_video_info`,
and the reasons of `adapters/annotated_video.py` (`truncated_video`, `timestamp_out_of_range`, …).
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
from collections.abc import Iterator
from typing import Any

from unisim import fileio
from unisim.adapters import files
from unisim.adapters.annotated_video import VideoChecks, action_episode, csv_rows, parse_seconds, video_action
from unisim.adapters.base import DatasetAdapter, Episode
from unisim.adapters.registry import register
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.text import decode_text

SPLITS = ("train", "validation")  # the test split's CSV has no narrations
ANNOTATIONS = "EPIC_100_{split}.csv"
VIDEO_INFO = "EPIC_100_video_info.csv"
COLUMNS = ("narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp", "stop_timestamp",
           "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun", "noun_class", "all_nouns",
           "all_noun_classes")
RATIO_TOLERANCE = 0.1  # relative: frame numbers within 10 % of start_timestamp × fps agree with it
MIN_FRAMES_FOR_RATIO = 10  # segments nearer the start say little about the ratio (a frame of rounding is 10 %)


@dataclasses.dataclass(frozen=True)
class FrameNumbering:
    """How one video's extracted-frame segments are placed when its frame numbers and timestamps disagree."""

    ratio: float  # median start_frame / (start_timestamp × fps)
    placed_by: str  # "frame_numbers" (at fps × ratio) or "timestamps" (at fps)
    frame_rate: float  # the rate the frame files are taken to run at
    files: int  # frame files in the folder


def _read_csv(path: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    return csv_rows(decode_text(fileio.read_bytes(path)))


@register
class EpicKitchens(DatasetAdapter):
    name = "epic_kitchens"
    description = "EPIC-KITCHENS-100: one clip per narrated action segment, from the videos or extracted frames"

    def __init__(self, source: str, split: str | None = None, options=None):
        super().__init__(source, split, options)
        self.root = source.rstrip("/")
        if split is not None and split not in SPLITS:
            raise ValueError(f"epic_kitchens: split must be one of {SPLITS} (the test split has no narrations), "
                             f"got {split!r}")
        self._checks = VideoChecks()

    def _annotation_file(self, split: str) -> str:
        return f"{self.root}/{ANNOTATIONS.format(split=split)}"

    @functools.cache
    def segments(self, split: str) -> dict[str, list[tuple[int, list[str]]]]:
        """The split's rows grouped by video_id (rows whose video_id is unreadable under "")."""
        path = self._annotation_file(split)
        header, rows = _read_csv(path)
        # The release's README lists a leading `uid` column (and its test CSV has one): accepted and set aside.
        with_uid = tuple(header) == ("uid", *COLUMNS)
        if tuple(header) != COLUMNS and not with_uid:
            raise ValueError(f"epic_kitchens: {path} does not have the EPIC-KITCHENS-100 header; expected "
                             f"{','.join(COLUMNS)} (optionally after uid), found {','.join(header)[:300]}")
        by_video: dict[str, list[tuple[int, list[str]]]] = {}
        for number, fields in rows:
            fields = fields[1:] if with_uid else fields
            video_id = fields[2] if len(fields) == len(COLUMNS) else ""
            by_video.setdefault(video_id, []).append((number, fields))
        return by_video

    @functools.cached_property
    def video_info(self) -> dict[str, tuple[float, float]]:
        """video_id → (duration s, fps) from EPIC_100_video_info.csv; {} when the file is absent."""
        path = f"{self.root}/{VIDEO_INFO}"
        if not fileio.exists(path):
            return {}
        info = {}
        for _, fields in _read_csv(path)[1]:
            try:
                info[fields[0]] = (float(fields[1]), float(fields[2]))
            except (IndexError, ValueError):
                continue  # a bad line only matters to the frames of its video, which are then rejected
        return info

    def frame_ratio(self, split: str, video_id: str) -> float | None:
        """Median start_frame / (start_timestamp × fps) of the video's segments, from the CSV alone; None when
        the video has no video_info row or no segment far enough in."""
        if video_id not in self.video_info:
            return None
        fps = self.video_info[video_id][1]
        ratios = []
        for _, fields in self.segments(split).get(video_id, []):
            parsed = self._parse(fields)
            if not isinstance(parsed, str) and parsed[0] * fps >= MIN_FRAMES_FOR_RATIO:
                ratios.append(parsed[2] / (parsed[0] * fps))
        return statistics.median(ratios) if ratios else None

    @functools.cache
    def frame_numbering(self, split: str, video_id: str, folder: str) -> FrameNumbering | None:
        """The rule of the module docstring for a video whose frames are in `folder`; None when they agree."""
        ratio = self.frame_ratio(split, video_id)
        if ratio is None or abs(ratio - 1) <= RATIO_TOLERANCE:
            return None
        duration, fps = self.video_info[video_id]
        # Frame numbers are rounded, so the ratio is near, not at, the factor the numbering used: ½ or 2 it is.
        factor = next((f for f in (2.0, 0.5) if abs(ratio / f - 1) <= RATIO_TOLERANCE), ratio)
        count = len(fileio.glob(f"{folder}/frame_*.jpg"))
        by_numbers = abs(count / (duration * fps * factor) - 1) <= RATIO_TOLERANCE
        return FrameNumbering(round(ratio, 4), "frame_numbers" if by_numbers else "timestamps",
                              fps * factor if by_numbers else fps, count)

    def describe(self) -> dict[str, Any]:
        """With `frame_numbering`: each video whose frame numbers disagree with its timestamps, and the rule
        chosen for it (computed here from the same CSVs and folders the workers read)."""
        out = {}
        for split in [s for s in ([self.split] if self.split else SPLITS) if fileio.exists(self._annotation_file(s))]:
            for video_id, rows in sorted(self.segments(split).items()):
                if not video_id or self.frame_ratio(split, video_id) is None:
                    continue
                kind, folder = self._media(rows[0][1][1], video_id)
                numbering = self.frame_numbering(split, video_id, folder) if kind == "frames" else None
                if numbering is not None:
                    out[video_id] = dataclasses.asdict(numbering)
        return {**super().describe(), "frame_numbering": out}

    def work_units(self) -> list[str]:
        if not fileio.exists(self.root):
            raise FileNotFoundError(f"epic_kitchens: source {self.root!r} does not exist")
        splits = [s for s in ([self.split] if self.split else SPLITS) if fileio.exists(self._annotation_file(s))]
        if not splits:
            raise FileNotFoundError(f"epic_kitchens: no {ANNOTATIONS.format(split='train')} or "
                                    f"{ANNOTATIONS.format(split='validation')} under {self.root!r}")
        return [f"{split}:{video_id}" for split in splits for video_id in sorted(self.segments(split))]

    def read(self, unit: str) -> Iterator[Episode | Rejection]:
        split, video_id = unit.split(":", 1)
        where = self._annotation_file(split)
        segments, seen = [], set()
        for number, fields in self.segments(split)[video_id]:
            key = fields[0] if fields and fields[0] else f"{split}@{number}"
            parsed = self._parse(fields)
            if isinstance(parsed, str):
                yield self.reject("malformed_annotation", f"line {number}: {parsed}", key, where, number)
            elif key in seen:
                yield self.reject("duplicate_annotation", f"line {number}: narration_id {key} appears twice",
                                  f"{key}@{number}", where, number)
            else:
                seen.add(key)
                segments.append((parsed, number, key, fields[8], fields[1]))
        media = self._media(segments[0][4], video_id) if segments else ("", "")
        for times, number, key, text, _ in sorted(segments):  # in start order: the decoder only moves forward
            yield self._segment(split, video_id, media, times, number, key, text, where)

    def _media(self, participant: str, video_id: str) -> tuple[str, str]:
        """("video", path), ("frames", folder) or ("", what was looked for); looked up once per video."""
        video = f"{self.root}/{participant}/videos/{video_id}.MP4"
        if fileio.exists(video):
            return "video", video
        frames_dir = f"{self.root}/{participant}/rgb_frames/{video_id}"
        if fileio.isdir(frames_dir):
            return "frames", frames_dir
        return "", f"neither {video} nor {frames_dir}/ exists"

    @staticmethod
    def _parse(fields: list[str]) -> tuple[float, float, int, int] | str:
        """(start s, stop s, start frame, stop frame), or what is wrong with the row."""
        if len(fields) != len(COLUMNS):
            return f"{len(fields)} fields, expected {len(COLUMNS)}"
        start, stop = parse_seconds(fields[4]), parse_seconds(fields[5])
        try:
            first, last = int(fields[6]), int(fields[7])
        except ValueError:
            return f"start_frame/stop_frame {fields[6]!r}/{fields[7]!r} are not integers"
        if start is None or stop is None or stop < start or last < first or first < 1:
            return f"unreadable or reversed segment {fields[4]!r}-{fields[5]!r}, frames {first}-{last}"
        return start, stop, first, last

    def _segment(self, split: str, video_id: str, media: tuple[str, str], times, number: int, key: str, text: str,
                 where: str) -> Episode | Rejection:
        start, stop, first, last = times
        kind, path = media
        if kind == "":
            return self.reject("missing_video", path, key, where, number)
        if kind == "video":
            return video_action(self, self._checks, key=key, path=path, seconds=(start, stop), text=text,
                                split=split, source_index=number, annotation_file=where)
        if video_id not in self.video_info:
            return self.reject("missing_video_info", f"{path} has frames but {VIDEO_INFO} gives no fps and "
                               f"duration for {video_id}", key, where, number)
        duration, fps = self.video_info[video_id]
        count, span = round(duration * fps), (first - 1, last)
        numbering = self.frame_numbering(split, video_id, path)
        if numbering is not None:  # frame numbers and timestamps disagree: the module docstring's rule
            count, fps = numbering.files, numbering.frame_rate
            if numbering.placed_by == "timestamps":
                begin = round(start * fps)
                span = (begin, max(begin + 1, round(stop * fps)))
        frames = files.FileFrames(files.NumberedPaths(f"{path}/frame_{{:010d}}.jpg", count, 1))
        return action_episode(self, key=key, frames=frames, fps=fps, span=span, text=text, split=split,
                              source_file=path, source_index=number, annotation_file=where)
