"""Writing real videos with PyAV (FFmpeg): H.264 or MPEG-4 in .mp4, VP9 in .webm — for samples, test fixtures and
the simulator's `unisim rollout`. PyAV is imported when a video is written (the `samples` extra installs it)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

CODECS = {"h264": "libx264", "mpeg4": "mpeg4", "vp9": "libvpx-vp9"}


def write_video(path: str, frames: Iterable[np.ndarray], fps: float, codec: str = "h264",
                keyframe_seconds: float = 2.0, faststart: bool = False) -> str:
    """Encodes RGB uint8 frames (all one even size) at `fps`; a keyframe every `keyframe_seconds`, as cameras do.

    MP4 puts its index (`moov`) after the frames unless `faststart`, which moves it to the front as web
    downloads usually have it; a file cut short then still opens and decodes up to the cut."""
    import fractions

    import av

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(path, "w", options=options) as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(CODECS[codec], rate=fractions.Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"g": str(max(1, round(keyframe_seconds * fps)))}
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return path
