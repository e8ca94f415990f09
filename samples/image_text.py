"""A small image-text sample in img2dataset's webdataset output layout, read by `adapters/laion.py`.

Each image is drawn procedurally: one to three coloured blocks, balls, cones or rings on a grey, wooden or
white table, captioned with what it shows, objects named left to right ("a red block and a blue ball on a
grey table"). Some input rows fail to download, as in any real img2dataset run: the parquet records them
(status `failed_to_download` and the error message) and the tar has no files for their keys.

Layout of `img2dataset --output_format webdataset` (img2dataset's README, "Output format choice"; docs/datasets.md),
one shard per `SHARD_SIZE` input rows:

    <root>/00000.tar          000000000.jpg, 000000000.json, 000000000.txt, 000000001.jpg, …
    <root>/00000.parquet      every input row: url, caption, key, status, error_message, width, height, …
    <root>/00000_stats.json   count, successes, failed_to_download, failed_to_resize, …, status_dict

Keys are `f"{shard * 10**4 + row:09d}"` as img2dataset numbers them; images are 256×256 JPEGs (its default
size and quality 95). The same seed gives the same bytes: drawing is seeded, tar members carry a fixed mtime and
the stats a fixed (made-up) run time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import cv2
import numpy as np

SIZE = 256  # img2dataset's default --image_size
SHARD_SIZE = 32  # its --number_sample_per_shard (default 10000): small, so the sample has several shards
FAILED_EVERY = 16  # about one row in 16 fails to download
COLORS = {"red": (210, 40, 40), "blue": (40, 80, 210), "green": (40, 160, 70), "yellow": (240, 210, 40),
          "orange": (245, 135, 30), "purple": (140, 60, 170), "black": (35, 35, 35), "white": (245, 245, 245)}
SHAPES = ("block", "ball", "cone", "ring")
TABLES = {"grey": (135, 135, 140), "wooden": (160, 115, 70), "white": (225, 222, 215)}
ERRORS = ("HTTP Error 404: Not Found", "HTTP Error 403: Forbidden", "The read operation timed out",
          "<urlopen error [Errno -2] Name or service not known>")
RUN_START = 1_700_000_000.0  # the stats' start_time: fixed, so the bytes depend on the seed only


def _draw(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One RGB image and its caption."""
    table = list(TABLES)[rng.integers(len(TABLES))]
    noise = cv2.GaussianBlur(rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32), (0, 0), 2)
    texture = 0.95 + 0.04 * noise
    if table == "wooden":  # grain along the planks
        texture += 0.05 * np.sin(np.arange(SIZE, dtype=np.float32) * 0.4 + 3 * np.sin(np.arange(SIZE) * 0.02))[:, None]
    image = (texture[..., None] * np.asarray(TABLES[table], np.float32)).clip(0, 255).astype(np.uint8)
    count = int(rng.integers(1, 4))
    slots = np.sort(rng.choice(3, count, replace=False))  # left, middle, right thirds: objects never overlap
    names = []
    for slot in slots:
        color = list(COLORS)[rng.integers(len(COLORS))]
        while color == table:  # a white ring on a white table would be invisible
            color = list(COLORS)[rng.integers(len(COLORS))]
        shape = SHAPES[rng.integers(len(SHAPES))]
        r = int(rng.integers(22, 34))
        cx, cy = int(SIZE * (slot + 0.5) / 3 + rng.integers(-8, 9)), int(rng.integers(110, 190))
        _draw_shape(image, shape, COLORS[color], cx, cy, r)
        names.append(f"{'an' if color[0] in 'aeiou' else 'a'} {color} {shape}")
    listed = names[0] if count == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return image, f"{listed} on a {table} table"


