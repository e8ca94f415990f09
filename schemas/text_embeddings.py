"""The text-embedding store beside the clip shards: each unique conditioning text embedded once, records refer to it.

Layout in an output directory (listed in the manifest's `text_embeddings`):

    text_embeddings-00000-of-00002.array_record   one entry per unique text, sorted by key
    text_embeddings-00000-of-00002.keys           the entries' keys, one per line, in the same order

A record's `text_key` names its entry; `TextEmbeddingStore.lookup(key)` finds it through the keys files (a dict
of key → (shard, row) built once). Entry wire format, like the record codec:

    b"UTE1" | u32 little-endian header length | JSON header | float16 [n, d_model] embedding | int32 [n] token ids

header: {"key", "text", "shape": [n, d_model], "truncated": bool, "values_clipped": int (values beyond float16's
range, clipped to it)}. Only the n real tokens are stored (n <= the
encoder's max tokens, EOS included); `padded` restores a fixed length with its mask.

`check_same_encoder` is the guard the trainer's loader calls before mixing directories: embeddings from different
encoders live in different spaces and must never be mixed silently.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MAGIC = b"UTE1"
EMBEDDING_PREFIX = "text_embeddings"
KEYS_SUFFIX = ".keys"
EMBEDDING_DTYPE = np.dtype("<f2")


class EncoderMismatchError(ValueError):
    """Directories whose embeddings come from different text encoders (or that have none) were to be mixed."""


@dataclasses.dataclass
class TextEmbedding:
    key: str
    text: str
    embedding: np.ndarray  # float16 [n, d_model]
    token_ids: np.ndarray  # int32 [n]
    truncated: bool = False  # the text was cut at the encoder's token limit
    values_clipped: int = 0  # embedding values that were beyond float16's range

    def padded(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        return pad(self.embedding, length)


def pad(embedding: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(float16 [length, d], bool mask [length]) from an [n, d] embedding, n <= length."""
    n, d = embedding.shape
    if n > length:
        raise ValueError(f"embedding has {n} tokens, more than the padded length {length}")
    out = np.zeros((length, d), EMBEDDING_DTYPE)
    out[:n] = embedding
    mask = np.zeros(length, bool)
    mask[:n] = True
    return out, mask


def keys_path(shard_path: str) -> str:
    """The keys file beside an embedding shard."""
    stem = shard_path[: -len(".array_record")] if shard_path.endswith(".array_record") else shard_path
    return stem + KEYS_SUFFIX


def encode_entry(entry: TextEmbedding) -> bytes:
    embedding = np.ascontiguousarray(entry.embedding, EMBEDDING_DTYPE)
    token_ids = np.ascontiguousarray(entry.token_ids, np.dtype("<i4"))
    if embedding.ndim != 2 or token_ids.shape != (embedding.shape[0],):
        raise ValueError(f"embedding {embedding.shape} and token ids {token_ids.shape} do not match")
    if not np.isfinite(embedding).all():
        raise ValueError(f"embedding of {entry.key} has non-finite values")
    header = json.dumps({"key": entry.key, "text": entry.text, "shape": list(embedding.shape),
                         "truncated": bool(entry.truncated), "values_clipped": int(entry.values_clipped)},
                        sort_keys=True, separators=(",", ":"),
                        ensure_ascii=False).encode("utf-8")
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, embedding.tobytes(), token_ids.tobytes()])


