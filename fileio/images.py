"""The one gate every encoded image and frame passes before it is decoded (issue 21): its size is read from the very
bytes the decoder will decode, a pixel limit applies before anything is allocated, and every decoder failure is an
`ImageError` with a reason code (the dead-letter reason), never a crash.

Why not Pillow's header reader: Pillow refuses a PNG whose ancillary chunk has a bad CRC, while OpenCV decodes the
same bytes — a check done by one library and a decode by another can disagree on what the bytes are. The headers
here are parsed the way the decoders find them (PNG's IHDR, the JPEG frame header after the markers before it, GIF,
BMP, WebP), and OpenCV is also told the same limit (`OPENCV_IO_MAX_IMAGE_PIXELS`, read when it first decodes), so a
format not parsed here is still bounded by the decoder itself.
"""

from __future__ import annotations

import os
import struct

import numpy as np

# What every decode is protected against: a small file whose header promises a huge image (a decompression bomb).
DECOMPRESSION_BOMB_PIXELS = 89_478_485  # Pillow's own threshold (~ 9459 × 9459): far above any real frame
# OpenCV reads this once, when it first decodes an image: set before any decode in this process.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(DECOMPRESSION_BOMB_PIXELS))


class ImageError(ValueError):
    """Encoded bytes that will not be decoded; `reason` is the dead-letter code."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _png(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _SOF:
            if i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        if marker == 0xDA or length < 2:  # scan data before any frame header: not a JPEG a decoder accepts
            return None
        i += 2 + length
    return None


def _gif(data: bytes) -> tuple[int, int] | None:
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 10:
        return None
    return struct.unpack("<HH", data[6:10])


def _bmp(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"BM" or len(data) < 26:
        return None
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _webp(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header the decoder will read; None for a format not parsed here."""
    head = bytes(data[:64 * 1024])  # a JPEG's frame header follows its metadata segments: look a little further
    for parse in (_png, _jpeg, _gif, _bmp, _webp):
        size = parse(head)
        if size is not None:
            return size
    return None


def check(data: bytes, max_pixels: int = DECOMPRESSION_BOMB_PIXELS) -> tuple[int, int] | None:
    """The header's (width, height), after refusing empty data and sizes over `max_pixels` (`ImageError`)."""
    if len(data) == 0:
        raise ImageError("the source has no bytes for this image", "missing_image")
    size = image_size(data)
    if size is not None:
        width, height = size
        if width <= 0 or height <= 0:
            raise ImageError(f"image header states {width}×{height} pixels", "undecodable_image")
        if width * height > max_pixels:
            raise ImageError(f"image header states {width}×{height} = {width * height:,} pixels, over the limit "
                             f"of {max_pixels:,}", "image_too_large")
    return size


def decode(data: bytes, flags: int | None = None, max_pixels: int = DECOMPRESSION_BOMB_PIXELS) -> np.ndarray:
    """`cv2.imdecode` behind the gate: the size is checked first, and a decoder that fails or raises gives
    `ImageError("undecodable_image")`."""
    import cv2

    check(data, max_pixels)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR if flags is None else flags)
    except cv2.error as e:
        raise ImageError(f"the decoder refused {len(data)} bytes: {str(e).strip().splitlines()[-1]}",
                         "undecodable_image") from None
    if image is None:
        raise ImageError(f"{len(data)} bytes do not decode as an image (starts with {bytes(data[:8])!r})",
                         "undecodable_image")
    return image


# ---------------------------------------------------------------------------- frames at a size
# The one resize rule for frames that a model reads (training input, held-out clips, start frames, a world's frames,
# feature networks): INTER_AREA when shrinking — it averages the source pixels, so no aliasing — and INTER_LINEAR
# when enlarging (INTER_AREA enlarges like nearest neighbour). The conversion's own resize (`pipelines/frames.py`:
# aspect ratio kept, then crop or pad, with a user-chosen filter) makes the stored frames; this one only changes
# their size.

def resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 frames [..., h, w, 3] → [..., *size, 3] by the rule above; the input itself when already that size."""
    import cv2

    h, w = frames.shape[-3:-1]
    if (h, w) == tuple(size):
        return frames
    method = cv2.INTER_AREA if size[0] <= h and size[1] <= w else cv2.INTER_LINEAR
    if frames.ndim == 3:  # one frame (the loader's per-frame path): no stacking copy
        return cv2.resize(frames, (size[1], size[0]), interpolation=method)
    flat = frames.reshape(-1, h, w, 3)
    out = np.stack([cv2.resize(f, (size[1], size[0]), interpolation=method) for f in flat])
    return out.reshape(*frames.shape[:-3], *size, 3)

