"""What an adapter is: one class per dataset that finds its sources and yields episodes, like a TFDS builder.

An adapter is plain Python (no Beam): the convert pipeline calls `work_units()` once on the launcher to list the
independent pieces of the source (files, shards), then `read(unit)` on workers. Everything an adapter yields is
either an `Episode` or a `Rejection` with a reason, so nothing it reads is silently lost.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator, Sequence
from typing import ClassVar

import numpy as np

from unisim.schemas.dead_letter import Rejection


@dataclasses.dataclass
class Episode:
    """One source episode at its native rate: frames, the text action and per-frame controls.

    `frames[i]` is either encoded image bytes (JPEG/PNG, decoded only if the pipeline keeps that frame) or a
    uint8 RGB array [H, W, 3]. `controls` is float32 [len(frames), D] as read (D may be 0).
    `episode_id` must be unique within the dataset and the same on every run: it makes the records' keys.
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


class DatasetAdapter(abc.ABC):
    """Base class of all adapters. Subclasses declare their output and implement discovery and reading."""

    name: ClassVar[str]  # the `--dataset` name
    description: ClassVar[str]
    control_names: ClassVar[tuple[str, ...]] = ()  # names of the control dimensions, in order
    requires_text: ClassVar[bool] = True  # episodes with an empty text action are rejected ("empty_text")

    def __init__(self, source: str, split: str | None = None):
        self.source = source
        self.split = split

    @property
    def dataset_name(self) -> str:
        """The name written into records and the manifest; a variant-aware adapter may refine it."""
        return self.name

    @abc.abstractmethod
    def work_units(self) -> list[str]:
        """The source's independent pieces, in a deterministic order; each is read by one `read` call."""

    @abc.abstractmethod
    def read(self, unit: str) -> Iterator[Episode | Rejection]:
        """Yields the episodes of one work unit in a deterministic order, or a `Rejection` for each bad one."""

    def reject(self, reason: str, detail: str, key: str, source_file: str = "", source_index: int = -1) -> Rejection:
        return Rejection(dataset=self.dataset_name, key=key, reason=reason, detail=detail, source_file=source_file,
                         source_index=source_index)
