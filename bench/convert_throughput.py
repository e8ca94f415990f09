"""Convert throughput: episodes/s, frames/s and bytes per record of the tabletop sample, 1 and 2 local workers.

Generates the tabletop sample (Language Table RLDS format) once, then times `unisim convert` end to end — process
start, pipeline construction, reading TFDS, decode/resize/encode, statistics, shards and manifest — as a user sees it.

    python bench/convert_throughput.py [--episodes 40] [--workers 1 2] [--workdir /tmp/unisim-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--max_steps", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", default="/tmp/unisim-bench")
    args = parser.parse_args()
    from unisim.samples import tabletop

    source_root = os.path.join(args.workdir, f"source-{args.episodes}x{args.max_steps}")
    builder_parent = os.path.join(source_root, "language_table_tabletop_sim")
    if not os.path.isdir(builder_parent):
        start = time.monotonic()
        tabletop.write_sample(source_root, num_episodes=args.episodes, max_steps=args.max_steps, num_shards=8)
        print(f"sample: {args.episodes} episodes written in {time.monotonic() - start:.1f} s")
    print(f"machine: {os.cpu_count()} cores")
    for workers in args.workers:
        output = os.path.join(args.workdir, f"out-{workers}")
        shutil.rmtree(output, ignore_errors=True)
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "unisim.cli", "convert", "--dataset", "language_table", "--source", builder_parent,
             "--output", output, "--direct_num_workers", str(workers)], capture_output=True, text=True)
        elapsed = time.monotonic() - start
        if result.returncode:
            sys.exit(result.stderr[-3000:])
        manifest = json.load(open(os.path.join(output, "manifest.json")))
        frames_line = [line for line in result.stdout.splitlines() if "frames encoded" in line]
        frames = int(frames_line[0].split("(")[1].split()[0]) if frames_line else 0
        data_bytes = sum(s["bytes"] for s in manifest["shards"])
        print(f"workers={workers}: {elapsed:.1f} s wall, {manifest['source_episodes'] / elapsed:.2f} episodes/s, "
              f"{frames / elapsed:.1f} frames/s ({frames} frames, {manifest['records']} records), "
              f"{data_bytes / max(manifest['records'], 1) / 1024:.1f} KiB per record on disk")


if __name__ == "__main__":
    main()
