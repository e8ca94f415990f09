"""BridgeData V2 (Walke et al. 2023), both releases: the raw folders and the RLDS `bridge_dataset`. One name,
`bridge`, so both produce the same records (same control order, same domain name) and mix as one dataset.

**RLDS** (`--source` holds dataset_info.json, or a version directory that does): the RLDS reader with frames =
`observation/image_{camera}`, text = `language_instruction` of the first step, controls = `action` f32[7].

**Raw** (`--source` is any directory above `raw/`, e.g. the download root): trajectories are found at
`<collection>/<env>/<task>/<NN>/<date>/raw/traj_group*/traj*/` (any depth; paths containing `lmdb` are skipped, as
in the official conversion script) and each is one work unit. A trajectory has `images{camera}/im_{t}.jpg`
(t = 0…T), `policy_out.pkl` (T actions: a list of arrays or of dicts with "actions") and, when labelled, `lang.txt`
(instructions, one a line, beside `confidence` lines). It becomes: frames = im_0…im_{T-1} (the last image has no
action, as in the RLDS release), controls = the T actions, 5 Hz. A trajectory labelled with several instructions
becomes one episode per instruction (`<id>`, then `<id>#1`, `<id>#2`, …): the authors' conversion keeps every
line but the `confidence` ones as the trajectory's `language` list and their loader draws one of them per example
(bridge_data_v2: `data_processing/bridgedata_raw_to_numpy.py`, `jaxrl_m/data/bridge_dataset.py`), while a record
here holds one text. The RLDS release keeps the first line only (`language_instruction`). Data collected before
2021-07-23 has a one-step action latency: there, image t+1 is paired with action t, as the official script does.

Pickles are untrusted: `policy_out.pkl` is read with `safe_pickle` (numpy arrays and builtins only); one that names
anything else is rejected as `unsafe_pickle` and never run. `obs_dict.pkl` (robot state) is not needed and not read.
A gap in the image numbering keeps the trajectory, and the clips that need the missing frame are rejected as
`missing_image`.

Controls (both releases): dx, dy, dz (end-effector translation delta), droll, dpitch, dyaw (rotation delta), gripper
(absolute, 1 open). About a third of BridgeData has no language; such episodes are kept by default (their
conditioning is the domain name and the controls), or rejected as `empty_text` with `require_text=true`.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Iterator

import numpy as np

from unisim import fileio
from unisim.adapters import files, safe_pickle
from unisim.adapters.base import DatasetAdapter, Episode, option
from unisim.adapters.registry import register
from unisim.adapters.rlds import RldsAdapter, RldsMapping
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.text import TextError, decode_text

CONTROL_HZ = 5.0
CONTROL_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
LATENCY_FIXED = datetime.datetime(2021, 7, 23)  # collections before this date have a one-step action delay
MAX_DEPTH = 6  # directories between --source and raw/: <collection>/<env>/<task>/<NN>/<date> is 5
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})$")
_IMAGE = re.compile(r"^im_(\d+)\.jpg$")


@dataclasses.dataclass(frozen=True)
class BridgeOptions:
    camera: int = option(0, "camera: images{N}/ in raw folders, observation/image_{N} in RLDS (0–3)")
    require_text: bool = option(False, "reject trajectories without language (else they are kept)")


class _BridgeRlds(RldsAdapter):
    name = "bridge"
    Options = BridgeOptions
    control_names = CONTROL_NAMES

    @property
    def dataset_name(self) -> str:
        return self.name  # both releases are one dataset

    def make_mapping(self) -> RldsMapping:
        return RldsMapping(image=f"observation/image_{self.options.camera}", actions=("action",), fps=CONTROL_HZ,
                           text="language_instruction", control_names=CONTROL_NAMES)


def find_trajectories(root: str) -> list[str]:
    """Every `…/raw/traj_group*/traj*` directory under `root`, sorted; `lmdb` paths skipped."""
    root = root.rstrip("/")
    found = set()
    for depth in range(MAX_DEPTH + 1):
        for path in fileio.glob(root + "/*" * depth + "/raw/traj_group*/traj*"):
            if "lmdb" not in path[len(root):]:
                found.add(path.rstrip("/"))
    return sorted(found)


def parse_actions(policy_out) -> np.ndarray:
    """policy_out.pkl's content (a list of arrays, or of dicts with "actions") → float32 [T, 7]."""
    if not isinstance(policy_out, (list, tuple)) or not policy_out:
        raise ValueError(f"expected a non-empty list, got {type(policy_out).__name__}")
    rows = []
    for t, entry in enumerate(policy_out):
        value = entry.get("actions") if isinstance(entry, dict) else entry
        row = np.asarray(value, dtype=np.float32).reshape(-1) if value is not None else np.zeros(0)
        if row.size != len(CONTROL_NAMES):
            raise ValueError(f"action {t} has {row.size} values, expected {len(CONTROL_NAMES)}")
        rows.append(row)
    return np.stack(rows)


