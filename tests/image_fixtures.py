"""Image-text fixtures in the official layouts (img2dataset webdataset output; COYO-style parquet + image files),
with planted bad items. Images are real JPEG/PNG bytes written by OpenCV."""

from __future__ import annotations

import io
import json
import os
import struct
import tarfile
import zlib

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def jpeg(height: int = 48, width: int = 64, seed: int = 0, ext: str = ".jpg") -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8)
    return cv2.imencode(ext, image)[1].tobytes()


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG whose header states width × height (here 900 Mpx) with a few bytes of data: decoding it would try to
    allocate the whole image. The CRCs are right, so only the size gives it away."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + chunk(b"IEND", b""))


def _add(archive: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime = len(data), kind, 0
    archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


# 00000.tar: 7 input rows succeeded, 2 failed. Counts the kit checks:
LAION_TAR_EXPECT = dict(
    episodes=4,  # 000000000 jpg, 000000001 png, 000000002 corrupt, 000000005 empty caption
    read_rejections={"download_failed": 2, "unsafe_archive_member": 3, "image_too_large": 1, "missing_image": 1},
    records=2,
    rejected_reasons={"download_failed": 2, "unsafe_archive_member": 3, "image_too_large": 1, "missing_image": 1,
                      "undecodable_image": 1, "empty_text": 1})


def write_img2dataset(root: str) -> str:
    """img2dataset `--output_format webdataset` output: 00000.tar, 00000.parquet, 00000_stats.json."""
    os.makedirs(root, exist_ok=True)
    with tarfile.open(os.path.join(root, "00000.tar"), "w", format=tarfile.USTAR_FORMAT) as archive:
        meta = lambda key, caption: json.dumps({"key": key, "caption": caption, "status": "success",  # noqa: E731
                                                "url": f"https://example.com/{key}.jpg"}).encode()
        _add(archive, "000000000.jpg", jpeg(seed=0))
        _add(archive, "000000000.txt", b"a red mug on a wooden table")
        _add(archive, "000000000.json", meta("000000000", "a red mug on a wooden table"))
        _add(archive, "000000001.png", jpeg(seed=1, ext=".png"))
        _add(archive, "000000001.txt", "Ein Hund im Schnee — ❄".encode())
        corrupt = jpeg(seed=2)
        _add(archive, "000000002.jpg", corrupt[:4] + bytes(range(256)) * 4 + corrupt[-2:])  # header and end kept
        _add(archive, "000000002.txt", b"a corrupt picture")
        _add(archive, "../../etc/evil.jpg", jpeg(seed=3))  # path traversal
        _add(archive, "/tmp/absolute.txt", b"an absolute path")
        _add(archive, "000000003.lnk", b"", tarfile.SYMTYPE)  # not a regular file
        _add(archive, "000000004.png", png_bomb())
        _add(archive, "000000004.txt", b"a decompression bomb")
        _add(archive, "000000005.jpg", jpeg(seed=5))
        _add(archive, "000000005.txt", b"   ")
        _add(archive, "000000006.txt", b"a caption whose image is missing")
        _add(archive, "000000006.json", meta("000000006", "a caption whose image is missing"))
    rows = [{"key": f"{i:09d}", "url": f"https://example.com/{i}.jpg", "caption": "", "status": "success",
             "error_message": None} for i in range(7)]
    rows += [{"key": "000000007", "url": "https://example.com/7.jpg", "caption": "gone", "status": "failed_to_download",
              "error_message": "HTTP Error 404: Not Found"},
             {"key": "000000008", "url": "https://example.com/8.jpg", "caption": "slow",
              "status": "failed_to_download", "error_message": "timed out"}]
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(root, "00000.parquet"))
    with open(os.path.join(root, "00000_stats.json"), "w") as f:
        json.dump({"count": 9, "successes": 7, "failed_to_download": 2}, f)
    return root


COYO_EXPECT = dict(episodes=2, read_rejections={"not_downloaded": 1}, records=2, rejected_reasons={"not_downloaded": 1})


def write_coyo_files(root: str) -> str:
    """A COYO-700M-style metadata parquet (`id`, `url`, `text`, `width`, `height`, `clip_similarity_vitb32`) with
    images saved as `<id>.jpg` beside it; one row's image was never downloaded."""
    os.makedirs(root, exist_ok=True)
    rows = []
    for i, text in enumerate(["a lighthouse at dusk", "two cats on a sofa", "a bicycle against a wall"]):
        rows.append({"id": 4_000_000 + i, "url": f"https://example.com/{i}.jpg", "text": text, "width": 64,
                     "height": 48, "clip_similarity_vitb32": 0.31})
        if i != 2:
            with open(os.path.join(root, f"{4_000_000 + i}.jpg"), "wb") as f:
                f.write(jpeg(seed=10 + i))
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(root, "coyo-part-00000.parquet"))
    return root
