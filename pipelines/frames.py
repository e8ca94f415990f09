"""Frame processing: decode → resize keeping the aspect ratio → fit the stored size → encode. OpenCV only."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from unisim.fileio import images
from unisim.schemas.options import option

INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}
# What it protects: shards and every reader's memory from a mistyped --height/--width (the cascade ends at 192×320;
# 4096 leaves room for 4K).
MAX_STORED_FRAME_SIDE = 4096


class FrameError(ValueError):
    """A frame could not be used; `reason` is the dead-letter code: missing_image, truncated_image,
    undecodable_image."""

    def __init__(self, message: str, reason: str = "undecodable_image"):
        super().__init__(message)
        self.reason = reason


# A JPEG ends with the EOI marker. Inside entropy-coded data 0xFF is always stuffed (FF 00) or a restart marker,
# so FF D9 near the end means the file is complete; a little slack allows padding some writers append.
_JPEG_START, _JPEG_END, _JPEG_END_SLACK = b"\xff\xd8", b"\xff\xd9", 64


@dataclasses.dataclass(frozen=True)
class FrameSpec:
    """How frames are stored: `height`×`width` RGB, encoded as `image_format`.

    `fit="crop"` scales so the image covers the stored size, then cuts the centre (no borders, loses edges);
    `fit="pad"` scales so it fits inside and pads with black (keeps everything, adds borders).
    """

    height: int = option(192, "stored frame height: 192×320 is the largest size the cascade needs (the paper's "
                              "second super-resolution stage)")
    width: int = option(320, "stored frame width")
    fit: str = option("crop", "fit to the stored size by centre crop (loses edges) or by padding with black",
                      choices=("crop", "pad"))
    interpolation: str = option("area", "resize filter (docs/reliability.md, 'Resize filter')",
                                choices=("area", "linear"))
    image_format: str = option("jpeg", "how stored frames are encoded", choices=("jpeg", "png"))
    jpeg_quality: int = option(95, "JPEG quality of stored frames, 1–100")

    def __post_init__(self):
        if not (0 < self.height <= MAX_STORED_FRAME_SIDE and 0 < self.width <= MAX_STORED_FRAME_SIDE):
            raise ValueError(f"stored frame size must be 1 to {MAX_STORED_FRAME_SIDE} pixels a side, got "
                             f"{self.height}x{self.width}")
        if self.fit not in ("crop", "pad"):
            raise ValueError(f"fit must be 'crop' or 'pad', got {self.fit!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.image_format not in ("jpeg", "png"):
            raise ValueError(f"image_format must be 'jpeg' or 'png', got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")


def decode_rgb(frame: bytes | np.ndarray) -> np.ndarray:
    """Encoded bytes or an array → uint8 RGB [H, W, 3]; raises FrameError if that is impossible."""
    if isinstance(frame, np.ndarray):
        image = frame
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8 or 0 in image.shape:
            raise FrameError(f"frame array must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
        return image
    if len(frame) == 0:
        raise FrameError("the source has no bytes for this frame", "missing_image")
    if frame[:2] == _JPEG_START and _JPEG_END not in frame[-_JPEG_END_SLACK:]:
        raise FrameError(f"JPEG of {len(frame)} bytes has no end-of-image marker: the file is cut short",
                         "truncated_image")
    try:  # the gate: the header's size against the pixel limit before decoding; decoder errors become reasons
        bgr = images.decode(frame, cv2.IMREAD_COLOR)
    except images.ImageError as e:
        raise FrameError(str(e), e.reason) from None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def resize(image: np.ndarray, spec: FrameSpec) -> np.ndarray:
    """Scales `image` keeping its aspect ratio, then crops or pads it to exactly `spec.height`×`spec.width`."""
    h, w = image.shape[:2]
    cover = spec.fit == "crop"
    scale = (max if cover else min)(spec.height / h, spec.width / w)
    if cover:
        new_h, new_w = max(spec.height, round(h * scale)), max(spec.width, round(w * scale))
    else:
        new_h, new_w = min(spec.height, max(1, round(h * scale))), min(spec.width, max(1, round(w * scale)))
    if (new_h, new_w) != (h, w):
        # INTER_AREA averages source pixels when shrinking (no aliasing); when enlarging it behaves like linear.
        image = cv2.resize(image, (new_w, new_h), interpolation=INTERPOLATIONS[spec.interpolation])
    if cover:
        top, left = (new_h - spec.height) // 2, (new_w - spec.width) // 2
        return np.ascontiguousarray(image[top : top + spec.height, left : left + spec.width])
    out = np.zeros((spec.height, spec.width, 3), np.uint8)
    top, left = (spec.height - new_h) // 2, (spec.width - new_w) // 2
    out[top : top + new_h, left : left + new_w] = image
    return out


def encode(image: np.ndarray, spec: FrameSpec) -> bytes:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if spec.image_format == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality])
    else:
        ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise FrameError(f"OpenCV could not encode a {image.shape} frame as {spec.image_format}")
    return buf.tobytes()


def process(frame: bytes | np.ndarray, spec: FrameSpec) -> bytes:
    """One source frame → stored encoded bytes."""
    return encode(resize(decode_rgb(frame), spec), spec)
