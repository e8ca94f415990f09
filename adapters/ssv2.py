"""Something-Something V2 (Goyal et al. 2017): one episode per labelled video, the filled-in template as the action.

`--source` is the download root. Labels are `labels/{train,validation}.json` (newer package) or
`something-something-v2-{train,validation}.json` (older release): lists of `{"id", "label", "template",
"placeholders"}`; `label` is the template with its placeholders filled in ("Holding potato next to vicks vaporub
bottle" with the first letter as released). Videos are `<id>.webm` (VP9, about 12 fps, 240 px high) in
`20bn-something-something-v2/` (or `videos/`, or the root itself). The test split has no labels and is not read.

Work units are runs of `UNIT_SIZE` annotations of one split (`train:0`, `train:1000`, …), so workers share a
split's 169k videos. Each video is one annotated action spanning the whole video, so it gives one clip
(`adapters/annotated_video.py`: centred at `--fps`, or spread over the video with `--fit_spans`). Rejected here:
an annotation that is not an object with a string id and label (`malformed_annotation`), and the video reasons
of `annotated_video` (`missing_video`, `undecodable_video`, `empty_video`, `invalid_text_encoding`); later, per
clip, a video that ends early (`truncated_video`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from unisim import fileio
from unisim.adapters import files
from unisim.adapters.annotated_video import VideoChecks, video_action
from unisim.adapters.base import DatasetAdapter, Episode
from unisim.adapters.registry import register
from unisim.schemas.dead_letter import Rejection

SPLITS = ("train", "validation")
LABEL_FILES = ("labels/{split}.json", "something-something-v2-{split}.json")
VIDEO_DIRS = ("20bn-something-something-v2", "videos", "")
UNIT_SIZE = 1000


@register
class SomethingSomethingV2(DatasetAdapter):
    name = "ssv2"
    description = "Something-Something V2: labelled .webm videos, the filled-in template as the text action"

    def __init__(self, source: str, split: str | None = None, options=None):
        super().__init__(source, split, options)
        self.root = source.rstrip("/")
        self.labels = files.SplitLists(self.root, LABEL_FILES, "annotations")
        self._checks = VideoChecks()
        if split is not None and split not in SPLITS:
            raise ValueError(f"ssv2: split must be one of {SPLITS} (the test split has no labels), got {split!r}")

    @functools.cached_property
    def video_dir(self) -> str:
        # isdir, not a glob of the videos: listing 220k objects on every worker would cost more than the unit.
        for name in VIDEO_DIRS[:-1]:
            if fileio.isdir(f"{self.root}/{name}"):
                return f"{self.root}/{name}"
        return self.root

    def work_units(self) -> list[str]:
        if not fileio.exists(self.root):
            raise FileNotFoundError(f"ssv2: source {self.root!r} does not exist")
        splits = [s for s in ([self.split] if self.split else SPLITS) if self.labels.path(s)]
        if not splits:
            raise FileNotFoundError(f"ssv2: no label files under {self.root!r} (expected "
                                    + " or ".join(p.format(split="train") for p in LABEL_FILES) + ")")
        return [f"{split}:{start}" for split in splits
                for start in range(0, len(self.labels.entries(split)), UNIT_SIZE)]

    def read(self, unit: str) -> Iterator[Episode | Rejection]:
        split, start = unit.split(":")
        label_file = self.labels.path(split)
        for index, entry in enumerate(self.labels.entries(split)[int(start) : int(start) + UNIT_SIZE], int(start)):
            yield self._episode(entry, split, label_file, index)

    def _episode(self, entry, split: str, label_file: str, index: int) -> Episode | Rejection:
        key = f"{split}/{entry.get('id')}" if isinstance(entry, dict) and entry.get("id") else f"{split}@{index}"
        if not (isinstance(entry, dict) and isinstance(entry.get("id"), str) and isinstance(entry.get("label"), str)):
            return self.reject("malformed_annotation", f"entry {index} lacks a string id and label: {str(entry)[:200]}",
                               key, label_file, index)
        return video_action(self, self._checks, key=key, path=f"{self.video_dir}/{entry['id']}.webm", seconds=None,
                            text=entry["label"], split=split, source_index=index, annotation_file=label_file)
