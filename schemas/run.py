"""`run.json`: what a trained stage is, besides its parameters — the contract between `unisim train` and the simulator.

Written by the trainer into its workdir, read by the simulator (`simulator/checkpoint.py`) and everything built on
it. It holds the trainer config (model, input shapes, stage), the text encoder's identity (the manifests'), and
for each mixture source its control statistics (to tokenise a control action exactly as the converter did), frame
size and rate. Versioned and validated like the manifest: a reader refuses a version it does not know, and a file
that lacks a field or has one of the wrong type, naming it. Files written before the version existed are version 1.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from unisim.schemas.controls import ControlStats
from unisim.schemas.errors import UserError
from unisim.schemas.text_embeddings import EncoderIdentity

RUN_DESCRIPTION_NAME = "run.json"
RUN_DESCRIPTION_VERSION = 1


class RunDescriptionError(UserError):
    """A run description that cannot be read: another version, a missing field, a wrong type."""


@dataclasses.dataclass(frozen=True)
class SourceDescription:
    name: str
    dataset: str
    path: str
    weight: float
    control_stats: ControlStats | None
    frame_size: tuple[int, int]  # stored (height, width)
    fps: float  # stored frame rate; 0 when the source's records differ

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dataset": self.dataset, "path": self.path, "weight": self.weight,
                "control_stats": self.control_stats.to_json() if self.control_stats else None,
                "frame_size": list(self.frame_size), "fps": self.fps}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SourceDescription":
        _require(data, {"name": str, "dataset": str, "path": str, "weight": (int, float), "frame_size": list,
                        "fps": (int, float)}, "sources[]")
        stats = data.get("control_stats")
        return cls(name=data["name"], dataset=data["dataset"], path=data["path"], weight=float(data["weight"]),
                   control_stats=ControlStats.from_json(stats) if stats else None,
                   frame_size=tuple(int(v) for v in data["frame_size"]), fps=float(data["fps"]))


@dataclasses.dataclass(frozen=True)
class RunDescription:
    config: dict[str, Any]  # the trainer config as JSON (ml_collections `to_json_best_effort`)
    text_dim: int  # the text encoder's width (d_model)
    control_dims: int  # control tokens per frame (the widest source's)
    text_encoder: EncoderIdentity | None  # the encoder identity of the training data (None: no text)
    sources: tuple[SourceDescription, ...]
    version: int = RUN_DESCRIPTION_VERSION

    def controls(self) -> dict[str, ControlStats]:
        """Control statistics by source name, for the sources that have controls."""
        return {s.name: s.control_stats for s in self.sources if s.control_stats}

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "config": self.config, "text_dim": self.text_dim,
                "control_dims": self.control_dims,
                "text_encoder": self.text_encoder.to_json() if self.text_encoder else None,
                "sources": [s.to_json() for s in self.sources]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, sort_keys=True)

    @classmethod
    def loads(cls, text: str, where: str = RUN_DESCRIPTION_NAME) -> "RunDescription":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RunDescriptionError(f"{where}: not JSON ({e})") from None
        if not isinstance(data, dict):
            raise RunDescriptionError(f"{where}: expected a JSON object")
        version = data.get("version", 1)
        if version != RUN_DESCRIPTION_VERSION:
            raise RunDescriptionError(f"{where} has version {version}; this code reads version "
                                      f"{RUN_DESCRIPTION_VERSION}")
        try:
            _require(data, {"config": dict, "text_dim": int, "control_dims": int, "sources": list}, where)
            if data.get("text_encoder") is not None and not isinstance(data["text_encoder"], dict):
                raise RunDescriptionError(f"{where}: text_encoder must be an object or null")
            encoder = data.get("text_encoder")
            return cls(config=data["config"], text_dim=data["text_dim"], control_dims=data["control_dims"],
                       text_encoder=EncoderIdentity.from_json(encoder) if encoder else None,
                       sources=tuple(SourceDescription.from_json(s) for s in data["sources"]), version=version)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, RunDescriptionError):
                raise
            raise RunDescriptionError(f"{where}: {e}") from None


def _require(data: Any, fields: dict[str, type | tuple[type, ...]], where: str) -> None:
    if not isinstance(data, dict):
        raise RunDescriptionError(f"{where}: expected an object")
    for name, kind in fields.items():
        if name not in data:
            raise RunDescriptionError(f"{where}: missing field {name!r}")
        if not isinstance(data[name], kind) or isinstance(data[name], bool) and kind is int:
            raise RunDescriptionError(f"{where}: field {name!r} has the wrong type ({type(data[name]).__name__})")
