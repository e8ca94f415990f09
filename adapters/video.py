"""Video sources for adapters: probing, and `VideoFrames`, a lazily decoded, forward-reading window of a video.

Decoding is OpenCV's FFmpeg backend, chosen by `bench/video_decode.py` (README, "Video decoding"): on one thread it
matched or beat PyAV on H.264 360p and VP9 240p (the bulk of human-activity video), and PyAV's gains at 1080p
(8 % with swscale shrinking, 24 % when seeking) did not pay for a second decoding path. PyAV is used only to write
fixture and sample videos (H.264, VP9), which OpenCV's wheels cannot encode.

What makes it scale:
- one `VideoFrames` per episode (a clip's time window), decoded only when the pipeline asks for a frame, always
  forward: the pipeline visits frame indices in increasing order, so a frame it skips (a lower `--fps`) costs a
  `grab()` (no colour conversion, no copy), and nothing before the window is decoded after one seek;
- nothing is held: one frame at a time, the capture released when the window is done (or collected), so memory is
  flat however long the video and however many videos a worker reads;
- many annotations of one video (Ego4D narrations, EPIC segments) are windows read one after another in time
  order: a finished window leaves its decoder open ("parked", one per process), and the next window on the same
  video that starts a little later decodes forward from there instead of reopening and seeking;
- a remote video (gs://) is copied once to local scratch, because FFmpeg needs a real path; the copy is removed
  once windows have moved on to another video (`LocalCopies`).
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import os
import struct
import tempfile
import threading
from collections.abc import Sequence

import numpy as np

from unisim import fileio
from unisim.adapters.base import FrameUnavailable


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    fps: float
    frames: int  # as the container states it; a file cut short decodes fewer
    height: int
    width: int


@functools.cache  # the set-up once per process: this is called for every decoded frame
def _cv2():
    # FFmpeg's own messages about damaged files would flood worker logs; damage is reported as a rejection with a
    # reason instead. Set OPENCV_FFMPEG_LOGLEVEL=24 (warnings) to see them.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    if "OPENCV_LOG_LEVEL" not in os.environ:  # nor OpenCV's "can't open" warning per damaged file
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

    cv2.setNumThreads(1)
    return cv2


def open_capture(path: str):
    """An OpenCV capture with one decoder thread (runners run one worker per core already); None if unopenable."""
    cv2 = _cv2()
    # The thread count only takes effect when given at open; the default is one thread per core.
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    if not capture.isOpened():
        capture.release()
        return None
    return capture


class LocalCopies:
    """Remote videos copied to local scratch and shared by the windows reading them.

    A copy no window uses is kept until another copy falls idle (so `probe` and the window that follows it share
    one download), then removed; at most one idle copy exists per process, and it is removed at exit.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._copies: dict[str, tuple[str, int]] = {}  # remote path → (local path, windows using it)
        self._idle = ""  # the remote path whose copy is kept though unused
        atexit.register(self.clear)

    def acquire(self, path: str) -> str:
        if not fileio.is_remote(path):
            return path
        with self._lock:
            local, users = self._copies.get(path, ("", 0))
            if not local:
                handle, local = tempfile.mkstemp(prefix="unisim-video-", suffix=os.path.splitext(path)[1])
                os.close(handle)
                fileio.fetch(path, local)
            if self._idle == path:
                self._idle = ""
            self._copies[path] = (local, users + 1)
            return local

    def release(self, path: str) -> None:
        if not fileio.is_remote(path):
            return
        with self._lock:
            local, users = self._copies[path]
            self._copies[path] = (local, users - 1)
            if users - 1 == 0:
                if self._idle and self._idle != path:
                    self._remove(self._idle)
                self._idle = path

    def _remove(self, path: str) -> None:
        local, _ = self._copies.pop(path)
        if os.path.exists(local):
            os.remove(local)

    def clear(self) -> None:
        with self._lock:
            for path in [p for p, (_, users) in self._copies.items() if users == 0]:
                self._remove(path)
            self._idle = ""


COPIES = LocalCopies()

# Up to this many seconds ahead, decoding forward from a parked decoder is preferred to reopening and seeking:
# a seek decodes from the keyframe before the target anyway (camera footage has keyframes every 0.5-2 s), and
# reopening costs a container parse on top.
FORWARD_SECONDS = 2.0


