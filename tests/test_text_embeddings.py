"""The text-embedding entry codec: the int8 block layout's error bound at T5-XXL's width (random and outlier-laden
embeddings), determinism, float16 entries, and old UTE1 entries still decoding."""

import json
import struct

import numpy as np
import pytest

from unisim.schemas import text_embeddings as emb

D_MODEL = 4096  # t5-v1_1-xxl's width: the error bound is stated there


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _corpus(rng) -> np.ndarray:
    """float32 [tokens, 4096]: plain Gaussian rows, rows with per-channel scales (a learned final norm), and rows
    with planted outlier channels of 1–64 channels at 5–300× the others' RMS (as T5-XXL's outputs have some)."""
    rows = [rng.standard_normal((8, D_MODEL)), rng.standard_normal((8, D_MODEL)) * np.exp(rng.normal(0, 1, D_MODEL))]
    for count, size in ((1, 20), (2, 200), (4, 30), (8, 100), (64, 5), (16, 300)):
        x = rng.standard_normal((4, D_MODEL))
        x[:, rng.choice(D_MODEL, count, replace=False)] *= size
        rows.append(x)
    return (np.concatenate(rows) * 0.2).astype(np.float32)


def _entry(values: np.ndarray, key: str = "k" * 32, text: str = "push the red block to the left") -> emb.TextEmbedding:
    return emb.TextEmbedding(key, text, values, np.arange(3, 3 + len(values), dtype=np.int32), values_clipped=1)


def test_int8_blocks_keep_cosine_above_0_999_at_d_model_4096_even_with_outlier_channels():
    values = _corpus(np.random.default_rng(0))
    data = emb.encode_entry(_entry(values))
    back = emb.decode_entry(data)
    assert back.embedding.dtype == np.float16 and back.embedding.shape == values.shape
    cosine = _cosine(back.embedding, values)
    assert cosine.min() >= 0.999, cosine.min()  # measured 0.99968; bench/embedding_store.py: 0.99965
    # Per value: half a quantization step of the value's block, plus float16's rounding of the decoded value.
    blocks = np.abs(values.reshape(len(values), -1, 128)).max(-1)
    step = np.repeat(blocks / 127, 128, axis=1)
    error = np.abs(back.embedding.astype(np.float32) - values)
    assert (error <= step * (0.5 + 1e-3) + np.abs(values) * 2.0**-11 + 2.0**-24).all()
    # Half float16's bytes, plus a float16 scale per 128 values.
    n = len(values)
    assert len(data) == 8 + struct.unpack("<I", data[4:8])[0] + n * D_MODEL + n * 2 * D_MODEL // 128 + 4 * n


def _header(data: bytes) -> dict:
    (length,) = struct.unpack("<I", data[4:8])
    return json.loads(data[8 : 8 + length])


def test_round_trip_keeps_the_fields_and_the_same_values_give_the_same_bytes():
    rng = np.random.default_rng(1)
    values = rng.standard_normal((5, 300)).astype(np.float32)  # 300: a short last block of 44 values
    entry = emb.TextEmbedding("a" * 32, "öffne die Schublade", values, np.array([7, 8, 9, 10, 1], np.int32),
                              truncated=True, values_clipped=3)
    data = emb.encode_entry(entry)
    assert data[:4] == b"UTE2" and _header(data)["dtype"] == emb.STORED_DTYPE == "int8_block128"
    assert emb.encode_entry(emb.TextEmbedding(entry.key, entry.text, values.copy(), entry.token_ids.copy(),
                                              True, 3)) == data
    back = emb.decode_entry(data)
    assert (back.key, back.text, back.truncated, back.values_clipped) == (entry.key, entry.text, True, 3)
    np.testing.assert_array_equal(back.token_ids, entry.token_ids)
    assert _cosine(back.embedding, values).min() > 0.9999
    assert emb.stored(entry).embedding.tobytes() == back.embedding.tobytes()
    # float16 entries are exact for float16 values; a float16 input quantizes as its float32 equivalent.
    half = values.astype(np.float16)
    np.testing.assert_array_equal(emb.decode_entry(emb.encode_entry(_entry(half), "float16")).embedding, half)
    assert emb.encode_entry(_entry(half)) == emb.encode_entry(_entry(half.astype(np.float32)))


def test_edge_values_zero_rows_and_float16_extremes():
    values = np.zeros((3, 130), np.float32)
    values[1, :2] = [65504.0, -65504.0]  # float16's largest: 127 · its rounded-up scale passes it, decode clips
    values[2, :3] = [1e-7, -3e-8, 6e-8]  # scales below float16's normal range
    back = emb.decode_entry(emb.encode_entry(_entry(values))).embedding
    assert np.isfinite(back).all() and not back[0].any()
    assert back[1, :2].tolist() == [65504.0, -65504.0]
    assert np.abs(back[2, :3].astype(np.float32) - values[2, :3]).max() < 6e-8
    empty = emb.decode_entry(emb.encode_entry(_entry(np.zeros((0, 32), np.float32))))
    assert empty.embedding.shape == (0, 32)


def test_bad_entries_are_refused():
    entry = _entry(np.ones((3, 8), np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        emb.encode_entry(_entry(np.full((3, 8), np.nan, np.float32)))
    with pytest.raises(ValueError, match="beyond float16's range"):
        emb.encode_entry(_entry(np.full((3, 8), 7e4, np.float32)))
    with pytest.raises(ValueError, match="unknown text-embedding dtype"):
        emb.encode_entry(entry, "int4")
    with pytest.raises(ValueError, match="do not hold"):
        emb.decode_entry(emb.encode_entry(entry)[:-3])
    with pytest.raises(ValueError, match="not a text-embedding entry"):
        emb.decode_entry(b"UTE3" + emb.encode_entry(entry)[4:])


def _ute1(key: str, text: str, embedding: np.ndarray, token_ids: np.ndarray) -> bytes:
    """An entry as the UTE1 writer made it (no "dtype" in the header, float16 payload), kept here byte for byte."""
    header = json.dumps({"key": key, "text": text, "shape": list(embedding.shape), "truncated": False,
                         "values_clipped": 0}, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return b"".join([b"UTE1", struct.pack("<I", len(header)), header, embedding.astype("<f2").tobytes(),
                     token_ids.astype("<i4").tobytes()])


def test_old_ute1_entries_still_decode():
    half = np.random.default_rng(2).standard_normal((4, 64)).astype(np.float16)
    back = emb.decode_entry(_ute1("b" * 32, "push", half, np.array([5, 6, 7, 1])))
    assert back.embedding.dtype == np.float16 and (back.key, back.text, back.truncated) == ("b" * 32, "push", False)
    np.testing.assert_array_equal(back.embedding, half)
    np.testing.assert_array_equal(back.token_ids, [5, 6, 7, 1])
    with pytest.raises(ValueError, match="do not hold"):
        emb.decode_entry(_ute1("b" * 32, "push", half, np.array([5, 6, 7, 1]))[:-2])
