"""The T5 encoder stage's parts: the tiny checkpoint, encoder identity, loading from a non-local filesystem,
truncation, the embedding entry codec and the encoder check the trainer calls."""

import dataclasses
import os

import numpy as np
import pytest

import memfs
from unisim.encoders import t5 as te
from unisim.samples import tiny_t5
from unisim.schemas import text_embeddings as emb


def test_tiny_checkpoint_is_byte_identical_when_rebuilt(tiny_t5_dir, tmp_path):
    again = tiny_t5.write_tiny_t5(str(tmp_path / "again"), corpus=[f"push the block {e} to the left" for e in range(8)]
                                  + ["language_table: push the block to the left"])
    names = sorted(os.listdir(tiny_t5_dir))
    assert names == ["config.json", "model.safetensors", "spiece.model", "tokenizer_config.json"]
    for name in names:
        assert open(os.path.join(again, name), "rb").read() == open(os.path.join(tiny_t5_dir, name), "rb").read(), name


def test_tokenizer_uses_the_trained_vocabulary_and_truncation_keeps_eos(tiny_t5_dir):
    encoder = te.T5TextEncoder(tiny_t5_dir, max_tokens=6)
    ids, truncated = encoder.tokenize(["push the block", "push the block 3 to the left"])
    pieces = encoder.tokenizer.convert_ids_to_tokens(ids[0])
    assert pieces == ["▁push", "▁the", "▁block", "</s>"] and truncated == [False, True]
    assert len(ids[1]) == 6 and ids[1][-1] == encoder.tokenizer.eos_token_id


def test_encode_gives_float32_real_tokens_and_the_same_entry_bytes_each_time(tiny_t5_dir):
    encoder = te.T5TextEncoder(tiny_t5_dir, max_tokens=64)
    first = encoder.encode(["a", "b"], ["push the block 1 to the left", "push"])
    again = encoder.encode(["a", "b"], ["push the block 1 to the left", "push"])
    assert [e.embedding.shape for e in first] == [(len(first[0].token_ids), 32), (2, 32)]
    # float32 to the codec, which quantizes once: the stored bytes depend on the text only.
    assert first[0].embedding.dtype == np.float32 and not first[0].truncated
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x.embedding, y.embedding)
        assert emb.encode_entry(x) == emb.encode_entry(y)
        assert emb.stored(x).embedding.dtype == np.float16
    assert not np.array_equal(first[0].embedding[:2], first[1].embedding)  # different texts, different vectors


def test_identity_is_the_same_for_a_copy_on_an_object_store(tiny_t5_dir):
    local = te.encoder_identity(tiny_t5_dir, 64)
    for name in os.listdir(tiny_t5_dir):
        memfs.put(f"memory://models/tiny-t5/{name}", open(os.path.join(tiny_t5_dir, name), "rb").read())
    remote = te.encoder_identity("memory://models/tiny-t5", 64)
    assert remote.fingerprint == local.fingerprint and remote.path != local.path and remote.same_as(local)
    assert local.d_model == 32 and local.dtype == "float16" and local.weights[0][0] == "model.safetensors"
    assert local.stored_dtype == emb.STORED_DTYPE
    # The worker-side load from the object store gives the same embeddings as the local checkpoint.
    a = te.T5TextEncoder("memory://models/tiny-t5").encode(["k"], ["push the block 2 to the left"])[0]
    b = te.T5TextEncoder(tiny_t5_dir).encode(["k"], ["push the block 2 to the left"])[0]
    np.testing.assert_array_equal(a.embedding, b.embedding)


def test_identity_changes_with_the_config_or_vocabulary(tiny_t5_dir, tmp_path):
    base = te.encoder_identity(tiny_t5_dir, 64).fingerprint
    wider = tiny_t5.write_tiny_t5(str(tmp_path / "wider"), d_model=48)
    other_vocab = tiny_t5.write_tiny_t5(str(tmp_path / "vocab"), corpus=["open the drawer"] * 3)
    assert len({base, te.encoder_identity(wider, 64).fingerprint,
                te.encoder_identity(other_vocab, 64).fingerprint}) == 3
    # The one check that a loaded encoder is the recorded one (converter workers, the simulator).
    recorded = te.encoder_identity(tiny_t5_dir, 64)
    assert te.check_encoder(tiny_t5_dir, recorded, "the recorded one").same_as(recorded)
    with pytest.raises(emb.EncoderMismatchError, match=f"at {wider} .* is not the recorded one \\({tiny_t5_dir}"):
        te.check_encoder(wider, recorded, "the recorded one")


def test_a_directory_that_is_not_a_checkpoint_fails_clearly(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no weight files"):
        te.encoder_identity(str(tmp_path), 64)
    with pytest.raises(FileNotFoundError, match="config.json"):
        te.encoder_identity(str(tmp_path / "missing"), 64)


def test_entry_codec_round_trips_and_pads_with_a_mask():  # the int8 layout: tests/test_text_embeddings.py
    entry = emb.TextEmbedding("k" * 32, "push", np.arange(12, dtype=np.float16).reshape(3, 4),
                              np.array([5, 6, 1], np.int32), truncated=True, values_clipped=2)
    back = emb.decode_entry(emb.encode_entry(entry, "float16"))
    np.testing.assert_array_equal(back.embedding, entry.embedding)
    assert (back.key, back.text, back.truncated, back.values_clipped) == (entry.key, "push", True, 2)
    padded, mask = back.padded(5)
    assert padded.shape == (5, 4) and mask.tolist() == [True, True, True, False, False] and not padded[3:].any()
    with pytest.raises(ValueError, match="non-finite"):
        emb.encode_entry(dataclasses.replace(entry, embedding=np.full((3, 4), np.nan, np.float16)))
    with pytest.raises(ValueError, match="do not hold"):
        emb.decode_entry(emb.encode_entry(entry)[:-3])


@dataclasses.dataclass
class _M:  # the two fields of a Manifest the check reads
    dataset: str
    text_encoder: emb.EncoderIdentity | None


def test_check_same_encoder_refuses_mixed_or_missing_encoders():
    a = emb.EncoderIdentity(fingerprint="a" * 64, path="gs://m/t5-xxl", d_model=4096, max_tokens=64)
    same = emb.EncoderIdentity(fingerprint="a" * 64, path="/local/t5-xxl", d_model=4096, max_tokens=64)
    other = emb.EncoderIdentity(fingerprint="b" * 64, path="/local/t5-small", d_model=512, max_tokens=64)
    assert emb.check_same_encoder([_M("rt1", a), _M("bridge", same)]) == a
    with pytest.raises(emb.EncoderMismatchError, match="2 different encoders.*t5-small.*ssv2"):
        emb.check_same_encoder([_M("rt1", a), _M("bridge", same), _M("ssv2", other)])
    with pytest.raises(emb.EncoderMismatchError, match="laion: converted without a text encoder"):
        emb.check_same_encoder([_M("rt1", a), _M("laion", None)])