def instructions(data: bytes) -> list[str]:
    """lang.txt → its instructions: every non-empty line that is not a `confidence: …` line, in order."""
    return [line.strip() for line in decode_text(data).splitlines() if line.strip() and "confidence" not in line]


def has_latency_shift(trajectory: str) -> bool:
    """True when the trajectory's collection date (the `YYYY-MM-DD_HH-MM-SS` directory) is before 2021-07-23."""
    for part in trajectory.split("/"):
        if _DATE.match(part):
            return datetime.datetime.strptime(part, "%Y-%m-%d_%H-%M-%S") < LATENCY_FIXED
    return False


@register
class Bridge(DatasetAdapter):
    name = "bridge"
    description = "BridgeData V2, raw folders or RLDS bridge_dataset: camera image + instruction + 7-D actions"
    control_names = CONTROL_NAMES
    Options = BridgeOptions

    def __init__(self, source: str, split: str | None = None, options=None):
        super().__init__(source, split, options)
        if not 0 <= self.options.camera <= 3:
            raise ValueError(f"bridge: camera must be 0–3, got {self.options.camera}")
        self.root = source.rstrip("/")
        try:  # the RLDS release if the source is (or holds) a TFDS builder directory, else raw folders
            self._rlds: _BridgeRlds | None = _BridgeRlds(source, split, options)
        except FileNotFoundError:
            self._rlds = None
        if not self._rlds and split not in (None, "train"):
            raise ValueError(f"bridge: raw folders have no splits (everything is 'train'), got split {split!r}")

    @property
    def release(self) -> str:
        return "rlds" if self._rlds else "raw"

    @property
    def requires_text(self) -> bool:
        return self.options.require_text

    def describe(self) -> dict:
        return {**(self._rlds.describe() if self._rlds else super().describe()), "release": self.release}

    def work_units(self) -> list[str]:
        if self._rlds:
            return self._rlds.work_units()
        if not fileio.exists(self.root):
            raise FileNotFoundError(f"bridge: source {self.root!r} does not exist")
        units = find_trajectories(self.root)
        if not units:
            raise FileNotFoundError(f"bridge: {self.root!r} holds neither an RLDS bridge_dataset (dataset_info.json) "
                                    "nor raw trajectories (…/raw/traj_group*/traj*/)")
        return units

    def read(self, unit: str) -> Iterator[Episode | Rejection]:
        if self._rlds:
            yield from self._rlds.read(unit)
        else:
            yield from self._read_trajectory(unit)

    def _read_trajectory(self, traj: str) -> list[Episode | Rejection]:
        """The trajectory's episodes, one per instruction (or one without any), or its rejection."""
        read = self._read_steps(traj)
        if isinstance(read, Rejection):
            return [read]
        episode, texts = read
        return [dataclasses.replace(episode, episode_id=episode.episode_id + (f"#{i}" if i else ""), text=text)
                for i, text in enumerate(texts or [""])]

    def _read_steps(self, traj: str) -> tuple[Episode, list[str]] | Rejection:
        episode_id = traj[len(self.root) + 1:].replace("/raw/", "/")

        def reject(reason: str, detail: str) -> Rejection:
            return self.reject(reason, detail, episode_id, traj, 0)

        path = f"{traj}/policy_out.pkl"
        try:
            data = fileio.read_bytes(path)
        except FileNotFoundError:  # other I/O errors propagate: the runner retries them, they are not bad data
            return reject("missing_actions", "no policy_out.pkl")
        try:
            policy_out = safe_pickle.loads(data)
        except safe_pickle.UnsafePickleError as e:
            return reject("unsafe_pickle", f"policy_out.pkl: {e}")
        except Exception as e:
            return reject("unreadable_pickle", f"policy_out.pkl: {type(e).__name__}: {e}")
        try:
            actions = parse_actions(policy_out)
        except ValueError as e:
            return reject("malformed_actions", f"policy_out.pkl: {e}")
        camera = f"images{self.options.camera}"
        try:
            paths = files.numbered_files(f"{traj}/{camera}/im_*.jpg", _IMAGE)
        except files.FrameNumberingError as e:
            return reject(e.reason, str(e))
        if not paths:
            return reject("missing_images", f"no {camera}/im_*.jpg")
        try:
            texts = instructions(fileio.read_bytes(f"{traj}/lang.txt"))
        except FileNotFoundError:  # unlabelled trajectory
            texts = []
        except TextError as e:
            return reject(e.reason, f"lang.txt: {e}")
        steps = len(actions)
        if len(paths) not in (steps, steps + 1):
            return reject("length_mismatch", f"{len(paths)} images in {camera}/ for {steps} actions "
                                             f"(expected {steps + 1})")
        if has_latency_shift(traj):
            paths, actions = paths[1:steps], actions[:-1]
        else:
            paths = paths[:steps]
        if not paths:
            return reject("empty_episode", "no image–action pairs")
        return Episode(episode_id=episode_id, frames=files.FileFrames(paths), fps=CONTROL_HZ, text="",
                       controls=actions, split="train", source_file=traj, source_index=0), texts
