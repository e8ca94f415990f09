"""OpenCV against PyAV for the convert pipeline's video work: decode → keep 1 frame in 3 (30 → 10 fps) → resize to
192×320 → JPEG, one thread, on H.264 640×360, H.264 1920×1080 and VP9 426×240; and seeking to short clips
inside a long video. Prints frames/s (kept frames per wall second, one process, decoder threads = 1).

    python bench/video_decode.py [--workdir /tmp/unisim-bench-video] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np

SIZE = (192, 320)


def synthetic(t: int, height: int, width: int, rng) -> np.ndarray:
    """A moving gradient with texture: compresses like camera footage more than flat colour does."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([(x + 3 * t) % 256, (y + 2 * t) % 256, ((x + y) // 2 + t) % 256], -1).astype(np.uint8)
    noise = rng.integers(0, 24, (height // 8, width // 8, 3), dtype=np.uint8)
    return cv2.add(frame, cv2.resize(noise, (width, height), interpolation=cv2.INTER_NEAREST))


def write(path: str, codec: str, height: int, width: int, fps: int, frames: int) -> str:
    from unisim.fileio.video import write_video

    if not os.path.exists(path):
        rng = np.random.default_rng(0)
        write_video(path, (synthetic(t, height, width, rng) for t in range(frames)), fps, codec)
    return path


def finish(rgb: np.ndarray) -> bytes:
    from unisim.pipelines import frames

    return frames.encode(frames.resize(rgb, frames.FrameSpec()), frames.FrameSpec())


def opencv_all(path: str, step: int) -> int:
    # Threads must be set when opening: set() afterwards is ignored, and the default is one per core.
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    kept = index = 0
    while capture.grab():
        if index % step == 0:
            ok, bgr = capture.retrieve()
            finish(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            kept += 1
        index += 1
    return kept


def pyav_all(path: str, step: int, scaled: bool) -> int:
    import av

    kept = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        for index, frame in enumerate(container.decode(stream)):
            if index % step:
                continue
            if scaled:  # swscale converts and shrinks in one pass, to the size the crop then needs
                scale = max(SIZE[0] / frame.height, SIZE[1] / frame.width)
                rgb = frame.to_ndarray(format="rgb24", width=round(frame.width * scale),
                                       height=round(frame.height * scale), interpolation="AREA")
            else:
                rgb = frame.to_ndarray(format="rgb24")
            finish(rgb)
            kept += 1
    return kept


def opencv_seek(path: str, starts: list[int], length: int, step: int) -> int:
    # Threads must be set when opening: set() afterwards is ignored, and the default is one per core.
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    kept = 0
    for start in starts:
        capture.set(cv2.CAP_PROP_POS_FRAMES, start)
        for i in range(length):
            if not capture.grab():
                break
            if i % step == 0:
                finish(cv2.cvtColor(capture.retrieve()[1], cv2.COLOR_BGR2RGB))
                kept += 1
    return kept


def pyav_seek(path: str, starts: list[int], length: int, step: int) -> int:
    import av

    kept = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        rate = float(stream.average_rate)
        for start in starts:
            container.seek(int(start / rate / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                index = round(float(frame.pts * stream.time_base) * rate)
                if index >= start + length:
                    break
                if index >= start and (index - start) % step == 0:
                    finish(frame.to_ndarray(format="rgb24"))
                    kept += 1
    return kept


def timed(fn, *args) -> tuple[int, float, float]:
    """(kept frames, wall seconds, CPU seconds of this process: all its threads)."""
    start, cpu = time.perf_counter(), time.process_time()
    kept = fn(*args)
    return kept, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/unisim-bench-video")
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    cv2.setNumThreads(1)
    s = args.seconds
    videos = {
        "h264 640x360 30fps": (write(f"{args.workdir}/360p-{s}s.mp4", "h264", 360, 640, 30, 30 * s), 3),
        "h264 1920x1080 30fps": (write(f"{args.workdir}/1080p-{s // 2}s.mp4", "h264", 1080, 1920, 30, 15 * s), 3),
        "vp9 426x240 12fps": (write(f"{args.workdir}/240p-{s}s.webm", "vp9", 240, 426, 12, 12 * s), 1),
    }
    print(f"machine: {os.cpu_count()} cores; one process, decoder and OpenCV threads = 1; kept frames per wall "
          "second and per CPU second")
    for name, (path, step) in videos.items():
        row = [name]
        for label, fn, extra in (("opencv grab/retrieve", opencv_all, ()), ("pyav", pyav_all, (False,)),
                                 ("pyav + swscale shrink", pyav_all, (True,))):
            kept, seconds, cpu = timed(fn, path, step, *extra)
            row.append(f"{label} {kept / seconds:6.1f}/s ({kept / cpu:6.1f}/cpu-s)")
        print(" | ".join(row))
    path = videos["h264 1920x1080 30fps"][0]
    frames = 15 * s
    starts = [int(x) for x in np.linspace(0, frames - 61, 6)]
    for label, fn in (("opencv seek", opencv_seek), ("pyav seek", pyav_seek)):
        kept, seconds, cpu = timed(fn, path, starts, 60, 3)
        print(f"1080p, 6 clips of 2 s, 30→10 fps: {label} {kept} frames, {kept / seconds:.1f}/s "
              f"({kept / cpu:.1f}/cpu-s)")


if __name__ == "__main__":
    main()
