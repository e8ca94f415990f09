"""Records/s of `unisim convert` for the image-text and navigation adapters, on generated sets in their layouts.

- laion: `--images` JPEGs of 512×384 (textured) with captions in img2dataset tars of 1,000;
- r2r: `--scans` scans of 8 viewpoints with 512×512 skybox faces and 3 paths of 4 viewpoints each: per scan 9 path
  episodes and 4 rotation episodes for each of the 6 viewpoints on a path;
- habitat_objectnav: `--demos` demonstrations of 40 steps with 256×320 observations.

Whole `unisim convert` commands on the local runner, 1 clip thread (the demo's setting), timed end to end,
start-up included (about 3 s of imports and pipeline set-up).

    python bench/image_nav_throughput.py [--images 2000] [--scans 4] [--demos 40] [--workdir /tmp/unisim-bench-nav]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

import numpy as np



def _jpeg(rng, height: int, width: int) -> bytes:
    import cv2

    small = rng.integers(0, 255, (height // 8, width // 8, 3), np.uint8)
    return cv2.imencode(".jpg", cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))[1].tobytes()


def write_laion(root: str, images: int, height: int = 384, width: int = 512) -> None:
    rng = np.random.default_rng(0)
    os.makedirs(root, exist_ok=True)
    for shard in range(0, images, 1000):
        with tarfile.open(os.path.join(root, f"{shard // 1000:05d}.tar"), "w") as archive:
            for i in range(shard, min(images, shard + 1000)):
                for ext, data in ((".jpg", _jpeg(rng, height, width)), (".txt", f"picture number {i}".encode())):
                    info = tarfile.TarInfo(f"{i:09d}{ext}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))


def write_r2r(root: str, scans: int, face_size: int = 512) -> None:
    from unisim.samples.fixtures import navigation as nf

    rng = np.random.default_rng(1)
    entries = []
    for s in range(scans):
        scan = f"scan{s}"
        ids = [f"{s:02x}{v:030x}" for v in range(8)]
        folder = os.path.join(root, "data", "v1", "scans", scan, "matterport_skybox_images")
        os.makedirs(folder, exist_ok=True)
        os.makedirs(os.path.join(root, "connectivity"), exist_ok=True)
        graph = [{"image_id": pid, "pose": nf.pose(11.0 * v, v % 4 * 2.0, v // 4 * 2.0), "included": True}
                 for v, pid in enumerate(ids)]
        with open(os.path.join(root, "connectivity", f"{scan}_connectivity.json"), "w") as f:
            json.dump(graph, f)
        for pid in ids:
            for face in range(6):
                with open(os.path.join(folder, f"{pid}_skybox{face}_sami.jpg"), "wb") as f:
                    f.write(_jpeg(rng, face_size, face_size))
        for p in range(3):
            path = [ids[(p + k) % 8] for k in range(4)]
            entries.append({"distance": 6.0, "scan": scan, "path_id": s * 10 + p, "path": path, "heading": 0.3,
                            "instructions": [f"walk along path {p}", "go on", "stop there"]})
    os.makedirs(os.path.join(root, "tasks", "R2R", "data"), exist_ok=True)
    with open(os.path.join(root, "tasks", "R2R", "data", "R2R_train.json"), "w") as f:
        json.dump(entries, f)


def write_habitat(root: str, demos: int) -> None:
    rng = np.random.default_rng(2)
    base = os.path.join(root, "train")
    os.makedirs(os.path.join(base, "content"), exist_ok=True)
    with gzip.open(os.path.join(base, "train.json.gz"), "wt") as f:
        json.dump({"episodes": []}, f)
    actions = ["MOVE_FORWARD", "TURN_LEFT", "TURN_RIGHT", "LOOK_UP", "LOOK_DOWN"]
    episodes = []
    for d in range(demos):
        replay = [{"action": "STOP"}] + [{"action": actions[t % 5]} for t in range(38)] + [{"action": "STOP"}]
        folder = os.path.join(base, "rgb", "scene0", str(d))
        os.makedirs(folder, exist_ok=True)
        for t in range(len(replay)):
            with open(os.path.join(folder, f"{t:04d}.jpg"), "wb") as f:
                f.write(_jpeg(rng, 256, 320))
        episodes.append({"episode_id": str(d), "object_category": "chair", "reference_replay": replay})
    with gzip.open(os.path.join(base, "content", "scene0.json.gz"), "wt") as f:
        json.dump({"episodes": episodes}, f)


def convert(dataset: str, source: str, output: str) -> tuple[float, int]:
    shutil.rmtree(output, ignore_errors=True)
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "unisim.cli", "convert", "--dataset", dataset, "--source", source,
                             "--output", output], capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    manifest = json.load(open(os.path.join(output, "manifest.json")))
    return elapsed, manifest["records"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--scans", type=int, default=4)
    parser.add_argument("--demos", type=int, default=40)
    parser.add_argument("--workdir", default="/tmp/unisim-bench-nav")
    args = parser.parse_args()
    sets = {"laion": (write_laion, args.images), "r2r": (write_r2r, args.scans),
            "habitat_objectnav": (write_habitat, args.demos)}
    print(f"machine: {os.cpu_count()} cores; whole `unisim convert` command, local runner, 1 clip thread")
    print(f"{'adapter':18s} {'records':>8s} {'seconds':>8s} {'records/s':>10s} {'frames/record':>14s}")
    for dataset, (write, size) in sets.items():
        source = os.path.join(args.workdir, f"{dataset}-{size}")
        if not os.path.exists(source + ".done"):
            shutil.rmtree(source, ignore_errors=True)
            write(source, size)
            open(source + ".done", "w").close()
        seconds, records = convert(dataset, source, os.path.join(args.workdir, f"out-{dataset}"))
        manifest = json.load(open(os.path.join(args.workdir, f"out-{dataset}", "manifest.json")))
        print(f"{dataset:18s} {records:8d} {seconds:8.1f} {records / seconds:10.1f} "
              f"{str(manifest['frames_per_record']):>14s}")


if __name__ == "__main__":
    main()
