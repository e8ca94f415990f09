"""The Language Table RLDS release format (Lynch et al. 2023), for writing sample data and test fixtures.

Spec, as released at `gs://gresearch/robotics/language_table*/0.0.1/`:

    episode_id: Text
    steps: Dataset of {
        action: float32[2]                       # 2-D end-effector delta, Box(-0.1, 0.1), 10 Hz
        is_first, is_last, is_terminal: bool
        reward: float32
        observation: {
            rgb: uint8[360, 640, 3] (JPEG)
            instruction: int32[512]              # zero-padded UTF-8 bytes
            effector_translation: float32[2]
            effector_target_translation: float32[2]
        }
    }

There is no `discount`. A step's `observation.rgb` may be given as an array (TFDS encodes it to JPEG) or as a
file-like object holding already-encoded bytes, which TFDS stores untouched (how tests plant undecodable images).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds

from unisim.adapters.language_table import decode_instruction  # noqa: F401  (the inverse of encode_instruction)
from unisim.samples.rlds_writer import Examples, write_tfds_dataset

IMAGE_SHAPE = (360, 640, 3)
INSTRUCTION_LENGTH = 512
VERSION = "0.0.1"


def features() -> tfds.features.FeaturesDict:
    vec2 = lambda: tfds.features.Tensor(shape=(2,), dtype=np.float32)  # noqa: E731
    flag = lambda: tfds.features.Scalar(dtype=np.bool_)  # noqa: E731
    return tfds.features.FeaturesDict({
        "episode_id": tfds.features.Text(),
        "steps": tfds.features.Dataset({
            "action": vec2(),
            "is_first": flag(),
            "is_last": flag(),
            "is_terminal": flag(),
            "reward": tfds.features.Scalar(dtype=np.float32),
            "observation": tfds.features.FeaturesDict({
                "rgb": tfds.features.Image(shape=IMAGE_SHAPE, dtype=np.uint8, encoding_format="jpeg"),
                "instruction": tfds.features.Tensor(shape=(INSTRUCTION_LENGTH,), dtype=np.int32),
                "effector_translation": vec2(),
                "effector_target_translation": vec2(),
            }),
        }),
    })


def encode_instruction(text: str) -> np.ndarray:
    """UTF-8 bytes, zero-padded to 512 int32 values (how the release stores instructions)."""
    raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)
    if raw.size > INSTRUCTION_LENGTH:
        raise ValueError(f"instruction longer than {INSTRUCTION_LENGTH} bytes: {text[:40]!r}…")
    out = np.zeros(INSTRUCTION_LENGTH, np.int32)
    out[: raw.size] = raw
    return out


def write(data_dir: str, make_examples: Callable[[], Examples], name: str = "language_table",
          num_shards: int | None = None) -> str:
    """Writes one `train` split in the Language Table format; returns `<data_dir>/<name>/0.0.1`.

    `make_examples()` returns an iterable of (key, {"episode_id": str, "steps": [step, ...]}).
    """
    return write_tfds_dataset(data_dir, name, VERSION, features(), {"train": make_examples},
                              num_shards=num_shards, description="Language Table format (RLDS)")