def _draw_shape(image: np.ndarray, shape: str, rgb, cx: int, cy: int, r: int) -> None:
    aa, dark = cv2.LINE_AA, tuple(int(c * 0.6) for c in rgb)
    cv2.ellipse(image, (cx + 4, cy + r), (r, r // 4), 0, 0, 360, (60, 60, 60), -1, aa)  # shadow
    if shape == "block":
        cv2.rectangle(image, (cx - r, cy - r), (cx + r, cy + r), rgb, -1, aa)
        cv2.rectangle(image, (cx - r, cy - r), (cx + r, cy + r), dark, 2, aa)
    elif shape == "ball":
        cv2.circle(image, (cx, cy), r, rgb, -1, aa)
        cv2.circle(image, (cx - r // 3, cy - r // 3), r // 4, tuple(min(255, c + 60) for c in rgb), -1, aa)
    elif shape == "cone":
        cv2.fillConvexPoly(image, np.array([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]), rgb, aa)
        cv2.ellipse(image, (cx, cy + r), (r, r // 4), 0, 0, 180, dark, -1, aa)
    else:  # ring, lying flat
        cv2.ellipse(image, (cx, cy + r // 2), (r, r // 2), 0, 0, 360, rgb, max(6, r // 3), aa)


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o444, "bigdata", "bigdata"
    archive.addfile(info, io.BytesIO(data))  # uname "bigdata", mode 0444: as webdataset's TarWriter writes members


def _parquet(path: str, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    text, number = pa.string(), pa.int64()
    schema = pa.schema([("url", text), ("caption", text), ("key", text), ("status", text), ("error_message", text),
                        ("width", number), ("height", number), ("original_width", number),
                        ("original_height", number), ("exif", text), ("sha256", text)])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def write_sample(root: str, num_images: int = 64, seed: int = 0) -> str:
    """Writes `num_images` input rows (a few failed) as img2dataset shards; returns `root`, the `--source` for
    `--dataset laion`."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    failed = set(rng.choice(num_images, max(1, num_images // FAILED_EVERY), replace=False).tolist()) \
        if num_images else set()
    for shard, first in enumerate(range(0, num_images, SHARD_SIZE)):
        rows, status = [], {}
        with tarfile.open(os.path.join(root, f"{shard:05d}.tar"), "w", format=tarfile.USTAR_FORMAT) as archive:
            for row in range(min(SHARD_SIZE, num_images - first)):
                key = f"{shard * 10**4 + row:09d}"
                image, caption = _draw(rng)  # drawn for failed rows too: a row's image does not depend on others
                meta = {"url": f"https://images.example.com/tabletop/{seed}/{key}.jpg", "caption": caption, "key": key,
                        "status": "success", "error_message": None, "width": SIZE, "height": SIZE,
                        "original_width": SIZE, "original_height": SIZE, "exif": "{}", "sha256": None}
                if first + row in failed:
                    error = ERRORS[rng.integers(len(ERRORS))]
                    meta.update(status="failed_to_download", error_message=error, width=None, height=None,
                                original_width=None, original_height=None, exif=None)
                    status[error] = status.get(error, 0) + 1
                else:
                    jpeg = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
                    meta["sha256"] = hashlib.sha256(jpeg).hexdigest()
                    # Member order: webdataset writes a sample's files sorted by extension.
                    _add(archive, f"{key}.jpg", jpeg)
                    _add(archive, f"{key}.json", json.dumps(meta).encode())
                    _add(archive, f"{key}.txt", caption.encode())
                    status["success"] = status.get("success", 0) + 1
                rows.append(meta)
        _parquet(os.path.join(root, f"{shard:05d}.parquet"), rows)
        count, successes = len(rows), status.get("success", 0)
        start = RUN_START + 10.0 * shard
        stats = {"count": count, "successes": successes, "failed_to_download": count - successes,
                 "failed_to_resize": 0, "duration": 10.0, "start_time": start, "end_time": start + 10.0,
                 "status_dict": dict(sorted(status.items()))}
        with open(os.path.join(root, f"{shard:05d}_stats.json"), "w") as f:
            json.dump(stats, f, indent=4)
    return root
