"""The text-embedding store beside the clip shards: each unique conditioning text embedded once, records refer to it.

Layout in an output directory (listed in the manifest's `text_embeddings`):

    text_embeddings-00000-of-00002.array_record   one entry per unique text, sorted by key
    text_embeddings-00000-of-00002.keys           the entries' keys, one per line, in the same order

A record's `text_key` names its entry; `TextEmbeddingStore.lookup(key)` finds it through the keys files (a dict
of key → (shard, row) built once). Entry wire format, like the record codec:

    b"UTE2" | u32 little-endian header length | JSON header | embedding payload | int32 [n] token ids

header: {"key", "text", "shape": [n, d_model], "dtype", "truncated": bool, "values_clipped": int (values beyond
float16's range that the encoder clipped to it)}. Only the n real tokens are stored (n <= the encoder's max
tokens, EOS included); `padded` restores a fixed length with its mask. Payload by `dtype`:

    "int8_block128"   float16 [n, ceil(d/128)] scales | int8 [n, d] values   (written by default: `STORED_DTYPE`)
    "float16"         float16 [n, d]

int8_block128 is symmetric absmax quantization per block of 128 consecutive values of a token row (the last
block of a row may be shorter): scale s = absmax / 127 rounded *up* to a float16, q = round(x / s) in
[-127, 127], decoded as q·s. Per value |decoded − x| <= s/2 plus float16's rounding of the decoded value, i.e.
about absmax(block) / 254. Measured at d_model 4096 (`bench/embedding_store.py`: a random-weight T5 encoder on 600
texts; the same outputs with per-channel gains and 6 outlier channels at 10–300×; a sweep of 1–64 planted channels
at 5–1000× the others' RMS), per-token cosine to the float32 embedding: min 0.99997 (mean 0.99998) on the plain
outputs, min 0.99965 with outliers; float16 0.9999999. Bytes per token 4,164 (ids included) against float16's
8,196: a 20-token caption is 83 kB instead of 164 kB. Blocks, not one scale per token: an outlier channel then
coarsens only its own block, where per-token int8 fell to cosine 0.990 on the outlier sets (trained T5-XXL
outputs are said to have a few large channels, not measurable here; per-token absmax suits outlier-free rows
only). 256-value blocks also stay above 0.999 (min 0.99930), but with twice the error of 128 for 0.8 % fewer
bytes, and the real outliers' sizes are unknown.
The encoder hands float32 to `encode_entry`, which quantizes once: the same values give the same bytes.

Old b"UTE1" entries (header without "dtype", float16 payload) still decode. Whatever the stored dtype, a decoded
`TextEmbedding.embedding` is float16 [n, d_model], what the trainer feeds.

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

from unisim.schemas.errors import UserError

MAGIC = b"UTE2"
MAGIC_V1 = b"UTE1"  # float16 only, no "dtype" in the header: decoded, never written
EMBEDDING_PREFIX = "text_embeddings"
KEYS_SUFFIX = ".keys"
EMBEDDING_DTYPE = np.dtype("<f2")  # what a decoded entry holds, whatever was stored
STORED_DTYPE = "int8_block128"  # what `encode_entry` writes by default (module docstring for the error bound)
INT8_BLOCK_PREFIX = "int8_block"
_FP16_MAX = float(np.finfo(np.float16).max)


class EncoderMismatchError(UserError):
    """Directories whose embeddings come from different text encoders (or that have none) were to be mixed."""


@dataclasses.dataclass
class TextEmbedding:
    key: str
    text: str
    # [n, d_model]: float16 once decoded; the encoder's float32 before `encode_entry`, which quantizes it once.
    embedding: np.ndarray
    token_ids: np.ndarray  # int32 [n]
    truncated: bool = False  # the text was cut at the encoder's token limit
    values_clipped: int = 0  # embedding values that were beyond float16's range (the encoder clipped them)

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


def _int8_block_size(dtype: str) -> int | None:
    """128 for "int8_block128"; None for any other dtype name."""
    if not dtype.startswith(INT8_BLOCK_PREFIX) or not dtype[len(INT8_BLOCK_PREFIX):].isdigit():
        return None
    block = int(dtype[len(INT8_BLOCK_PREFIX):])
    return block if block > 0 else None


def _blocks(d: int, block: int) -> int:
    return -(-d // block)


def quantize_int8_blocks(values: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """float [n, d] → (float16 scales [n, ceil(d/block)], int8 [n, d]); module docstring for the scheme.

    Plain IEEE float32 arithmetic throughout (absmax, one division, round half to even), so the bytes depend on
    the values only, not on the machine or on how numpy vectorises.
    """
    values = np.asarray(values, np.float32)
    n, d = values.shape
    blocks = _blocks(d, block)
    grouped = np.zeros((n, blocks * block), np.float32)  # zero padding leaves a short last block's absmax alone
    grouped[:, :d] = values
    grouped = grouped.reshape(n, blocks, block)
    absmax = np.abs(grouped).max(axis=-1)
    scales = (absmax / np.float32(127)).astype(np.float16)
    # Round the scale up, so that |x| / s <= 127 and no value saturates: 127 · s is exact in float32 (7 + 11 bits).
    low = scales.astype(np.float32) * np.float32(127) < absmax
    scales[low] = np.nextafter(scales[low], np.float16(np.inf))
    s = scales.astype(np.float32)[..., None]
    q = np.divide(grouped, s, out=np.zeros_like(grouped), where=s > 0)  # an all-zero block has scale 0
    q = np.clip(np.rint(q), -127, 127).astype(np.int8).reshape(n, blocks * block)[:, :d]
    return scales, np.ascontiguousarray(q)


def dequantize_int8_blocks(scales: np.ndarray, q: np.ndarray, block: int) -> np.ndarray:
    """The inverse of `quantize_int8_blocks`, as float16 [n, d]."""
    n, d = q.shape
    if d % block == 0:  # the usual case (T5 widths): broadcast instead of repeating the scales
        values = (q.reshape(n, d // block, block).astype(np.float32) * scales.astype(np.float32)[..., None])
        values = values.reshape(n, d)
    else:
        values = q.astype(np.float32) * np.repeat(scales.astype(np.float32), block, axis=1)[:, :d]
    # q · s is exact in float32; clip because 127 · (a scale rounded up) may pass float16's largest value.
    return np.clip(values, -_FP16_MAX, _FP16_MAX, out=values).astype(EMBEDDING_DTYPE)


def _payload_bytes(dtype: str, n: int, d: int) -> int:
    block = _int8_block_size(dtype)
    if block is not None:
        return 2 * n * _blocks(d, block) + n * d
    if dtype == "float16":
        return 2 * n * d
    raise ValueError(f"unknown text-embedding dtype {dtype!r} (known: float16, {INT8_BLOCK_PREFIX}<block>)")


def encode_entry(entry: TextEmbedding, dtype: str = STORED_DTYPE) -> bytes:
    """The wire bytes of `entry`, its embedding stored as `dtype` (module docstring). Values must be finite and
    within float16's range: the encoder clips beyond it and counts what it clipped in `values_clipped`."""
    values = np.asarray(entry.embedding)
    token_ids = np.ascontiguousarray(entry.token_ids, np.dtype("<i4"))
    if values.ndim != 2 or token_ids.shape != (values.shape[0],):
        raise ValueError(f"embedding {values.shape} and token ids {token_ids.shape} do not match")
    values = values.astype(np.float32, copy=False)  # float16 and float32 inputs both convert exactly
    if not np.isfinite(values).all():
        raise ValueError(f"embedding of {entry.key} has non-finite values")
    if values.size and np.abs(values).max() > _FP16_MAX:
        raise ValueError(f"embedding of {entry.key} has values beyond float16's range: clip them first and count "
                         "them in values_clipped (T5TextEncoder.encode does)")
    n, d = values.shape
    _payload_bytes(dtype, n, d)  # refuses an unknown dtype before anything is built
    block = _int8_block_size(dtype)
    if block is not None:
        scales, q = quantize_int8_blocks(values, block)
        payload = [scales.astype("<f2").tobytes(), q.tobytes()]
    else:
        payload = [values.astype(EMBEDDING_DTYPE).tobytes()]
    header = json.dumps({"key": entry.key, "text": entry.text, "shape": [n, d], "dtype": dtype,
                         "truncated": bool(entry.truncated), "values_clipped": int(entry.values_clipped)},
                        sort_keys=True, separators=(",", ":"),
                        ensure_ascii=False).encode("utf-8")
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *payload, token_ids.tobytes()])


