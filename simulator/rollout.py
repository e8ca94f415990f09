"""Rolling a trained model out from an image through a list of actions, written as a GIF or MP4 (`unisim rollout`)."""

from __future__ import annotations

import os

import numpy as np

from unisim import fileio
from unisim.fileio import images
from unisim.simulator.core import Action, Simulator


def write_video(path: str, frames: np.ndarray, fps: float, gif_scale: int = 4) -> str:
    """uint8 frames [n, H, W, 3] → a GIF (Pillow; enlarged `gif_scale`× with nearest neighbour, since model frames
    are small) or an H.264 MP4 (PyAV)."""
    extension = os.path.splitext(path)[1].lower()
    if extension == ".gif":
        from PIL import Image

        images = [Image.fromarray(f).resize((f.shape[1] * gif_scale, f.shape[0] * gif_scale), Image.NEAREST)
                  for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    elif extension == ".mp4":
        from unisim.fileio.video import write_video as write_mp4

        write_mp4(path, frames, fps, codec="h264")
    else:
        raise ValueError(f"--output must end in .gif or .mp4, not {extension or 'nothing'!r}")
    return path


def read_image(path: str) -> np.ndarray:
    """An RGB uint8 image from a local or remote (gs://) file."""
    import cv2

    try:
        return images.decode(fileio.read_bytes(path), cv2.IMREAD_COLOR_RGB)
    except images.ImageError as e:
        raise ValueError(f"{path}: {e}") from None


def parse_actions(texts: list[str] | None, controls: list[str] | None, source: str | None) -> list[Action]:
    texts, controls = texts or [], controls or []
    if not texts and not controls:
        raise ValueError("give --actions TEXT … and/or --controls V1,V2 …")
    if texts and controls and len(texts) != len(controls):
        raise ValueError(f"{len(texts)} --actions but {len(controls)} --controls: step i takes text i and controls i")
    vectors = []
    for item in controls:
        try:
            vectors.append([float(v) for v in item.split(",")])
        except ValueError:
            raise ValueError(f"--controls {item!r}: expected comma-separated numbers like 0.02,-0.01") from None
    return [Action(text=texts[i] if texts else None, controls=vectors[i] if vectors else None, source=source)
            for i in range(max(len(texts), len(vectors)))]


def record(simulator: Simulator, image: np.ndarray | None, actions: list[Action], output: str, *, seed: int = 0,
           fps: float | None = None, log=None) -> np.ndarray:
    """Starts from `image` (None: text-only), takes every action and writes the frames to `output` (.gif/.mp4) at
    `fps` (default: the training data's rate); returns them. `log` (print-like) gets a line per step."""
    import time

    frames = [simulator.reset(image, seed=seed)]
    for i, action in enumerate(actions):
        began = time.monotonic()
        try:
            frames.append(simulator.step(action))
        except ValueError as e:
            raise ValueError(f"step {i + 1}: {e}") from None
        if log:
            log(f"[rollout] step {i + 1}/{len(actions)}: {time.monotonic() - began:.1f} s"
                + (" (includes compiling the sampler)" if i == 0 else ""))
    video = np.concatenate(frames)
    fps = fps or next((s.fps for s in simulator.base.description.sources if s.fps), 10.0)
    write_video(output, video, fps)
    if log:
        log(f"[rollout] wrote {len(video)} frames of {video.shape[2]}×{video.shape[1]} at {fps:g} fps to {output}")
    return video
