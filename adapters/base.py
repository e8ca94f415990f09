"""What an adapter is: one class per dataset that finds its sources and yields episodes, like a TFDS builder.

An adapter is plain Python (no Beam): the convert pipeline calls `work_units()` once on the launcher to list the
independent pieces of the source (files, shards), then `read(unit)` on workers. Everything an adapter yields is
either an `Episode` or a `Rejection` with a reason, so nothing it reads is silently lost.

Adapters that need settings (which camera, which fields) declare them as a frozen dataclass `Options`; users give
them as `--adapter_option KEY=VALUE` or in a JSON file (`--adapter_config`), and `parse_options` checks them.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from unisim.schemas import options
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.options import option  # noqa: F401  (adapters declare their Options with it)


class FrameUnavailable(Exception):
    """Raised by a lazy frame sequence for a frame it cannot produce (a video cut short); `reason` is the
    dead-letter code. The pipeline rejects the clips that need the frame and keeps the episode's others."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass
class Episode:
    """One source episode at its native rate: frames, the text action and per-frame controls.

    `frames[i]` is either encoded image bytes (JPEG/PNG, decoded only if the pipeline keeps that frame) or a
    uint8 RGB array [H, W, 3]. `controls` is float32 [len(frames), D] as read (D may be 0).
    `episode_id` must be unique within the dataset and the same on every run: it makes the records' keys.

    `span` marks an annotated action (a narration, a labelled segment): source frames [start, stop) that the
    action covers, inside a longer `frames` (usually the whole video, decoded lazily). Such an episode gives
    exactly one clip, placed on the span (`pipelines.clips.plan_span_clip`), with its history frames taken
    from before the clip. Without a span, the whole episode is cut into successive clips.

    `altered` names what the adapter changed to keep the episode (e.g. `span_end_clamped`): each is counted in the
    manifest's `counters`, so nothing is altered uncounted.
    """

    episode_id: str
    frames: Sequence[bytes | np.ndarray]
    fps: float
    text: str
    controls: np.ndarray
    split: str
    source_file: str
    source_index: int
    is_image: bool = False
    span: tuple[int, int] | None = None
    altered: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of an adapter that has none."""


def parse_options(options_type: type, values: Mapping[str, Any] | None, adapter: str) -> Any:
    """`values` ({name: str or JSON value}) → an instance of the adapter's `Options`; unknown names are an error."""
    return options.parse_options(options_type, values, adapter, "adapter option")


class DatasetAdapter(abc.ABC):
    """Base class of all adapters. Subclasses declare their output and implement discovery and reading.

    `control_names` and `requires_text` are class attributes; an adapter whose output depends on its options
    (the generic RLDS one) sets them on the instance in `__init__` instead.
    """

    name: ClassVar[str]  # the `--dataset` name
    description: ClassVar[str]
    control_names: tuple[str, ...] = ()  # names of the control dimensions, in order
    controls_from_options: ClassVar[bool] = False  # True: `control_names` is set per instance from the options
    requires_text: bool = True  # episodes with an empty text action are rejected ("empty_text")
    Options: ClassVar[type] = NoOptions

    def __init__(self, source: str, split: str | None = None, options: Mapping[str, Any] | None = None):
        self.source = source
        self.split = split
        self.options = parse_options(self.Options, options, self.name)

    @property
    def dataset_name(self) -> str:
        """The name written into records and the manifest; a variant-aware adapter may refine it."""
        return self.name

    def describe(self) -> dict[str, Any]:
        """What this adapter reads, settings resolved (recorded in the manifest as `adapter`); JSON values only."""
        return {"name": self.name, "options": dataclasses.asdict(self.options),
                "control_names": list(self.control_names), "requires_text": bool(self.requires_text)}

    @abc.abstractmethod
    def work_units(self) -> list[str]:
        """The source's independent pieces, in a deterministic order; each is read by one `read` call."""

    @abc.abstractmethod
    def read(self, unit: str) -> Iterator[Episode | Rejection]:
        """Yields the episodes of one work unit in a deterministic order, or a `Rejection` for each bad one."""

    def reject(self, reason: str, detail: str, key: str, source_file: str = "", source_index: int = -1) -> Rejection:
        return Rejection(dataset=self.dataset_name, key=key, reason=reason, detail=detail, source_file=source_file,
                         source_index=source_index)
