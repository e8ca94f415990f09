"""Resize filter choice: speed and quality of OpenCV INTER_AREA vs INTER_LINEAR for 360x640 → 192x341 (crop 320).

Quality is PSNR against Pillow's antialiased LANCZOS resize of the same frame (the reference a careful offline
resize would give). Frames: the tabletop sample world's renders (sharp edges, where aliasing shows) unless
`--images DIR` points at JPEGs of your own. Prints one line per filter.

    python bench/resize_quality.py [--frames 200] [--images DIR]
"""

from __future__ import annotations

import argparse
import glob
import time

import cv2
import numpy as np
from PIL import Image


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def load_frames(count: int, images: str | None) -> list[np.ndarray]:
    if images:
        paths = sorted(glob.glob(f"{images}/*.jpg"))[:count]
        return [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in paths]
    from unisim.samples import tabletop

    frames = []
    seed = 0
    while len(frames) < count:
        episode = tabletop.scripted_episode(seed, max_steps=30)
        frames += [step["observation"]["rgb"] for step in episode["steps"]]
        seed += 1
    return frames[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--images", default=None)
    parser.add_argument("--size", default="192x341", help="HxW after the aspect-keeping resize")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    frames = load_frames(args.frames, args.images)
    src_h, src_w = frames[0].shape[:2]
    reference = [np.asarray(Image.fromarray(f).resize((w, h), Image.LANCZOS)) for f in frames]
    print(f"{len(frames)} frames {src_h}x{src_w} → {h}x{w}, 1 thread")
    cv2.setNumThreads(1)
    for name, flag in (("area", cv2.INTER_AREA), ("linear", cv2.INTER_LINEAR)):
        start = time.perf_counter()
        out = [cv2.resize(f, (w, h), interpolation=flag) for f in frames]
        elapsed = time.perf_counter() - start
        quality = np.mean([psnr(o, r) for o, r in zip(out, reference)])
        print(f"  {name:6s}: {len(frames) / elapsed:8.0f} frames/s   PSNR vs Lanczos {quality:5.2f} dB")
    start = time.perf_counter()
    for f in frames:
        cv2.imdecode(cv2.imencode(".jpg", f)[1], cv2.IMREAD_COLOR)
    rate = len(frames) / (time.perf_counter() - start)
    print(f"  (for scale: JPEG encode+decode at source size {rate:.0f} frames/s)")


if __name__ == "__main__":
    main()
