"""Matterport3D panoramas with Room-to-Room (Anderson et al. 2018): perspective views cut from the skyboxes, with
camera motion as the action (the paper's "turn left" clips, §2.1) and R2R's instructions along its paths.

`--source` is a root holding (official layouts; the R2R files may also sit at the root itself):

    tasks/R2R/data/R2R_{train,val_seen,val_unseen}.json   [{distance, scan, path_id, path: [pano ids], heading,
                                                            instructions: [3 strings]}]
    connectivity/<scan>_connectivity.json                  [{image_id, pose: 16 floats row-major, included, …}]
    data/v1/scans/<scan>/matterport_skybox_images/<pano>_skybox{0..5}_sami.jpg

Views are rendered with MatterSim's geometry (`adapters/panorama.py`) at `view_height`×`view_width` and
`vfov_degrees`, lazily, decoding only the skybox faces a view sees. Two kinds of episodes per (split, scan):

- **paths**: one per R2R instruction (three per path), key `<split>/path/<path_id>/<k>`. Frame 0 looks along the
  path's start heading; frame i ≥ 1 is at the path's i-th viewpoint facing the direction of travel into it. Text:
  the instruction.
- **rotations**: for every viewpoint on the split's paths, one episode per direction in `directions`, key
  `<split>/<scan>/<pano>/<direction>`: `rotation_views` views `rotation_step_degrees` apart turning right or left
  at elevation 0, or `elevation_views` views looking up (from −(n−1)/2 steps) or down. Text: "turn right 30
  degrees" (the step). The start heading is a hash of the pano id, so views differ between panos.

Controls, per frame, the motion from this frame to the next (zeros on the last): forward and rightward
displacement in metres in this frame's heading, the height change, and the heading and elevation change in radians
(heading positive turning right). Rejected: an R2R entry without scan/path/instructions (`malformed_annotation`), a
path through a viewpoint the connectivity file does not list (`unknown_viewpoint`), a scan without connectivity
(`missing_connectivity`), a pano with a skybox face missing (`missing_skybox`), and, per clip, a face that does
not decode (`undecodable_skybox`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Iterator, Sequence

import numpy as np

from unisim import fileio
from unisim.fileio import images
from unisim.adapters import files
from unisim.adapters import panorama as pano
from unisim.adapters.base import DatasetAdapter, Episode, FrameUnavailable, option
from unisim.adapters.registry import register
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.text import decode_text

SPLITS = ("train", "val_seen", "val_unseen")
TASK_FILES = ("tasks/R2R/data/R2R_{split}.json", "R2R_{split}.json")
DIRECTIONS = ("right", "left", "up", "down")
CONTROLS = ("forward_m", "right_m", "up_m", "delta_heading", "delta_elevation")


@dataclasses.dataclass(frozen=True)
class R2ROptions:
    view_height: int = option(240, "rendered view height in pixels (the pipeline then resizes)")
    view_width: int = option(400, "rendered view width in pixels")
    vfov_degrees: float = option(60.0, "vertical field of view of the rendered views")
    rotation_step_degrees: float = option(30.0, "turn between successive views of a rotation episode")
    rotation_views: int = option(12, "views of a left/right rotation episode (12 × 30° = a full turn)")
    elevation_views: int = option(4, "views of an up/down episode")
    directions: tuple[str, ...] = option(DIRECTIONS, "rotation episodes per viewpoint: any of right,left,up,down")
    paths: bool = option(True, "emit the instruction-following path episodes")


class PanoramaViews(Sequence):
    """Views [(pano, pose, heading, elevation), …] of one scan, rendered on access; a pano's decoded faces are kept
    while consecutive views use it."""

    def __init__(self, skybox_dir: str, views: list[tuple[str, np.ndarray, float, float]], options: R2ROptions):
        self._dir, self._views, self._o = skybox_dir, views, options
        self._faces: dict[tuple[str, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._views)

    def _face(self, pano_id: str, index: int) -> np.ndarray:
        if (pano_id, index) not in self._faces:
            if any(key[0] != pano_id for key in self._faces):
                self._faces.clear()
            import cv2

            path = f"{self._dir}/{pano_id}_skybox{index}_sami.jpg"
            try:
                bgr = images.decode(fileio.read_bytes(path), cv2.IMREAD_COLOR)
            except images.ImageError as e:
                reason = "image_too_large" if e.reason == "image_too_large" else "undecodable_skybox"
                raise FrameUnavailable(f"{path}: {e}", reason) from None
            if bgr.shape[0] != bgr.shape[1]:
                raise FrameUnavailable(f"{path} does not decode as a square skybox face", "undecodable_skybox")
            self._faces[(pano_id, index)] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return self._faces[(pano_id, index)]

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        pano_id, pose, heading, elevation = self._views[index]
        o = self._o
        return pano.render_view(functools.partial(self._face, pano_id), pose, heading, elevation, o.view_height,
                                o.view_width, math.radians(o.vfov_degrees))


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def motion_controls(positions: list[np.ndarray], headings: list[float], elevations: list[float]) -> np.ndarray:
    """Per frame: the motion to the next frame in this frame's heading (see the module docstring)."""
    controls = np.zeros((len(headings), len(CONTROLS)), np.float32)
    for t in range(len(headings) - 1):
        dx, dy, dz = positions[t + 1] - positions[t]
        h = headings[t]
        controls[t] = (dx * math.sin(h) + dy * math.cos(h), dx * math.cos(h) - dy * math.sin(h), dz,
                       _wrap(headings[t + 1] - h), elevations[t + 1] - elevations[t])
    return controls