def decode_entry(data: bytes) -> TextEmbedding:
    view = memoryview(data)
    if bytes(view[:4]) != MAGIC:
        raise ValueError(f"not a text-embedding entry (starts with {bytes(view[:4])!r}, expected {MAGIC!r})")
    (head_len,) = struct.unpack("<I", view[4:8])
    header = json.loads(bytes(view[8 : 8 + head_len]).decode("utf-8"))
    n, d = header["shape"]
    start = 8 + head_len
    emb_end = start + n * d * EMBEDDING_DTYPE.itemsize
    if emb_end + 4 * n != len(view):
        raise ValueError(f"entry {header['key']}: {len(view)} bytes do not hold shape {[n, d]}")
    embedding = np.frombuffer(view[start:emb_end], EMBEDDING_DTYPE).reshape(n, d)
    token_ids = np.frombuffer(view[emb_end:], np.dtype("<i4"))
    return TextEmbedding(header["key"], header["text"], embedding, token_ids, header["truncated"],
                         header["values_clipped"])


def check_same_encoder(manifests: Sequence[Any], names: Sequence[str] | None = None) -> dict[str, Any]:
    """Returns the one encoder identity shared by all `manifests`; raises `EncoderMismatchError` otherwise.

    Identities match when their `fingerprint`s do (a hash of the model config, the vocabulary and the weight
    files' names and sizes; the checkpoint path is recorded but may differ, e.g. a local copy of a gs:// one).
    `names` label the manifests in the error (default: their dataset names).
    """
    if not manifests:
        raise ValueError("no manifests to check")
    names = list(names) if names is not None else [m.dataset for m in manifests]
    missing = [n for n, m in zip(names, manifests) if not m.text_encoder]
    if missing:
        raise EncoderMismatchError(f"{', '.join(missing)}: converted without a text encoder (no embeddings); "
                                   "re-convert with --text_encoder PATH")
    by_fingerprint: dict[str, list[str]] = {}
    path_of: dict[str, str] = {}
    for n, m in zip(names, manifests):
        by_fingerprint.setdefault(m.text_encoder["fingerprint"], []).append(n)
        path_of.setdefault(m.text_encoder["fingerprint"], m.text_encoder["path"])
    if len(by_fingerprint) > 1:
        groups = "; ".join(f"{fp[:12]} ({path_of[fp]}): {', '.join(ns)}" for fp, ns in sorted(by_fingerprint.items()))
        raise EncoderMismatchError(f"text embeddings come from {len(by_fingerprint)} different encoders: {groups}. "
                                   "Re-convert the odd ones out with the same --text_encoder.")
    return manifests[0].text_encoder


class TextEmbeddingStore:
    """Key → embedding over one directory's embedding shards. `open_local(relative path)` gives a local file path
    (the default joins `directory`; remote readers copy to scratch first, ArrayRecord reads local files only)."""

    def __init__(self, directory: str, shard_paths: Sequence[str],
                 open_local: Callable[[str], str] | None = None, read_text: Callable[[str], str] | None = None):
        import os

        self._open_local = open_local or (lambda rel: os.path.join(directory, rel))
        read_text = read_text or (lambda rel: open(os.path.join(directory, rel), encoding="utf-8").read())
        self._shards = list(shard_paths)
        self._index: dict[str, tuple[int, int]] = {}
        for s, path in enumerate(self._shards):
            for row, key in enumerate(read_text(keys_path(path)).split()):
                self._index[key] = (s, row)
        self._readers: dict[int, Any] = {}

    @classmethod
    def from_manifest(cls, directory: str, manifest: Any, **kwargs) -> "TextEmbeddingStore":
        return cls(directory, [s.path for s in manifest.text_embeddings], **kwargs)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        return sorted(self._index)

    def lookup(self, key: str) -> TextEmbedding:
        if key not in self._index:
            raise KeyError(f"text key {key!r} is not in the embedding store ({len(self)} texts)")
        shard, row = self._index[key]
        if shard not in self._readers:
            from array_record.python.array_record_module import ArrayRecordReader

            self._readers[shard] = ArrayRecordReader(self._open_local(self._shards[shard]), "readahead_buffer_size:0")
        entry = decode_entry(self._readers[shard].read([row])[0])
        if entry.key != key:
            raise ValueError(f"embedding store is inconsistent: row {row} of {self._shards[shard]} holds {entry.key}")
        return entry

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
