"""`unisim convert` on videos against the practical limit: a bare decode → resize → encode loop in one process.

Writes a fixed set of videos once (H.264, 30 fps, a keyframe every 2 s as cameras write them, textured content
panning so the encoder has real work), and a `video_captions` table with one row per 2 s of every video (dense,
like Ego4D narrations). Then, in one run:

1. `unisim convert --dataset video_captions --fps 10` as a user runs it (the whole command: interpreter start,
   pipeline, shards, manifest), with `--direct_num_workers` 1 and 2 (locally: clip threads in one Beam worker);
2. the bare loop over exactly the frames those records hold: for each video, one OpenCV capture read
   front to back (`grab()` every frame, `retrieve()` the needed ones), then the pipeline's own resize and JPEG
   encode (`pipelines.frames.process`), one thread, no Beam;
3. memory: RSS of one process reading `--memory_windows` clip windows through `VideoFrames`, sampled as it goes.

    python bench/video_convert_throughput.py [--videos 8] [--seconds 40] [--height 360] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np


def write_videos(folder: str, count: int, seconds: float, height: int) -> list[str]:
    from unisim.fileio.video import write_video

    width = (height * 16 // 9) // 2 * 2
    rng = np.random.default_rng(0)
    paths = []
    for v in range(count):
        path = os.path.join(folder, f"video{v:03d}.mp4")
        paths.append(path)
        if os.path.exists(path):
            continue
        texture = cv2_resize(rng.integers(0, 255, (height // 8, width // 4, 3), np.uint8), (width * 2, height))
        frames = (np.roll(texture, -4 * t, axis=1)[:, :width] for t in range(int(seconds * 30)))
        partial = path[: -len(".mp4")] + ".partial.mp4"  # the container is chosen by the extension
        write_video(partial, frames, 30, "h264", keyframe_seconds=2.0)
        os.replace(partial, path)
    return paths


def cv2_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)


def write_table(path: str, videos: list[str], seconds: float) -> int:
    rows = 0
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "caption", "start", "end"])
        for v, video in enumerate(videos):
            for k in range(int(seconds // 2)):
                writer.writerow([os.path.basename(video), f"segment {k} of video {v}", 2 * k, 2 * k + 2])
                rows += 1
    return rows


def run_convert(table: str, output: str, workers: int) -> tuple[float, int, int]:
    """(wall seconds, frames in records, records) of the whole `unisim convert` command."""
    shutil.rmtree(output, ignore_errors=True)
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "unisim.cli", "convert", "--dataset", "video_captions",
                             "--source", table, "--output", output, "--fps", "10",
                             "--direct_num_workers", str(workers)], capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    from unisim.shards import reader

    manifest = reader.read_manifest(output)
    frames = sum(r.num_frames for r in reader.iter_records(output, manifest))
    return elapsed, frames, manifest.records


def needed_frames(output: str) -> dict[str, list[int]]:
    """Source video → the frame indices the records hold, in decode order (one entry per record frame)."""
    from unisim.shards import reader

    by_video = collections.defaultdict(list)
    for record in reader.iter_records(output):
        by_video[record.source_file].extend(int(i) for i in record.frame_indices)
    return {video: sorted(indices) for video, indices in sorted(by_video.items())}


def bare_loop(by_video: dict[str, list[int]]) -> tuple[float, int]:
    """(CPU-bound wall seconds, frames encoded): decode front to back, resize and encode what the records hold."""
    import cv2

    from unisim.pipelines.frames import FrameSpec, process

    cv2.setNumThreads(1)
    spec = FrameSpec()
    start, encoded = time.monotonic(), 0
    for video, indices in by_video.items():
        capture = cv2.VideoCapture(video, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        wanted = collections.Counter(indices)
        for frame in range(max(indices) + 1):
            capture.grab()
            if frame in wanted:
                _, bgr = capture.retrieve()
                data = process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), spec)
                encoded += wanted[frame]  # a frame two records hold is encoded once, counted for each
                assert data
        capture.release()
    return time.monotonic() - start, encoded


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_over_windows(videos: list[str], windows: int) -> list[tuple[int, float]]:
    """RSS after every tenth of `windows` clip windows (20 frames at 10 fps from 30 fps) over the videos."""
    from unisim.adapters import video as video_io

    samples, done = [], 0
    info = {v: video_io.probe(v) for v in videos}
    while done < windows:
        for v in videos:
            frames = info[v].frames
            first = (done * 97) % max(1, frames - 60)  # scattered, so windows seek as well as continue
            window = video_io.VideoFrames(v, first, 60)
            for i in range(0, 60, 3):
                window[i]
            window.finished()
            done += 1
            if done % max(1, windows // 10) == 0:
                samples.append((done, rss_mib()))
            if done >= windows:
                break
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=360.0)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--memory_windows", type=int, default=500)
    parser.add_argument("--workdir", default="/tmp/unisim-bench-video")
    args = parser.parse_args()

    folder = os.path.join(args.workdir, f"videos-{args.videos}x{args.seconds:g}s-{args.height}p")
    os.makedirs(folder, exist_ok=True)
    start = time.monotonic()
    videos = write_videos(folder, args.videos, args.seconds, args.height)
    table = os.path.join(folder, "captions.csv")
    rows = write_table(table, videos, args.seconds)
    print(f"machine: {os.cpu_count()} cores; {len(videos)} videos of {args.seconds:g} s, H.264 {args.height}p 30 fps, "
          f"{rows} caption rows (set up in {time.monotonic() - start:.1f} s)")

    results = {}
    for workers in args.workers:
        elapsed, frames, records = run_convert(table, os.path.join(args.workdir, f"out-{workers}"), workers)
        results[workers] = frames / elapsed
        print(f"unisim convert, {workers} worker(s): {elapsed:.1f} s, {records} records, {frames} frames, "
              f"{frames / elapsed:.0f} frames/s")
    by_video = needed_frames(os.path.join(args.workdir, f"out-{args.workers[0]}"))
    elapsed, frames = bare_loop(by_video)
    bare = frames / elapsed
    print(f"bare loop, 1 process: {elapsed:.1f} s, {frames} frames, {bare:.0f} frames/s")
    for workers, rate in results.items():
        print(f"  convert with {workers} worker(s) / bare loop: {rate / bare:.2f}x")
    if 1 in results and len(results) > 1:
        for workers, rate in results.items():
            if workers != 1:
                print(f"  speed-up of {workers} workers over 1: {rate / results[1]:.2f}x")
    if args.memory_windows:
        samples = memory_over_windows(videos, args.memory_windows)
        first, last = samples[0][1], samples[-1][1]
        print(f"memory: RSS {first:.0f} MiB after {samples[0][0]} windows, {last:.0f} MiB after {samples[-1][0]} "
              f"({100 * (last - first) / first:+.1f} %); samples " + json.dumps([round(m) for _, m in samples]))


if __name__ == "__main__":
    main()