def decode_entry(data: bytes) -> TextEmbedding:
    view = memoryview(data)
    magic = bytes(view[:4])
    if magic not in (MAGIC, MAGIC_V1):
        raise ValueError(f"not a text-embedding entry (starts with {magic!r}, expected {MAGIC!r} or {MAGIC_V1!r})")
    (head_len,) = struct.unpack("<I", view[4:8])
    header = json.loads(bytes(view[8 : 8 + head_len]).decode("utf-8"))
    n, d = header["shape"]
    dtype = header["dtype"] if magic == MAGIC else "float16"
    start = 8 + head_len
    emb_end = start + _payload_bytes(dtype, n, d)
    if emb_end + 4 * n != len(view):
        raise ValueError(f"entry {header['key']}: {len(view)} bytes do not hold shape {[n, d]} as {dtype}")
    block = _int8_block_size(dtype)
    if block is not None:
        scales_end = start + 2 * n * _blocks(d, block)
        scales = np.frombuffer(view[start:scales_end], np.dtype("<f2")).reshape(n, _blocks(d, block))
        q = np.frombuffer(view[scales_end:emb_end], np.int8).reshape(n, d)
        embedding = dequantize_int8_blocks(scales, q, block)
    else:
        embedding = np.frombuffer(view[start:emb_end], EMBEDDING_DTYPE).reshape(n, d)
    token_ids = np.frombuffer(view[emb_end:], np.dtype("<i4"))
    return TextEmbedding(header["key"], header["text"], embedding, token_ids, header["truncated"],
                         header["values_clipped"])


