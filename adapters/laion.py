"""LAION-400M / LAION-5B / COYO-700M / ALIGN-style image-text pairs: one single-frame episode per image, the
caption as the text action (the paper treats internet images as one-frame videos, §2.1).

`--source` is a folder (local or gs://) holding either layout, found by file name:

- **img2dataset webdataset output**: `NNNNN.tar` holding `KEY.jpg` (or .png/.webp), `KEY.txt` (the caption) and
  `KEY.json` (metadata), beside `NNNNN.parquet` (one row per input URL, with `key`, `status`, `error_message`)
  and `NNNNN_stats.json`. One work unit per tar. Parquet rows whose `status` is not `success` never reached the
  tar and are rejected as `download_failed` with img2dataset's error message, so every input row is accounted for.
- **a metadata parquet plus image files**: `*.parquet` without a sibling tar, one row per image; the image is the
  row's path column (relative to the parquet's folder), else `KEY.jpg` beside the parquet or in img2dataset's
  `files` layout (`NNNNN/KEY.jpg` beside `NNNNN.parquet`, however many digits the shard names have), KEY from the
  release's own key column. A key is not assumed unique (LAION states its URLs were de-duplicated only
  approximately): a row reusing an earlier row's key is keyed `<key>@<row>`. One work unit per parquet.

A release of URLs alone (the LAION-400M/5B parquets: `SAMPLE_ID, URL, TEXT, …`; img2dataset's test parquet: `URL,
TEXT`) holds no images: when no table has an image for any of its first rows, the source is refused before the
pipeline starts, with the img2dataset command that downloads it and the convert command for the result
(`MetadataOnlySource`). In a source that has some images, a row with a URL and no image is rejected as
`not_downloaded` (its image was never fetched), a row with neither as `missing_image`.

Column names differ between releases; each field takes the first column present (case-sensitive), or the one
named by an option:

| field | columns tried | releases |
| --- | --- | --- |
| caption | `caption`, `TEXT`, `text`, `alt_text`, `ALT` | img2dataset, LAION-400M/5B, COYO, ALIGN-style |
| key | `key`, `id`, `SAMPLE_ID` | img2dataset, COYO, LAION-400M |
| image path | `image_path`, `path`, `file`, `filepath` | hand-made tables |
| url (recorded only) | `url`, `URL` | all |

Untrusted archives: tar members are read into memory, never extracted. A member whose name is absolute, holds a
`..` component or is not a regular file is rejected as `unsafe_archive_member` and its bytes are not read. An
image whose header states more than `max_pixels` pixels is rejected as `image_too_large` before anything decodes
it (decompression bombs); the header is read by Pillow, which parses only the first bytes. A corrupt image is
rejected by the pipeline (`undecodable_image`, `truncated_image`); an image without a caption as `empty_text`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import posixpath
import tarfile
from collections.abc import Iterator

import numpy as np

from unisim import fileio
from unisim.fileio import images
from unisim.adapters.base import DatasetAdapter, Episode, option
from unisim.adapters.registry import register
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.text import TextError, decode_text

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
CAPTION_COLUMNS = ("caption", "TEXT", "text", "alt_text", "ALT")
KEY_COLUMNS = ("key", "id", "SAMPLE_ID")
PATH_COLUMNS = ("image_path", "path", "file", "filepath")
URL_COLUMNS = ("url", "URL")
PROBE_ROWS = 32  # rows of each table looked up at launch to tell a metadata-only release from one with images


MAX_MEMBER_BYTES = 64 << 20  # a web image is well under this; a bomb member is refused before it is read


@dataclasses.dataclass(frozen=True)
class LaionOptions:
    caption: str = option("", "the caption column of a metadata parquet (default: guessed, see the module docs)")
    key: str = option("", "the key column (default: guessed, else the row number)")
    image: str = option("", "the image-path column (default: guessed, else KEY.jpg beside the parquet)")
    max_pixels: int = option(images.DECOMPRESSION_BOMB_PIXELS, "images with more pixels are rejected before "
                                                                "decoding (Pillow's bomb limit)")
    max_member_bytes: int = option(MAX_MEMBER_BYTES, "tar members larger than this are rejected unread")


def image_pixels(data: bytes) -> int | None:
    """Width × height from the image header the decoder will read (`fileio.images`); None if not recognised."""
    size = images.image_size(data)
    return None if size is None else size[0] * size[1]


def unsafe_member(member: tarfile.TarInfo, max_bytes: int = MAX_MEMBER_BYTES) -> str | None:
    """Why a tar member must not be read, or None: checked on its header, before any of its bytes are read."""
    name = member.name
    if name.startswith("/") or posixpath.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        return f"member path {name!r} is absolute or leaves the archive"
    if not member.isfile() or member.issparse():  # a sparse member expands to far more than it stores
        kind = "a sparse file" if member.issparse() else f"not a regular file (type {member.type!r})"
        return f"member {name!r} is {kind}"
    if member.size > max_bytes:
        return f"member {name!r} holds {member.size:,} bytes, over the limit of {max_bytes:,}"
    return None


def _first(names, candidates, chosen: str, what: str) -> str | None:
    if chosen:
        if chosen not in names:
            raise ValueError(f"laion: option {what}={chosen!r} is not a column (columns: {', '.join(names)})")
        return chosen
    return next((c for c in candidates if c in names), None)


class MetadataOnlySource(ValueError):
    """The source's tables hold URLs and captions, not images: it has to be downloaded first."""


