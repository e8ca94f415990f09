"""Hand-built datasets in official on-disk formats, with planted bad items, for the tests."""

from __future__ import annotations

import io
import os

import numpy as np

from unisim.samples import language_table_format as ltf

# Planted defects: (episode index, step index) → what is wrong there.
NAN_ACTION = (1, 7)
BAD_IMAGE = (2, 13)
EMPTY_INSTRUCTION_EPISODE = 3


def synthetic_frame(episode: int, step: int) -> np.ndarray:
    """A 360x640 frame with a gradient and a square that moves with the step (cheap, compressible, not constant)."""
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[..., 0] = np.linspace(0, 255, 640, dtype=np.uint8)[None, :]
    frame[..., 1] = (40 * episode) % 256
    x = 40 + 15 * step
    frame[150:210, x : x + 60] = (255, 0, 255)
    return frame


def language_table_examples(num_episodes: int = 5, steps: int = 25, plant_defects: bool = True):
    """Episodes in the Language Table format; with `plant_defects`, the three defects above are planted."""
    rng = np.random.default_rng(0)
    for e in range(num_episodes):
        instruction = "" if plant_defects and e == EMPTY_INSTRUCTION_EPISODE else f"push the block {e} to the left"
        step_dicts = []
        for t in range(steps):
            action = rng.uniform(-0.05, 0.05, 2).astype(np.float32)
            if plant_defects and (e, t) == NAN_ACTION:
                action[0] = np.nan
            rgb = synthetic_frame(e, t)
            if plant_defects and (e, t) == BAD_IMAGE:
                rgb = io.BytesIO(b"\xff\xd8\xff\xe0 this is not a JPEG body \xff\xd9")  # complete, undecodable
            step_dicts.append({
                "action": action, "is_first": t == 0, "is_last": t == steps - 1, "is_terminal": t == steps - 1,
                "reward": np.float32(t == steps - 1),
                "observation": {"rgb": rgb, "instruction": ltf.encode_instruction(instruction),
                                "effector_translation": np.zeros(2, np.float32),
                                "effector_target_translation": np.zeros(2, np.float32)},
            })
        yield f"episode_{e:03d}", {"episode_id": f"episode_{e:03d}", "steps": step_dicts}


def write_language_table(data_dir: str, num_episodes: int = 5, steps: int = 25, plant_defects: bool = True,
                         name: str = "language_table", num_shards: int | None = 2) -> str:
    return ltf.write(data_dir, lambda: language_table_examples(num_episodes, steps, plant_defects), name=name,
                     num_shards=num_shards)


def write_language_table_texts(data_dir: str, instructions: list[bytes], steps: int = 6) -> str:
    """A clean Language Table release with one episode per raw instruction (UTF-8 bytes as stored, possibly bad)."""

    def examples():
        rng = np.random.default_rng(1)
        for e, raw in enumerate(instructions):
            codes = np.zeros(ltf.INSTRUCTION_LENGTH, np.int32)
            codes[: len(raw)] = np.frombuffer(raw, np.uint8)
            step_dicts = [{
                "action": rng.uniform(-0.05, 0.05, 2).astype(np.float32), "is_first": t == 0,
                "is_last": t == steps - 1, "is_terminal": t == steps - 1, "reward": np.float32(0),
                "observation": {"rgb": synthetic_frame(e, t), "instruction": codes,
                                "effector_translation": np.zeros(2, np.float32),
                                "effector_target_translation": np.zeros(2, np.float32)},
            } for t in range(steps)]
            yield f"episode_{e:03d}", {"episode_id": f"episode_{e:03d}", "steps": step_dicts}

    return ltf.write(data_dir, examples, name="language_table", num_shards=1)


def read_dir(path: str) -> dict[str, bytes]:
    """Every file of a directory by name: for byte-for-byte comparisons of outputs."""
    return {name: open(os.path.join(path, name), "rb").read() for name in sorted(os.listdir(path))}


def copy_tree(local: str, remote: str) -> str:
    """Copies a local fixture folder to another filesystem (the tests' memory://, standing in for gs://) file by
    file, through `unisim.fileio`; returns `remote`."""
    from unisim import fileio

    for folder, _, names in os.walk(local):
        target = remote + folder[len(local):].replace(os.sep, "/")
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                fileio.publish(f.read(), f"{target}/{name}")
    return remote
