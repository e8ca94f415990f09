"""Habitat ObjectNav (HM3D v1) demonstrations with their rendered RGB observations: one episode per demonstration,
"find a chair" as the text action, the discrete actions as controls (the paper's Habitat data, Figure 6).

`--source` is the dataset folder `…/objectnav/hm3d/v1` (or a habitat root holding `data/datasets/objectnav/hm3d/v1`):

    {split}/{split}.json.gz              {"episodes": [], "category_to_task_category_id": {…}, …}
    {split}/content/{scene}.json.gz      {"goals_by_category": {…}, "episodes": [{episode_id, scene_id,
                                          object_category, reference_replay: [{action, agent_state}, …], …}]}

Demonstrations (habitat-web / PIRLNav) carry no images; rendering them with habitat-sim is out of scope. This
adapter reads observations rendered beforehand in this layout (ours, documented in adapters/README.md):

    {split}/rgb/{scene}/{episode_id}/{t:04d}.jpg    t = 0 … len(reference_replay) − 1

Observation t is what the agent sees at replay entry t; entry 0 is the start state (its action is a placeholder),
and entry t + 1's action leads from observation t to t + 1. Controls are one-hot over `ACTIONS`: row t is the
action taken after observation t (the last row is all zeros). Work units are the content files. Rejected: an
episode without a category or a replay (`malformed_annotation`), an action outside `ACTIONS` (`unknown_action`),
an episode with no observation folder (`missing_observations`) or with another number of observations than replay
entries (`observation_count_mismatch`); per clip, a bad JPEG (`undecodable_image`). The paper trains on Habitat
with a domain identifier: `convert`'s default `--domain_prefix` (the dataset name) provides it.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
from collections.abc import Iterator

import numpy as np

from unisim import fileio
from unisim.adapters import files
from unisim.adapters.base import DatasetAdapter, Episode, option
from unisim.adapters.registry import register
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.text import decode_text

_FRAME_NAME = re.compile(r"^(\d+)\.jpg$")  # observation t is <t>.jpg, zero-padded or not

ACTIONS = ("MOVE_FORWARD", "TURN_LEFT", "TURN_RIGHT", "LOOK_UP", "LOOK_DOWN", "STOP")
SPLITS = ("train", "val")
DATASET_DIR = "data/datasets/objectnav/hm3d/v1"


@dataclasses.dataclass(frozen=True)
class HabitatOptions:
    fps: float = option(3.0, "agent steps per second the records are labelled with")
    observations: str = option("rgb", "the observation folder under each split (see the module docs)")


def _json_gz(path: str):
    return json.loads(decode_text(gzip.decompress(fileio.read_bytes(path))))


@register
class HabitatObjectNav(DatasetAdapter):
    name = "habitat_objectnav"
    description = "Habitat ObjectNav HM3D demonstrations with pre-rendered RGB: 'find a chair', one-hot actions"
    control_names = tuple(a.lower() for a in ACTIONS)
    Options = HabitatOptions

    def __init__(self, source: str, split: str | None = None, options=None):
        super().__init__(source, split, options)
        root = source.rstrip("/")
        self.root = f"{root}/{DATASET_DIR}" if fileio.isdir(f"{root}/{DATASET_DIR}") else root
        if self.options.fps <= 0:
            raise ValueError("habitat_objectnav: fps must be positive")

    def work_units(self) -> list[str]:
        splits = [s for s in ([self.split] if self.split else SPLITS) if fileio.exists(f"{self.root}/{s}/{s}.json.gz")]
        if not splits:
            raise FileNotFoundError(f"habitat_objectnav: no <split>/<split>.json.gz under {self.root!r}")
        return [f"{s}:{path.rsplit('/', 1)[-1][: -len('.json.gz')]}" for s in splits
                for path in fileio.glob(f"{self.root}/{s}/content/*.json.gz")]

    def read(self, unit: str) -> Iterator[Episode | Rejection]:
        split, scene = unit.split(":", 1)
        content = f"{self.root}/{split}/content/{scene}.json.gz"
        for index, entry in enumerate(_json_gz(content).get("episodes", [])):
            yield self._episode(entry, split, scene, content, index)

    def _episode(self, entry, split: str, scene: str, content: str, index: int) -> Episode | Rejection:
        episode_id = str(entry.get("episode_id", index)) if isinstance(entry, dict) else str(index)
        key = f"{split}/{scene}/{episode_id}"
        replay = entry.get("reference_replay") if isinstance(entry, dict) else None
        category = entry.get("object_category") if isinstance(entry, dict) else None
        if not isinstance(category, str) or not isinstance(replay, list) or not replay:
            return self.reject("malformed_annotation", "episode lacks object_category or reference_replay", key,
                               content, index)
        actions = [step.get("action") if isinstance(step, dict) else None for step in replay[1:]]
        unknown = sorted({str(a) for a in actions if a not in ACTIONS})
        if unknown:
            return self.reject("unknown_action", f"actions {unknown} are not among {', '.join(ACTIONS)}", key,
                               content, index)
        folder = f"{self.root}/{split}/{self.options.observations}/{scene}/{episode_id}"
        try:  # placed by number, not name order: 10000.jpg sorts before 1001.jpg; a gap is that frame's clips only
            frames = files.numbered_files(f"{folder}/*.jpg", _FRAME_NAME)
        except files.FrameNumberingError as e:
            return self.reject(e.reason, str(e), key, content, index)
        if not frames:
            return self.reject("missing_observations", f"no observations in {folder}", key, content, index)
        if len(frames) != len(replay):
            return self.reject("observation_count_mismatch", f"{len(frames)} observations in {folder} for "
                               f"{len(replay)} replay entries", key, content, index)
        controls = np.zeros((len(replay), len(ACTIONS)), np.float32)
        for t, action in enumerate(actions):
            controls[t, ACTIONS.index(action)] = 1.0
        return Episode(episode_id=key, frames=files.FileFrames(frames), fps=self.options.fps,
                       text=f"find a {category.replace('_', ' ')}", controls=controls, split=split,
                       source_file=content, source_index=index)
