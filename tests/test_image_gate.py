"""fileio/images.py: the gate before every decode — sizes read from the bytes the decoder will decode, the pixel
limit applied before any allocation, decoder failures as reasons (issue 21)."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from unisim.samples.fixtures import images as imf
from unisim.fileio import images


def _png_with_bad_text_crc(width: int, height: int) -> bytes:
    """The issue's bomb: a valid IHDR, then a tEXt chunk with a wrong CRC (Pillow refuses the header; OpenCV
    reads on)."""
    bomb = imf.png_bomb(width, height)
    text = b"Comment\0hello"
    bad = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", zlib.crc32(b"tEXt" + text) ^ 1)
    return bomb[:33] + bad + bomb[33:]


def test_sizes_come_from_the_headers_the_decoders_read():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (37, 53, 3), np.uint8)
    for ext in (".jpg", ".png", ".bmp", ".webp"):
        data = cv2.imencode(ext, image)[1].tobytes()
        assert images.image_size(data) == (53, 37), ext
        assert images.decode(data).shape == (37, 53, 3), ext
    progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert images.image_size(progressive) == (53, 37)
    assert images.image_size(b"not an image") is None


@pytest.mark.parametrize("width, height", [(30_000, 30_000), (100_000, 100_000)])
def test_bombs_are_refused_before_decoding(width, height):
    for data in (imf.png_bomb(width, height), _png_with_bad_text_crc(width, height)):
        with pytest.raises(images.ImageError) as caught:
            images.decode(data)
        assert caught.value.reason == "image_too_large" and f"{width}×{height}" in str(caught.value)
    with pytest.raises(images.ImageError, match="over the limit of 100"):
        images.check(imf.jpeg(20, 20), max_pixels=100)


def test_broken_bytes_are_reasons_not_crashes():
    with pytest.raises(images.ImageError) as caught:
        images.decode(b"")
    assert caught.value.reason == "missing_image"
    jpeg = imf.jpeg(32, 32)
    for broken in (jpeg[:40], b"\xff\xd8\xff\xe0" + b"\0" * 64, b"\x89PNG\r\n\x1a\n" + b"\0" * 40):
        with pytest.raises(images.ImageError) as caught:
            images.decode(broken)
        assert caught.value.reason == "undecodable_image"
