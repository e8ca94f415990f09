"""Ego4D narrations (Grauman et al. 2022): every narrated moment of a full-scale video becomes one clip.

`--source` is the download root that holds `v1/`:

    v1/annotations/narration.json    {video_uid: {"narration_pass_1": {"narrations": [{"timestamp_sec",
                                      "timestamp_frame", "narration_text", "annotation_uid"}, …], "summaries": […]},
                                      "narration_pass_2": {…}, "status": …}}   (either pass may be missing;
                                      some copies name the file narrations.json)
    v1/full_scale/<video_uid>.mp4    the canonical 30 fps videos

Keys are `<video_uid>/pass<n>/<index in the pass>`. Not `annotation_uid`: in the release it names one annotator's
pass, and every narration and summary of that pass carries the same uid (Ego-Exo4D's docs define an annotation the
same way, one annotator's list of descriptions), so it identifies no single narration.

Each narration is an annotated action at one instant (`timestamp_sec`): its clip is centred there at `--fps`
(`pipelines.clips.plan_span_clip`), with history frames from before it. Both annotator passes are read (option
`passes`): they narrate the same video independently, so most moments appear twice, in different words.
Summaries describe minutes of activity, not an action, and are not used.

The narration text is rewritten into plain English by `natural_narration` (rule in its docstring), e.g.
"#C C picks up a knife" → "The camera wearer picks up a knife".

Work units are videos (`<video_uid>@<byte range>`), their narrations read in time order so that one decoder
serves them all, moving forward (`adapters/video.py`). The launcher finds each video's bytes in the narration
file (`entry_ranges`); a worker reads and parses only the videos it is given. Rejected here:
`malformed_annotation` (a video entry or narration of the wrong shape, a timestamp that is not a number),
`duplicate_annotation` (a narration with the same time and text as an earlier one of the same video), and the
video reasons of
`adapters/annotated_video.py` (`missing_video`, `truncated_video`, `undecodable_video`, `timestamp_out_of_range`, …).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from collections.abc import Iterator
from typing import Any

from unisim import fileio
from unisim.adapters.annotated_video import VideoChecks, video_action
from unisim.adapters.base import DatasetAdapter, Episode, option
from unisim.adapters.registry import register
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.text import decode_text

NARRATION_FILES = ("v1/annotations/narration.json", "v1/annotations/narrations.json")
SPLIT = "train"  # narrations are not split; Ego4D's benchmark splits select videos for other tasks

_CAMERA_WEARER = re.compile(r"(?<![\w'-])C(?![\w-])")  # "C", "C's"; not "C-clamp" or "Vitamin C-rich"
_UNSURE = re.compile(r"#unsure\b", re.IGNORECASE)
_TAG = re.compile(r"#\w+")


def natural_narration(text: str, camera_wearer: str = "the camera wearer") -> str:
    """Ego4D's annotation conventions → plain text. The rule, in order:

    1. `#unsure` (uncertain content) becomes "something"; every other `#tag` (`#C`, `#O`, `#summary`, …) is
       dropped. A narration made only of tags is empty (and rejected as `empty_text`).
    2. The standalone letter `C` is the camera wearer and becomes `camera_wearer` ("C's" → "the camera
       wearer's"). Other people keep their annotation names ("man X", "woman Y").
    3. Spaces are collapsed, spaces before punctuation removed, and the first letter capitalised.

    "#C C picks #unsure from the table" → "The camera wearer picks something from the table";
    "#O man X gives C a cup" → "Man X gives the camera wearer a cup".
    """
    if not _TAG.sub("", text).strip():
        return ""
    text = _TAG.sub("", _UNSURE.sub("something", text))
    text = _CAMERA_WEARER.sub(camera_wearer, text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", re.sub(r"\s+", " ", text)).strip()
    return text[:1].upper() + text[1:]


def _timestamp(narration: dict) -> float | None:
    """The narration's time in seconds: `timestamp_sec`, else `timestamp_frame` at Ego4D's canonical 30 fps."""
    value = narration.get("timestamp_sec")
    if value is None and isinstance(narration.get("timestamp_frame"), (int, float)):
        value = narration["timestamp_frame"] / 30.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def entry_ranges(data: bytes) -> list[tuple[str, int, int]]:
    """(key, first byte, end byte) of each value of a JSON object, found by parsing one value at a time.

    The launcher parses narration.json once this way and each worker then reads and parses only its video's
    bytes: the whole file as Python objects (3.85M narrations) would take gigabytes in every worker."""
    text = decode_text(data)
    decoder, ranges = json.JSONDecoder(), []
    ascii_only = text.isascii()
    mark_char, mark_byte = 0, 0

    def byte_at(char: int) -> int:  # str index → UTF-8 byte offset, moving forward only
        nonlocal mark_char, mark_byte
        if ascii_only:
            return char
        mark_byte += len(text[mark_char:char].encode("utf-8"))
        mark_char = char
        return mark_byte

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    i = skip(0)
    if text[i : i + 1] != "{":
        raise ValueError("ego4d: the narration file is not a JSON object keyed by video_uid")
    i = skip(i + 1)
    while text[i : i + 1] != "}":
        try:
            key, i = decoder.raw_decode(text, i)
            i = skip(i)
            if text[i : i + 1] != ":" or not isinstance(key, str):
                raise json.JSONDecodeError("expected a string key and ':'", text, i)
            start = skip(i + 1)
            _, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as e:
            raise ValueError(f"ego4d: the narration file is not valid JSON: {e}") from None
        ranges.append((key, byte_at(start), byte_at(end)))
        i = skip(end)
        if text[i : i + 1] == ",":
            i = skip(i + 1)
        elif text[i : i + 1] != "}":
            raise ValueError(f"ego4d: the narration file is not valid JSON: expected ',' or '}}' at character {i}")
    return ranges


@dataclasses.dataclass(frozen=True)
class Ego4DOptions:
    passes: tuple[str, ...] = option(("1", "2"), "annotator passes to read, e.g. 1 or 1,2")
    camera_wearer: str = option("the camera wearer", "what the narrations' 'C' becomes")
    videos: str = option("v1/full_scale", "the video folder under --source (e.g. a downscaled copy)")


@register
class Ego4D(DatasetAdapter):
    name = "ego4d"
    description = "Ego4D narrations: one clip around each narrated moment of the full-scale videos"
    Options = Ego4DOptions

    def __init__(self, source: str, split: str | None = None, options=None):
        super().__init__(source, split, options)
        self.root = source.rstrip("/")
        if split not in (None, SPLIT):
            raise ValueError(f"ego4d: narrations have one split, {SPLIT!r}; got {split!r}")
        bad = [p for p in self.options.passes if p not in ("1", "2")]
        if bad or not self.options.passes:
            raise ValueError(f"ego4d: passes must be 1, 2 or 1,2; got {','.join(self.options.passes)!r}")
        self._checks = VideoChecks()

    @functools.cached_property
    def narration_file(self) -> str:
        for name in NARRATION_FILES:
            if fileio.exists(f"{self.root}/{name}"):
                return f"{self.root}/{name}"
        if not fileio.exists(self.root):
            raise FileNotFoundError(f"ego4d: source {self.root!r} does not exist")
        raise FileNotFoundError(f"ego4d: no {' or '.join(NARRATION_FILES)} under {self.root!r} (--source is the "
                                "download root that holds v1/)")

    def work_units(self) -> list[str]:
        """`<video_uid>@<first byte>:<end byte>` of every video's entry in the narration file, sorted by uid."""
        ranges = entry_ranges(fileio.read_bytes(self.narration_file))
        return [f"{uid}@{start}:{end}" for uid, start, end in sorted(ranges)]

    def read(self, unit: str) -> Iterator[Episode | Rejection]:
        uid, byte_range = unit.rsplit("@", 1)
        start, end = (int(n) for n in byte_range.split(":"))
        with fileio.open(self.narration_file, "rb") as f:  # only this video's entry: a ranged read
            f.seek(start)
            entry = json.loads(decode_text(f.read(end - start)))
        yield from self._read_video(uid, entry)

    def _read_video(self, unit: str, entry: Any) -> Iterator[Episode | Rejection]:
        if not isinstance(entry, dict):
            yield self.reject("malformed_annotation", f"the entry of video {unit} is a {type(entry).__name__}, "
                              "not an object of narration passes", unit, self.narration_file)
            return
        moments, seen = [], {}
        for number in self.options.passes:
            annotation_pass = entry.get(f"narration_pass_{number}")
            if annotation_pass is None:  # either pass may be missing
                continue
            narrations = annotation_pass.get("narrations") if isinstance(annotation_pass, dict) else None
            if not isinstance(narrations, list):
                yield self.reject("malformed_annotation", f"narration_pass_{number} of video {unit} has no list of "
                                  f"narrations: {str(annotation_pass)[:200]}", f"{unit}/pass{number}",
                                  self.narration_file)
                continue
            for index, narration in enumerate(narrations):
                item = self._moment(unit, number, index, narration, seen)
                if isinstance(item, Rejection):
                    yield item
                else:
                    moments.append(item)
        path = f"{self.root}/{self.options.videos}/{unit}.mp4"
        for seconds, _, _, key, text, index in sorted(moments):  # in time order: the decoder only moves forward
            yield video_action(self, self._checks, key=key, path=path, seconds=(seconds, seconds), text=text,
                               split=SPLIT, source_index=index, annotation_file=self.narration_file)

    def _moment(self, unit: str, number: str, index: int, narration: Any, seen: dict):
        """(seconds, pass, index, key, text, source index) of one narration, or its rejection. `seen` maps each
        (time, text) of the video to the key that first used it: a repeat of both is the same narration twice."""
        key = f"{unit}/pass{number}/{index}"
        seconds = _timestamp(narration) if isinstance(narration, dict) else None
        text = narration.get("narration_text") if isinstance(narration, dict) else None
        if seconds is None or not isinstance(text, str):
            return self.reject("malformed_annotation", f"narration {index} of pass {number} lacks a numeric "
                               f"timestamp or a narration_text: {str(narration)[:200]}", key, self.narration_file,
                               index)
        text = natural_narration(text, self.options.camera_wearer)
        content = (round(seconds, 3), text)  # to the millisecond: the same instant written twice
        if content in seen:
            return self.reject("duplicate_annotation", f"narration {index} of pass {number} repeats {seen[content]} "
                               f"(same time, {seconds:g} s, and text {text!r})", key, self.narration_file, index)
        seen[content] = key
        return seconds, number, index, key, text, index