@register
class RoomToRoom(DatasetAdapter):
    name = "r2r"
    description = "Matterport3D skyboxes with Room-to-Room: camera-rotation clips and instruction-following paths"
    control_names = CONTROLS
    Options = R2ROptions

    def __init__(self, source: str, split: str | None = None, options=None):
        super().__init__(source, split, options)
        self.root = source.rstrip("/")
        if split is not None and split not in SPLITS:
            raise ValueError(f"r2r: split must be one of {SPLITS} (test has no paths), got {split!r}")
        bad = sorted(set(self.options.directions) - set(DIRECTIONS))
        if bad:
            raise ValueError(f"r2r: unknown direction(s) {', '.join(bad)}; choose from {', '.join(DIRECTIONS)}")
        self.tasks = files.SplitLists(self.root, TASK_FILES, "paths")

    def work_units(self) -> list[str]:
        splits = [s for s in ([self.split] if self.split else SPLITS) if self.tasks.path(s)]
        if not splits:
            raise FileNotFoundError(f"r2r: no R2R_<split>.json under {self.root!r} (looked in "
                                    + " and ".join(p.format(split="train") for p in TASK_FILES) + ")")
        units = []
        for split in splits:
            scans = {e.get("scan") for e in self.tasks.entries(split) if isinstance(e, dict)}
            units += [f"{split}:{scan}" for scan in sorted(s for s in scans if isinstance(s, str))]
            if any(not _well_formed(e) for e in self.tasks.entries(split)):
                units.append(f"{split}:")  # the malformed entries, so that they are counted
        return units

    def read(self, unit: str) -> Iterator[Episode | Rejection]:
        split, _, scan = unit.partition(":")
        task_file = self.tasks.path(split)
        entries = [(i, e) for i, e in enumerate(self.tasks.entries(split))
                   if isinstance(e, dict) and e.get("scan") == scan]
        if not scan:
            for index, entry in enumerate(self.tasks.entries(split)):
                if not _well_formed(entry):
                    yield self.reject("malformed_annotation", f"entry {index} lacks scan, path, heading or "
                                      f"instructions: {str(entry)[:200]}", f"{split}@{index}", task_file, index)
            return
        entries = [(i, e) for i, e in entries if _well_formed(e)]
        connectivity = f"{self.root}/connectivity/{scan}_connectivity.json"
        skybox_dir = f"{self.root}/data/v1/scans/{scan}/matterport_skybox_images"
        keys = [key for index, entry in entries for key in self._keys(split, scan, entry)]
        if not fileio.exists(connectivity):
            for key in dict.fromkeys(keys):
                yield self.reject("missing_connectivity", f"{connectivity} does not exist", key, task_file)
            return
        poses = {v["image_id"]: np.asarray(v["pose"], np.float64).reshape(4, 4)
                 for v in json.loads(decode_text(fileio.read_bytes(connectivity))) if "image_id" in v and "pose" in v}
        present = {name.rsplit("/", 1)[-1] for name in fileio.glob(f"{skybox_dir}/*_skybox?_sami.jpg")}
        missing = lambda p: [i for i in range(6) if f"{p}_skybox{i}_sami.jpg" not in present]  # noqa: E731
        seen_panos: list[str] = []
        for index, entry in entries:
            unknown = [p for p in entry["path"] if p not in poses]
            lacking = {p: missing(p) for p in entry["path"] if p in poses and missing(p)}
            for k, text in enumerate(entry["instructions"]):
                key = f"{split}/path/{entry['path_id']}/{k}"
                if unknown:
                    yield self.reject("unknown_viewpoint", f"viewpoint(s) {unknown} are not in {connectivity}", key,
                                      task_file, index)
                elif lacking:
                    yield self.reject("missing_skybox", _lacking(lacking, skybox_dir), key, task_file, index)
                elif self.options.paths:
                    yield self._path_episode(key, entry, text, poses, skybox_dir, split, task_file, index)
            seen_panos += [p for p in entry["path"] if p in poses and p not in seen_panos]
        for pano_id in seen_panos:
            for direction in self.options.directions:
                key = f"{split}/{scan}/{pano_id}/{direction}"
                if missing(pano_id):
                    yield self.reject("missing_skybox", _lacking({pano_id: missing(pano_id)}, skybox_dir), key,
                                      connectivity)
                else:
                    yield self._rotation_episode(key, pano_id, poses[pano_id], direction, skybox_dir, split,
                                                 connectivity)

    def _keys(self, split: str, scan: str, entry: dict) -> list[str]:
        paths = [f"{split}/path/{entry['path_id']}/{k}" for k in range(len(entry["instructions"]))]
        return paths + [f"{split}/{scan}/{p}/{d}" for p in entry["path"] for d in self.options.directions]

    def _path_episode(self, key, entry, text, poses, skybox_dir, split, task_file, index) -> Episode:
        path = entry["path"]
        positions = [poses[p][:3, 3] for p in path]
        headings = [float(entry["heading"])]
        for a, b in zip(positions, positions[1:]):
            step = b - a
            headings.append(pano.heading_elevation(step)[0] if np.hypot(step[0], step[1]) > 1e-6 else headings[-1])
        elevations = [0.0] * len(path)
        views = [(p, poses[p], h, 0.0) for p, h in zip(path, headings)]
        return Episode(episode_id=key, frames=PanoramaViews(skybox_dir, views, self.options), fps=1.0,
                       text=text, controls=motion_controls(positions, headings, elevations), split=split,
                       source_file=task_file, source_index=index)

    def _rotation_episode(self, key, pano_id, pose, direction, skybox_dir, split, connectivity) -> Episode:
        o = self.options
        step = math.radians(o.rotation_step_degrees)
        start = 2 * math.pi * int(hashlib.blake2b(pano_id.encode(), digest_size=4).hexdigest(), 16) / 2**32
        if direction in ("right", "left"):
            sign = 1 if direction == "right" else -1
            headings = [(start + sign * k * step) % (2 * math.pi) for k in range(o.rotation_views)]
            elevations = [0.0] * o.rotation_views
            text = f"turn {direction} {o.rotation_step_degrees:g} degrees"
        else:
            sign = 1 if direction == "up" else -1
            first = -sign * step * (o.elevation_views - 1) / 2
            elevations = [first + sign * k * step for k in range(o.elevation_views)]
            headings = [start] * o.elevation_views
            text = f"look {direction} {o.rotation_step_degrees:g} degrees"
        views = [(pano_id, pose, h, e) for h, e in zip(headings, elevations)]
        position = [pose[:3, 3]] * len(views)
        return Episode(episode_id=key, frames=PanoramaViews(skybox_dir, views, o), fps=1.0, text=text,
                       controls=motion_controls(position, headings, elevations), split=split,
                       source_file=connectivity, source_index=-1)


def _well_formed(entry) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("scan"), str) and isinstance(entry.get("path"), list)
            and len(entry["path"]) > 0 and all(isinstance(p, str) for p in entry["path"])
            and isinstance(entry.get("heading"), (int, float)) and entry.get("path_id") is not None
            and isinstance(entry.get("instructions"), list) and all(isinstance(t, str) for t in entry["instructions"]))


def _lacking(lacking: dict[str, list[int]], skybox_dir: str) -> str:
    return "; ".join(f"{skybox_dir}/{p}_skybox{{{','.join(map(str, faces))}}}_sami.jpg missing"
                     for p, faces in lacking.items())
