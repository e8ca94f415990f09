"""`unisim rollout`: a trained model rolled out from an image through a list of actions, written as a GIF or MP4.

    unisim rollout --checkpoint runs/base --image start.png --actions "push the red block left" "push it up" \
        --output rollout.gif
    unisim rollout --checkpoint runs/base --super_resolution runs/sr1 --image start.png \
        --controls 0.02,0 0.02,0 0,-0.03 --output rollout.mp4
    unisim rollout --checkpoint runs/base --text_only --actions "a person opens a fridge" --output t2v.gif

`--checkpoint` is a `unisim train` workdir (its latest checkpoint) or a `checkpoints/STEP` folder inside it. With
both `--actions` and `--controls`, step i takes text i and controls i together. The sampler defaults to 16
deterministic (DDIM) steps; `--sampler ancestral --steps 256` is the paper's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from unisim import fileio
from unisim.simulator.core import Action, SamplerSettings, Simulator


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

    image = cv2.imdecode(np.frombuffer(fileio.read_bytes(path), np.uint8), cv2.IMREAD_COLOR_RGB)
    if image is None:
        raise ValueError(f"{path} is not an image OpenCV can decode")
    return image


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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="unisim rollout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="base model: a training workdir or checkpoints/STEP")
    parser.add_argument("--super_resolution", nargs="*", default=[], help="super-resolution workdirs, in order")
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--image", help="the initial observation (any size; resized to the model's)")
    start.add_argument("--text_only", action="store_true", help="start from white placeholder frames")
    parser.add_argument("--actions", nargs="*", help="text actions, one per step")
    parser.add_argument("--controls", nargs="*", help="control vectors, one per step: comma-separated raw values")
    parser.add_argument("--source", help="whose control statistics (a mixture source name; default: the only one)")
    parser.add_argument("--output", required=True, help="out.gif or out.mp4")
    SamplerSettings.add_flags(parser)
    parser.add_argument("--text_encoder", help="T5 checkpoint (default: the one the run recorded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, help="output frame rate (default: the training data's)")
    args = parser.parse_args(argv)

    try:
        actions = parse_actions(args.actions, args.controls, args.source)
        image = None if args.text_only else read_image(args.image)
        simulator = Simulator.from_checkpoints(args.checkpoint, args.super_resolution, max_batch=1,
                                               sampler=SamplerSettings.from_flags(args), text_encoder=args.text_encoder)
    except (ValueError, OSError) as e:
        print(f"unisim rollout: error: {e}", file=sys.stderr)
        return 2
    frames = [simulator.reset(image, seed=args.seed)]
    for i, action in enumerate(actions):
        began = time.monotonic()
        try:
            frames.append(simulator.step(action))
        except ValueError as e:
            print(f"unisim rollout: error: step {i + 1}: {e}", file=sys.stderr)
            return 2
        print(f"[rollout] step {i + 1}/{len(actions)}: {time.monotonic() - began:.1f} s"
              + (" (includes compiling the sampler)" if i == 0 else ""), file=sys.stderr)
    video = np.concatenate(frames)
    fps = args.fps or next((s.fps for s in simulator.base.description.sources if s.fps), 10.0)
    write_video(args.output, video, fps)
    print(f"[rollout] wrote {len(video)} frames of {video.shape[2]}×{video.shape[1]} at {fps:g} fps to "
          f"{args.output}")
    return 0
