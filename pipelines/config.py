"""The options of one conversion: `ConvertConfig` (every `unisim convert` option) and its `TextOptions`.

Apart from the steps (`pipelines.transforms`) and the running (`pipelines.convert`) so that the CLI, the demo and the
docs' generated tables read the declarations without the pipeline's code.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from unisim.pipelines import frames as frame_ops
from unisim.pipelines.embed import EncoderSettings
from unisim.schemas import text as text_rules
from unisim.schemas.controls import DEFAULT_SAMPLE_ROWS
from unisim.schemas.options import option


@dataclasses.dataclass(frozen=True)
class TextOptions:
    """How text actions become conditioning text (`schemas.text`) and embeddings. Per run, so per dataset."""

    domain_prefix: str | None = option(None, "identifier prepended to every action (none: the dataset name; '' for "
                                             "no prefix)")
    controls_as_text: bool | None = option(None, "append the clip's controls as text (auto: when the dataset has "
                                                 "controls)", values={"auto": None, "on": True, "off": False})
    controls_text_steps: int = option(4, "segments the controls text summarises")
    controls_text_decimals: int = option(2, "decimals in the controls text")
    max_text_chars: int = option(text_rules.MAX_TEXT_CHARS, "longer action texts are rejected as text_too_long")
    # None: conditioning texts are written and counted, not embedded
    encoder: EncoderSettings | None = option(None, "the text encoder", flatten=True, presence="path")

    def conditioning(self, dataset_name: str, has_controls: bool) -> text_rules.ConditioningSpec:
        return text_rules.ConditioningSpec(
            domain_prefix=dataset_name if self.domain_prefix is None else self.domain_prefix,
            controls_as_text=has_controls if self.controls_as_text is None else self.controls_as_text,
            controls_text_steps=self.controls_text_steps, controls_text_decimals=self.controls_text_decimals,
            max_text_chars=self.max_text_chars)


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """One conversion: every `unisim convert` option is a field here (the flags and the docs' table are generated
    from these declarations, `schemas.options`)."""

    dataset: str = option(help="adapter name (see `unisim adapters`)")
    source: str = option(help="the release's directory (local or gs://)")
    output: str = option(help="output directory (local or gs://); must be new, empty, or a previous output")
    split: str | None = option(None, "one split only (none: all)")
    # the adapter's `Options`, by name: from --adapter_option / --adapter_config (the CLI builds it)
    adapter_options: dict[str, Any] = option(cli=False, default_factory=dict)
    fps: float | None = option(None, "target frame rate: frames are skipped (or repeated) to the nearest earlier "
                                     "source frame (none: keep the source rate)")
    fit_spans: bool = option(False, "annotated actions (ssv2, ego4d, epic_kitchens, video_captions): spread each "
                                    "clip's frames over the whole annotated span (the rate varies per record) "
                                    "instead of centring it at --fps")
    frames_per_clip: int = option(20, "frames per record, history included")
    context_frames: int = option(4, "history frames overlapping the previous clip")
    frame: frame_ops.FrameSpec = option(frame_ops.FrameSpec(), "stored frames", flatten=True)
    records_per_shard: int = option(256, "records per ArrayRecord shard (the shard count follows from it)")
    low_percentile: float = option(1.0, "control bound percentile: the bottom of bin 0")
    high_percentile: float = option(99.0, "control bound percentile: the top of bin 4095")
    stats_sample_rate: float = option(1.0, "fraction of control rows the statistics see (sampled by key hash)")
    stats_max_rows: int = option(DEFAULT_SAMPLE_ROWS, "control rows the percentiles are exact up to; above, a "
                                                      "deterministic hash-chosen sample of this many (bounded memory; "
                                                      "rank error in schemas/controls.py)")
    text: TextOptions = option(TextOptions(), "text actions", flatten=True)

    def __post_init__(self):
        if not 0 <= self.context_frames < self.frames_per_clip:
            raise ValueError(f"need 0 <= context_frames ({self.context_frames}) < frames_per_clip "
                             f"({self.frames_per_clip})")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number, got {self.fps}")
        if self.records_per_shard <= 0:
            raise ValueError("records_per_shard must be positive")
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            raise ValueError("need 0 <= low_percentile < high_percentile <= 100")
        if not 0 < self.stats_sample_rate <= 1:
            raise ValueError("stats_sample_rate must be in (0, 1]")
        if self.stats_max_rows < 1:
            raise ValueError("stats_max_rows must be >= 1")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