class _Parked:
    """The decoder a finished window left open, with its position, one per thread (a runner's threads each read
    their own videos); taken by the next window of that thread that can use it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._slots: dict[int, tuple] = {}  # thread id → (path, capture, next frame, frames it may skip forward)
        atexit.register(self.drop)

    @property
    def _slot(self):
        return self._slots.get(threading.get_ident())

    def put(self, path: str, capture, next_frame: int) -> None:
        reach = int(FORWARD_SECONDS * max(capture.get(_cv2().CAP_PROP_FPS), 1.0))
        with self._lock:
            previous = self._slots.get(threading.get_ident())
            self._slots[threading.get_ident()] = (path, capture, next_frame, reach)
        if previous is not None:
            _release(previous[0], previous[1])

    def take(self, path: str, frame: int):
        """(capture, next frame) if this thread's parked decoder is on `path` at or a little before `frame`."""
        with self._lock:
            slot = self._slots.get(threading.get_ident())
            if slot is None:
                return None
            parked_path, capture, next_frame, reach = slot
            if parked_path != path or not next_frame <= frame <= next_frame + reach:
                return None
            del self._slots[threading.get_ident()]
            return capture, next_frame

    def drop(self) -> None:
        """Releases every parked decoder (all threads')."""
        with self._lock:
            slots, self._slots = list(self._slots.values()), {}
        for path, capture, _, _ in slots:
            _release(path, capture)


def _release(path: str, capture) -> None:
    capture.release()
    COPIES.release(path)


PARKED = _Parked()


def probe(path: str) -> VideoInfo | None:
    """fps, frame count and size from the container, or None when the file does not open as a video."""
    cv2 = _cv2()
    local = COPIES.acquire(path)
    try:
        capture = open_capture(local)
        if capture is None:
            return None
        info = VideoInfo(fps=float(capture.get(cv2.CAP_PROP_FPS)), frames=int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
                         height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                         width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)))
        capture.release()
        return info if info.fps > 0 and info.width > 0 else None
    finally:
        COPIES.release(path)


def mp4_truncation(path: str) -> str | None:
    """Why an MP4/MOV file that does not open is damaged, when it is a download cut short: its top-level boxes
    run past the end of the file (and the index, `moov`, usually written last, is lost). None otherwise."""
    seen = []
    with fileio.open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        position = 0
        while position + 8 <= size:
            f.seek(position)
            header = f.read(16)
            box_size, kind = struct.unpack(">I4s", header[:8])
            if box_size == 1 and len(header) == 16:
                box_size = struct.unpack(">Q", header[8:16])[0]
            elif box_size == 0:  # "to the end of the file"
                box_size = size - position
            name = kind.decode("latin-1")
            if box_size < 8 or (not seen and name != "ftyp"):
                return None  # not an MP4 box structure
            if position + box_size > size:
                missing = "" if "moov" in seen else "; its index ('moov') is missing"
                return f"the file ends inside its '{name}' box ({size - position} of {box_size} bytes){missing}"
            seen.append(name)
            position += box_size
    return None


class VideoFrames(Sequence):
    """Frames `first … first+count-1` of a video as RGB arrays, decoded on demand (see the module docstring).

    Indexing forward is the fast path; going back reopens and seeks. A frame the file cannot produce (it ends
    early) raises `FrameUnavailable("truncated_video")`.
    """

    def __init__(self, path: str, first: int, count: int):
        self.path, self.first, self.count = path, int(first), int(count)
        self._capture = None
        self._next = 0  # the source frame the capture will decode next
        self._local = ""

    def __len__(self) -> int:
        return self.count

    @property
    def decoder_key(self) -> str:
        """Windows with the same key can share a decoder: the pipeline runs them on one thread, in order."""
        return self.path

    def _open(self, frame: int) -> None:
        cv2 = _cv2()
        self.close()
        parked = PARKED.take(self.path, frame)
        if parked is not None:  # the copy reference travels with the decoder
            self._capture, self._next = parked
            return
        self._local = COPIES.acquire(self.path)
        self._capture = open_capture(self._local)
        if self._capture is None:
            raise FrameUnavailable(f"{self.path} does not open as a video", "undecodable_video")
        if frame > 0:  # FFmpeg seeks to the keyframe before and decodes forward to the exact frame
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
        self._next = frame

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        if not 0 <= index < self.count:
            raise IndexError(index)
        cv2 = _cv2()
        frame = self.first + index
        if self._capture is None or frame < self._next:
            self._open(frame)
        while self._next <= frame:
            if not self._capture.grab():
                self.close()
                raise FrameUnavailable(f"{self.path} ends before frame {frame}", "truncated_video")
            self._next += 1
        ok, bgr = self._capture.retrieve()
        if not ok or bgr is None:
            raise FrameUnavailable(f"{self.path}: frame {frame} does not decode", "truncated_video")
        if index == self.count - 1:
            self.close(park=True)  # the window is done: hand the decoder on now, not at collection
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def finished(self) -> None:
        """The caller needs no more frames from this window (it may have stopped before the last)."""
        self.close(park=True)

    def close(self, park: bool = False) -> None:
        if self._capture is not None:
            capture, self._capture = self._capture, None
            if park:
                PARKED.put(self.path, capture, self._next)
            else:
                _release(self.path, capture)

    def __del__(self):
        self.close()

    def __getstate__(self):  # an open decoder does not travel between processes; the window does
        return {"path": self.path, "first": self.first, "count": self.count}

    def __setstate__(self, state):
        self.__init__(state["path"], state["first"], state["count"])