@register
class Laion(DatasetAdapter):
    name = "laion"
    description = "image-text pairs (LAION, COYO, ALIGN-style): img2dataset tars or parquet + images, one frame each"
    Options = LaionOptions

    def __init__(self, source: str, split: str | None = None, options=None):
        super().__init__(source, split, options)
        self.root = source.rstrip("/")
        if self.options.max_pixels < 1 or self.options.max_member_bytes < 1:
            raise ValueError("laion: max_pixels and max_member_bytes must be >= 1")

    def work_units(self) -> list[str]:
        if not fileio.isdir(self.root):
            raise FileNotFoundError(f"laion: source {self.root!r} is not a folder")
        tars = fileio.glob(f"{self.root}/*.tar")
        stems = {t[: -len(".tar")] for t in tars}
        tables = [p for p in fileio.glob(f"{self.root}/*.parquet") if p[: -len(".parquet")] not in stems]
        if not tars and not tables:
            raise FileNotFoundError(f"laion: no img2dataset *.tar nor metadata *.parquet under {self.root!r}")
        if not tars:
            heads = (_parquet_head(t, PROBE_ROWS) for t in tables)  # lazily: stop at the first table with images
            first = None
            for table, (names, rows) in zip(tables, heads):
                first = first or names
                if not self._metadata_only(table, names, rows):
                    break
            else:
                raise MetadataOnlySource(self._download_advice(len(tables), first))
        return [f"tar:{t}" for t in tars] + [f"parquet:{p}" for p in tables]

    def _columns(self, names) -> tuple[str | None, str | None, str | None, str | None]:
        """(caption, key, image path, url) columns of a table."""
        o = self.options
        return (_first(names, CAPTION_COLUMNS, o.caption, "caption"), _first(names, KEY_COLUMNS, o.key, "key"),
                _first(names, PATH_COLUMNS, o.image, "image"), _first(names, URL_COLUMNS, "", "url"))

    def _metadata_only(self, table: str, names: list[str], rows: list[dict]) -> bool:
        """A table of URLs (`names`) whose first `rows` have no image anywhere this adapter looks: nothing was
        downloaded."""
        _, key_column, image_column, url_column = self._columns(names)
        if url_column is None or image_column is not None:
            return False
        return not any(self._image_path(table, row, key_column, None) for row in rows)

    def _download_advice(self, tables: int, names: list[str]) -> str:
        """What to run, given the number of tables and the first table's column `names`."""
        caption, _, _, url = self._columns(names)
        return (f"laion: {self.root} holds image URLs, not images ({tables} parquet table(s) with columns "
                f"{', '.join(names[:8])}{', …' if len(names) > 8 else ''}; no image found for their first rows). "
                "Download the images first, e.g. with img2dataset:\n"
                f"  img2dataset --url_list {self.root} --input_format parquet --url_col {url} "
                f"--caption_col {caption or 'TEXT'} --output_format webdataset --output_folder IMAGES "
                "--save_additional_columns '[\"SAMPLE_ID\"]'   (drop that option when there is no SAMPLE_ID)\n"
                "then convert what it wrote (tars + parquet, failed downloads included):\n"
                "  unisim convert --dataset laion --source IMAGES --output …")

    def read(self, unit: str) -> Iterator[Episode | Rejection]:
        kind, _, path = unit.partition(":")
        yield from (self._read_tar(path) if kind == "tar" else self._read_table(path))

    # ------------------------------------------------------------------------------------------ webdataset tars

    def _read_tar(self, path: str) -> Iterator[Episode | Rejection]:
        table = path[: -len(".tar")] + ".parquet"
        if fileio.exists(table):
            yield from self._failed_downloads(table)
        samples: dict[str, dict[str, bytes]] = {}
        order: list[str] = []
        try:
            with fileio.open(path) as raw, tarfile.open(fileobj=raw, mode="r|") as archive:
                for index, member in enumerate(archive):
                    reason = unsafe_member(member, self.options.max_member_bytes)
                    if reason:  # never read, never written
                        yield self.reject("unsafe_archive_member", reason, f"{posixpath.basename(path)}/{member.name}",
                                          path, index)
                        continue
                    key, _, ext = posixpath.basename(member.name).partition(".")
                    if key not in samples:
                        samples[key] = {}
                        order.append(key)
                    samples[key]["." + ext.lower()] = archive.extractfile(member).read()
                    # img2dataset writes a sample's files together: a new key means earlier ones are complete.
                    while len(order) > 1:
                        done = order.pop(0)
                        yield self._tar_sample(done, samples.pop(done), path)
        except tarfile.TarError as e:
            yield self.reject("malformed_archive", f"{path}: {e}", posixpath.basename(path), path)
        for key in order:
            yield self._tar_sample(key, samples.pop(key), path)

    def _tar_sample(self, key: str, parts: dict[str, bytes], path: str) -> Episode | Rejection:
        image = next((parts[ext] for ext in IMAGE_EXTENSIONS if ext in parts), None)
        if image is None:
            return self.reject("missing_image", f"sample {key} has {sorted(parts)} but no image", key, path)
        caption = parts.get(".txt")
        if caption is None and ".json" in parts:
            try:
                caption = str(json.loads(parts[".json"]).get("caption") or "").encode()
            except (ValueError, AttributeError):
                caption = None
        try:
            text = decode_text(caption or b"")
        except TextError as e:
            return self.reject(e.reason, str(e), key, path)
        return self._episode(key, image, text, path, -1)

    def _failed_downloads(self, table: str) -> Iterator[Rejection]:
        _, rows = _parquet(table)
        for index, row in enumerate(rows):
            failure = self._download_failure(row, str(row.get("key") or f"{posixpath.basename(table)}@{index}"),
                                             table, index)
            if failure:
                yield failure

    def _download_failure(self, row: dict, key: str, table: str, index: int) -> Rejection | None:
        """img2dataset's verdict on a row: anything but `success` never produced an image."""
        if row.get("status") in (None, "success"):
            return None
        return self.reject("download_failed", str(row.get("error_message") or row.get("status"))[:300], key, table,
                           index)

    # ------------------------------------------------------------------------------------ parquet + image files

    def _read_table(self, table: str) -> Iterator[Episode | Rejection]:
        names, rows = _parquet(table)
        caption, key_column, image_column, url_column = self._columns(names)
        if caption is None:
            raise ValueError(f"laion: {table} has no caption column (tried {', '.join(CAPTION_COLUMNS)}); "
                             "name it with --adapter_option caption=COLUMN")
        seen: set[str] = set()
        for index, row in enumerate(rows):
            key = str(row.get(key_column)) if key_column and row.get(key_column) is not None else \
                f"{posixpath.basename(table)}@{index}"
            key = f"{key}@{index}" if key in seen else key
            seen.add(key)
            failure = self._download_failure(row, key, table, index)
            if failure:
                yield failure
                continue
            image_path = self._image_path(table, row, key_column, image_column)
            if image_path is None:
                url = row.get(url_column) if url_column else None
                if url:
                    yield self.reject("not_downloaded", f"row {index}'s image was never downloaded (url {url})"[:300],
                                      key, table, index)
                else:
                    yield self.reject("missing_image", f"row {index} has no image file and no url", key, table,
                                      index)
                continue
            yield self._episode(key, fileio.read_bytes(image_path), str(row.get(caption) or ""), image_path, index)

    @staticmethod
    def _image_path(table: str, row: dict, key_column: str | None, image_column: str | None) -> str | None:
        """The row's image file: its path column, else KEY.jpg (or .png, .webp) beside the table or in
        img2dataset's `files` layout (the folder named as the table, NNNNN/KEY.jpg); None when there is none.
        Without a key column there is no file name to look for: a row number is not a name any downloader writes."""
        folder, shard = posixpath.dirname(table), table[: -len(".parquet")]
        if image_column and row.get(image_column):
            candidates = [posixpath.join(folder, str(row[image_column]))]
        elif key_column and row.get(key_column) is not None:
            key = str(row[key_column])
            candidates = [f"{folder}/{key}{ext}" for ext in IMAGE_EXTENSIONS] + [
                f"{shard}/{key}{ext}" for ext in IMAGE_EXTENSIONS]
        else:
            return None
        return next((p for p in candidates if fileio.exists(p)), None)

    # ------------------------------------------------------------------------------------------------ common

    def _episode(self, key: str, image: bytes, text: str, source: str, index: int) -> Episode | Rejection:
        pixels = image_pixels(image)
        if pixels is not None and pixels > self.options.max_pixels:
            return self.reject("image_too_large", f"{pixels} pixels in the header, over max_pixels "
                               f"{self.options.max_pixels}", key, source, index)
        return Episode(episode_id=key, frames=[image], fps=1.0, text=text.strip(),
                       controls=np.zeros((1, 0), np.float32), split=self.split or "train", source_file=source,
                       source_index=index, is_image=True)


def _parquet_head(path: str, rows: int) -> tuple[list[str], list[dict]]:
    """(column names, the first `rows` rows), reading only what they need (a LAION part is ~1M rows)."""
    import pyarrow.parquet as pq

    # Ranged reads (footer and first row group only), locally and through fsspec alike.
    parquet = pq.ParquetFile(path if not fileio.is_remote(path) else fileio.open(path))
    names = parquet.schema_arrow.names
    head = next(parquet.iter_batches(batch_size=rows)).to_pylist() if parquet.metadata.num_rows else []
    return names, head[:rows]


def _parquet(path: str) -> tuple[list[str], list[dict]]:
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(fileio.read_bytes(path)))
    return table.column_names, table.to_pylist()