def stored(entry: TextEmbedding, dtype: str = STORED_DTYPE) -> TextEmbedding:
    """`entry` as the store gives it back (float16, quantized as `dtype`): what a reader of the store sees, so that
    code embedding on the fly (the simulator) feeds the model what it was trained on."""
    return decode_entry(encode_entry(entry, dtype))


@dataclasses.dataclass(frozen=True)
class EncoderIdentity:
    """Which text encoder embedded a directory's texts: recorded in its manifest and in every run.json.

    Two identities are the same encoder when their `fingerprint`s are equal (`same_as`): a hash of the model config,
    the vocabulary and the weight files' names and sizes (`encoders/t5.py` computes it). The `path` is where it was
    loaded from, recorded but not compared: a local copy of a gs:// checkpoint is the same encoder."""

    fingerprint: str
    path: str
    d_model: int  # the embedding width the model is built for
    max_tokens: int  # texts are cut at this many tokens (EOS included)
    model_type: str = ""
    vocab_size: int = 0
    dtype: str = "float32"  # what the encoder gives
    stored_dtype: str = "float16"  # how the store keeps it (runs from before the int8 store recorded none)
    config_sha256: str = ""
    vocab_sha256: str = ""
    weights: tuple[tuple[str, int], ...] = ()

    def same_as(self, other: "EncoderIdentity") -> bool:
        return self.fingerprint == other.fingerprint

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["weights"] = [list(w) for w in self.weights]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "text_encoder") -> "EncoderIdentity":
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be an object, not {type(data).__name__}")
        missing = [k for k in ("fingerprint", "path", "d_model", "max_tokens") if k not in data]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}  # fields a newer writer added are ignored
        values["weights"] = tuple((str(n), int(size)) for n, size in data.get("weights", ()))
        return cls(**values)


def check_same_encoder(manifests: Sequence[Any], names: Sequence[str] | None = None) -> EncoderIdentity:
    """Returns the one encoder identity shared by all `manifests`; raises `EncoderMismatchError` otherwise.

    Identities match when their `fingerprint`s do (`EncoderIdentity.same_as`). `names` label the manifests in the
    error (default: their dataset names).
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
        by_fingerprint.setdefault(m.text_encoder.fingerprint, []).append(n)
        path_of.setdefault(m.text_encoder.fingerprint, m.text_encoder.path)
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
