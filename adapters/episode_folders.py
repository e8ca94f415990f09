"""Episodes stored as one folder each: the simplest raw layout, and the template to copy for a new dataset.

Layout (`--source` is the root; local, gs:// or any other `unisim.fileio` path):

    <source>/<split>/<episode_id>/frame_00000.jpg      one image per frame, t = 0, 1, … as frame_{t:05d}
    <source>/<split>/<episode_id>/frame_00001.jpg      (.jpg or .png)
    …
    <source>/<split>/<episode_id>/episode.json         {"instruction": str, "fps": float,
                                                         "actions": [[float, …], …]  one row per frame}

An episode becomes: frames = the frame files in number order, text = `instruction`, controls = `actions`
(float32 [frames, len(control_names)]), fps = `fps`, split = the split folder, id = "<split>/<episode_id>".
Work units are the episode folders, so workers read episodes in parallel.

What is rejected, and where (see adapters/README.md for every reason code):
- here, the whole episode: episode.json missing or not the expected JSON (`malformed_metadata`), not UTF-8
  (`invalid_text_encoding`), actions not one row of len(control_names) values per frame (`malformed_controls`),
  no frame files (`missing_images`), two files for one frame number (`duplicate_frame`);
- later, by the pipeline: an empty instruction (`empty_text`, unless require_text=false), and per clip a gap in
  the frame numbering (`missing_image`), a cut-short JPEG (`truncated_image`), an undecodable image
  (`undecodable_image`), a NaN or infinite action (`non_finite_control`). The episode's other clips are kept.

The number of frames is the highest frame number + 1, so a missing last frame shows as `malformed_controls`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator

import numpy as np

from unisim import fileio
from unisim.adapters import files
from unisim.adapters.base import DatasetAdapter, Episode, option
from unisim.adapters.registry import register
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.text import TextError, decode_text

# TEMPLATE: the file names of your layout.
METADATA = "episode.json"
_FRAME = re.compile(r"^frame_(\d+)\.(jpg|png)$")


@register  # TEMPLATE: and add your module to `_load_builtin_adapters` in adapters/registry.py
class EpisodeFolders(DatasetAdapter):
    # TEMPLATE: the `--dataset` name, a one-line description (`unisim adapters` prints it), the control names
    # (a class attribute when they are fixed, e.g. ("dx", "dy", "gripper"); set here from an option instead).
    controls_from_options = True
    name = "episode_folders"
    description = "one folder per episode: frame_NNNNN.jpg/png + episode.json (instruction, fps, actions)"

    # TEMPLATE: your settings; each becomes `--adapter_option NAME=VALUE`. Types: str, int, float, bool,
    # tuple[str, ...] (comma-separated on the command line). Unknown names are an error (`parse_options`).
    @dataclasses.dataclass(frozen=True)
    class Options:
        control_names: tuple[str, ...] = option((), "names of the action columns, in order, e.g. dx,dy "
                                                    "(default: none; then actions must be [] or empty rows)")
        require_text: bool = option(True, "reject episodes whose instruction is empty (empty_text)")

    def __init__(self, source: str, split: str | None = None, options=None):
        super().__init__(source, split, options)  # parses and checks the options into self.options
        self.root = source.rstrip("/")
        self.control_names = self.options.control_names  # per instance: the output depends on an option

    @property
    def requires_text(self) -> bool:
        return self.options.require_text

    def work_units(self) -> list[str]:
        # TEMPLATE: list the independent pieces (files, folders, shards), sorted so every run lists the same.
        # One glob over the files, not the folders: object stores (gs://) have no directories to list, and a
        # folder missing its episode.json must still be found (to be rejected, not silently skipped).
        if not fileio.exists(self.root):
            raise FileNotFoundError(f"{self.name}: source {self.root!r} does not exist")
        pattern = f"{self.root}/{self.split or '*'}/*/*"
        units = sorted({path.rsplit("/", 1)[0] for path in fileio.glob(pattern)
                        if (name := path.rsplit("/", 1)[-1]) == METADATA or _FRAME.match(name)})
        if not units:
            raise FileNotFoundError(f"{self.name}: no episode folders under {self.root!r} (expected "
                                    f"<split>/<episode_id>/{METADATA} and frame_NNNNN.jpg/png"
                                    + (f" in split {self.split!r})" if self.split else ")"))
        return units

    def read(self, unit: str) -> Iterator[Episode | Rejection]:
        # TEMPLATE: a unit holding many episodes (a file of records) yields one item per episode, in file order.
        yield self._read_episode(unit)

    def _read_episode(self, folder: str) -> Episode | Rejection:
        split, name = folder[len(self.root) + 1:].split("/")
        episode_id = f"{split}/{name}"  # TEMPLATE: stable and unique across the whole dataset (ids make the keys)

        def reject(reason: str, detail: str) -> Rejection:
            return self.reject(reason, detail, key=episode_id, source_file=folder, source_index=0)

        # 1. Metadata. Only "not found" is the data's fault: other I/O errors (permissions, network) propagate,
        # so the runner retries or fails the unit instead of recording them as bad data.
        try:
            raw = fileio.read_bytes(f"{folder}/{METADATA}")
        except FileNotFoundError:
            return reject("malformed_metadata", f"no {METADATA}")
        try:
            meta = json.loads(decode_text(raw))  # strict UTF-8 first: bad bytes must not vanish into U+FFFD
            text, fps, actions = meta["instruction"], float(meta["fps"]), meta["actions"]
            if not isinstance(text, str) or not isinstance(actions, list) or not (math.isfinite(fps) and fps > 0):
                raise ValueError("instruction must be a string, fps a positive number, actions a list of rows")
        except TextError as e:
            return reject(e.reason, f"{METADATA}: {e}")
        except (ValueError, KeyError, TypeError) as e:  # json.JSONDecodeError is a ValueError
            return reject("malformed_metadata", f"{METADATA}: {type(e).__name__}: {e}")

        # 2. Frames: found by listing, placed by number; a gap stays a None → the clips that need it are
        # rejected as missing_image, the rest of the episode is kept.
        try:
            frame_paths = files.numbered_files(f"{folder}/frame_*", _FRAME)
        except files.FrameNumberingError as e:
            return reject(e.reason, str(e))
        if not frame_paths:
            return reject("missing_images", "no frame_NNNNN.jpg or .png files")

        # 3. Controls: exactly one row of len(control_names) values per frame. NaN stays: the pipeline rejects
        # only the clips that contain it.
        try:  # without control names, "actions": [] is allowed: there is nothing to store per frame
            controls = (np.asarray(actions, np.float32) if actions or self.control_names
                        else np.zeros((len(frame_paths), 0), np.float32))
        except (ValueError, TypeError) as e:  # ragged rows, strings
            return reject("malformed_controls", f"actions: {e}")
        expected = (len(frame_paths), len(self.control_names))
        if controls.shape != expected:
            return reject("malformed_controls", f"actions have shape {list(controls.shape)}, expected "
                                                f"{list(expected)} (frames × control_names {self.control_names})")

        # Images stay encoded and are read lazily: only the frames a clip keeps are ever fetched and decoded.
        return Episode(episode_id=episode_id, frames=files.FileFrames(frame_paths), fps=fps, text=text,
                       controls=controls, split=split, source_file=folder, source_index=0)
