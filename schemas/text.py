"""Action text → the exact string the text encoder embeds (the *conditioning text*). Pure Python, no models.

The pipeline embeds it and the simulator must build the same string for a user's action, so the rule lives here:

    conditioning_text = "<domain prefix>: <language action> controls: <controls as text>"

- **language action**: the dataset's text, normalised: Unicode NFC, control characters turned into spaces,
  runs of whitespace collapsed, ends stripped. Text that is not valid UTF-8 (bytes that do not decode, or lone
  surrogates left by a lenient decoder) is rejected as `invalid_text_encoding`; text longer than `max_text_chars`
  characters after normalisation is rejected as `text_too_long` (it is not an action, and would be cut by the
  encoder's token limit anyway). Text within the limit but over the encoder's token limit is truncated by the
  encoder and counted (`texts_truncated` in the manifest).
- **domain prefix** (paper §4, Figure 6): an identifier such as the dataset name, prepended so that low-data
  domains are told apart. Default: the dataset name; "" turns it off.
- **controls as text** (paper Appendix 9): the clip's action rows (`action_rows`) are cut into
  `controls_text_steps` consecutive segments; each segment's mean per control dimension is written with
  `controls_text_decimals` decimals, dimensions separated by spaces and segments by ", ". Example with 2 dims and
  4 steps: "controls: 0.01 -0.02, 0.03 0.00, 0.02 0.01, 0.00 0.00". Means, not sums: they stay meaningful for
  absolute controls (gripper, joint targets) as well as for deltas. Default: on for datasets with controls.

Parts that are empty are left out with their separators, so a caption-less clip without controls embeds just the
prefix, and one with no prefix either has no conditioning text at all ("": the trainer's unconditional embedding).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import Any

import numpy as np

MAX_TEXT_CHARS = 2048
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_WHITESPACE = re.compile(r"\s+")


class TextError(ValueError):
    """A text that cannot become an action; `reason` is the dead-letter reason code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def decode_text(raw: bytes) -> str:
    """Strict UTF-8 decoding for adapters: bad bytes raise `TextError("invalid_text_encoding")`, never vanish."""
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise TextError("invalid_text_encoding", f"text is not valid UTF-8: {e}") from None


def normalize_text(text: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """The normalised language action (see the module docstring); raises `TextError` for unusable text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TextError("invalid_text_encoding", f"text holds characters that are not valid UTF-8: {e}") from None
    text = _WHITESPACE.sub(" ", _CONTROL_CHARS.sub(" ", unicodedata.normalize("NFC", text))).strip()
    if len(text) > max_chars:
        raise TextError("text_too_long", f"text has {len(text)} characters, more than the limit of {max_chars}")
    return text


@dataclasses.dataclass(frozen=True)
class ConditioningSpec:
    """How one dataset's actions become conditioning text. Stored in the manifest, so a simulator can rebuild it."""

    domain_prefix: str = ""
    controls_as_text: bool = False
    controls_text_steps: int = 4
    controls_text_decimals: int = 2
    max_text_chars: int = MAX_TEXT_CHARS

    def __post_init__(self):
        if self.controls_text_steps < 1:
            raise ValueError("controls_text_steps must be >= 1")
        if not 0 <= self.controls_text_decimals <= 6:
            raise ValueError("controls_text_decimals must be in [0, 6]")
        if self.max_text_chars < 1:
            raise ValueError("max_text_chars must be >= 1")
        if self.domain_prefix != normalize_text(self.domain_prefix, self.max_text_chars):
            raise ValueError(f"domain prefix {self.domain_prefix!r} is not normalised text (no control characters, "
                             "single spaces, no leading or trailing space)")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ConditioningSpec":
        return cls(**data)


def action_rows(num_frames: int, context_frames: int) -> slice:
    """The rows of a clip's per-frame controls that act on its target frames.

    Row t is the control applied at frame t (RLDS: the action taken from observation t), so the target frames
    `context_frames … num_frames-1` are produced by rows `context_frames-1 … num_frames-2` (from row 0 when the
    clip has no history). A one-frame clip has none.
    """
    return slice(max(context_frames - 1, 0), max(num_frames - 1, 0))


def controls_text(controls: np.ndarray, steps: int, decimals: int) -> str:
    """The controls' textual form: `steps` segment means, rounded (see the module docstring). "" for no rows."""
    controls = np.asarray(controls, np.float64)
    if controls.ndim != 2 or controls.shape[0] == 0 or controls.shape[1] == 0:
        return ""
    parts = []
    for segment in np.array_split(controls, min(steps, controls.shape[0]), axis=0):
        values = [f"{v:.{decimals}f}" for v in segment.mean(axis=0)]
        parts.append(" ".join(v[1:] if float(v) == 0 and v.startswith("-") else v for v in values))  # no "-0.00"
    return ", ".join(parts)


def conditioning_text(spec: ConditioningSpec, text: str, controls: np.ndarray | None = None,
                      context_frames: int = 0) -> str:
    """The string to embed for a clip with (normalised) `text` and per-frame `controls` [T, D]."""
    body = text
    if spec.controls_as_text and controls is not None:
        controls = np.asarray(controls)
        rows = controls[action_rows(controls.shape[0], context_frames)] if controls.ndim == 2 else controls
        written = controls_text(rows, spec.controls_text_steps, spec.controls_text_decimals)
        if written:
            body = f"{body} controls: {written}" if body else f"controls: {written}"
    if spec.domain_prefix:
        body = f"{spec.domain_prefix}: {body}" if body else spec.domain_prefix
    return body
