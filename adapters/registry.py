"""Adapter registry: `--dataset NAME` picks the adapter class registered under NAME."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unisim.adapters.base import DatasetAdapter
from unisim.schemas.errors import UserError

_ADAPTERS: dict[str, type[DatasetAdapter]] = {}


class UnknownDatasetError(UserError, KeyError):
    """`--dataset NAME` names no registered adapter (a KeyError too, for callers that look names up)."""

    def __str__(self) -> str:  # KeyError's own would quote the message
        return str(self.args[0]) if self.args else ""


def register(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
    """Class decorator: makes the adapter available under `cls.name`."""
    if cls.name in _ADAPTERS and _ADAPTERS[cls.name] is not cls:
        raise ValueError(f"two adapters are named {cls.name!r}: {_ADAPTERS[cls.name]} and {cls}")
    _ADAPTERS[cls.name] = cls
    return cls


def get(name: str) -> type[DatasetAdapter]:
    _load_builtin_adapters()
    try:
        return _ADAPTERS[name]
    except KeyError:
        raise UnknownDatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(_ADAPTERS))} "
                                  "(see `unisim adapters`)") from None


def create(name: str, source: str, split: str | None = None,
           options: Mapping[str, Any] | None = None) -> DatasetAdapter:
    """An adapter instance: the class registered as `name`, on `source`, with its options checked."""
    return get(name)(source, split, options)


def all_adapters() -> dict[str, type[DatasetAdapter]]:
    _load_builtin_adapters()
    return dict(sorted(_ADAPTERS.items()))


def _load_builtin_adapters() -> None:
    # Imported on first use so that `import unisim.adapters.registry` stays cheap; each module registers itself.
    from unisim.adapters import (  # noqa: F401
        bridge, ego4d, episode_folders, epic_kitchens, habitat_objectnav, laion, language_table, r2r, rlds, rt1, ssv2,
        video_captions)
