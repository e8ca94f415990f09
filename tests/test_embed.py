"""T5 embeddings in the convert pipeline: each unique text encoded once, records refer to the store, reruns equal."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from unisim.samples.fixtures import language_table as fixtures
import memfs
from unisim.pipelines import convert, inspect
from unisim.shards import reader
from unisim.pipelines.embed import EncoderSettings
from unisim.encoders.t5 import T5TextEncoder, encoder_identity
from unisim.samples import tabletop
from unisim.schemas.manifest import MANIFEST_NAME
from unisim.schemas.text_embeddings import TextEmbeddingStore, check_same_encoder


def run(source, output, encoder, clip_threads=1, **text):
    text_options = convert.TextOptions(encoder=EncoderSettings(encoder, batch_size=2), **text)
    config = convert.ConvertConfig(dataset="language_table", source=source, output=output, records_per_shard=2,
                                   text=text_options)
    return convert.run(config, clip_threads=clip_threads, command="test")


def test_a_repeated_string_reaches_the_encoder_once(language_table_dir, tiny_t5_dir, tmp_path):
    output = str(tmp_path / "out")
    # Language only (no controls text): 5 records from 3 episodes share 3 instructions.
    manifest, counters = run(language_table_dir, output, tiny_t5_dir, controls_as_text=False,
                             domain_prefix="language_table")
    records = list(reader.iter_records(output))
    texts = {r.conditioning_text for r in records}
    assert len(records) == 5 and texts == {f"language_table: push the block {e} to the left" for e in (0, 1, 4)}
    assert counters["encoder_inputs"] == 3 and manifest.encoder_calls == 3 and manifest.unique_texts == 3
    assert manifest.text_encoder == encoder_identity(tiny_t5_dir, 64)
    store = TextEmbeddingStore.from_manifest(output, manifest)
    assert len(store) == 3
    # The store follows the record shards: embedding shard j holds exactly the texts record shard j uses.
    assert manifest.text_embeddings_by_record_shard and len(manifest.text_embeddings) == len(manifest.shards) == 3
    for shard, embeddings in zip(manifest.shards, manifest.text_embeddings):
        used = {r.text_key for r in reader.iter_records(output, dataclasses.replace(manifest, shards=[shard]))}
        assert set(TextEmbeddingStore(output, [embeddings.path]).keys()) == used
    direct = T5TextEncoder(tiny_t5_dir)
    for record in records:
        entry = store.lookup(record.text_key)
        assert entry.text == record.conditioning_text and entry.embedding.dtype == np.float16
        alone = direct.encode([record.text_key], [record.conditioning_text])[0]
        np.testing.assert_array_equal(entry.token_ids, alone.token_ids)
        # Batch composition moves the floats a little (2e-3); the store's int8 blocks add up to half a step, at most
        # the row's largest |value| / 254 (tests/test_text_embeddings.py for the bound).
        step = np.abs(alone.embedding).max(axis=-1, keepdims=True) / 127
        assert (np.abs(entry.embedding.astype(np.float32) - alone.embedding) <= 2e-3 + step).all()
    store.close()


@pytest.fixture(scope="module")
def tabletop_dir(tmp_path_factory):
    return tabletop.write_sample(str(tmp_path_factory.mktemp("tabletop")), num_episodes=3, seed=0, num_shards=2)


def _cli(*args):
    return [sys.executable, "-m", "unisim.cli", *args]


def test_tabletop_twice_gives_identical_bytes_and_inspect_reports_the_encoder(tabletop_dir, tiny_t5_dir, tmp_path):
    output = str(tmp_path / "clips")
    args = ["convert", "--dataset", "language_table", "--source", tabletop_dir, "--output", output,
            "--records_per_shard", "2", "--text_encoder", tiny_t5_dir, "--text_batch_size", "2"]
    subprocess.run(_cli(*args), check=True, capture_output=True)
    first = fixtures.read_dir(output)
    # Again in place, now with two clip threads: every byte is the same.
    subprocess.run(_cli(*args, "--direct_num_workers", "2"), check=True, capture_output=True)
    again = fixtures.read_dir(output)
    without_manifest = lambda files: {k: v for k, v in files.items() if k != MANIFEST_NAME}  # noqa: E731
    assert without_manifest(again) == without_manifest(first)
    without_command = lambda data: {k: v for k, v in json.loads(data).items() if k != "command"}  # noqa: E731
    assert without_command(again[MANIFEST_NAME]) == without_command(first[MANIFEST_NAME])
    assert any(name.startswith("text_embeddings-") and name.endswith(".keys") for name in first)
    summary = json.loads(subprocess.run(_cli("inspect", output, "--json"), check=True, capture_output=True,
                                        text=True).stdout)
    manifest = json.loads(first[MANIFEST_NAME])
    assert summary["text_encoder"] == manifest["text_encoder"] and summary["text_encoder"]["path"] == tiny_t5_dir
    # Controls as text (default for a dataset with controls): every clip has its own text, each embedded once.
    assert summary["unique_texts"] == summary["encoder_calls"] == summary["records"] > 0
    assert summary["records_without_embedding"] == 0
    assert summary["conditioning"]["domain_prefix"] == tabletop.SAMPLE_NAME
    assert summary["conditioning"]["controls_as_text"] is True
    assert 0 < summary["embedding_bytes_per_record"]


def test_bad_text_is_rejected_or_truncated_and_counted(tiny_t5_dir, tmp_path):
    long_text = b"push the block 1 to the left and then push it back to the right again"
    source = fixtures.write_language_table_texts(str(tmp_path / "release"), [
        b"push the block 0 to the left", b"\xff\xfe push the block", long_text, b"push \xc3 left"])
    manifest, _ = run(source, str(tmp_path / "out"), tiny_t5_dir, max_text_chars=60, controls_as_text=False,
                      domain_prefix="")
    assert manifest.rejected_reasons == {"invalid_text_encoding": 2, "text_too_long": 1}
    assert manifest.records == 1 and manifest.texts_truncated == 0
    # Within the character limit but over the token limit: embedded, truncated and counted.
    tight = dict(encoder=EncoderSettings(tiny_t5_dir, max_tokens=5))
    config = convert.ConvertConfig(dataset="language_table", source=source, output=str(tmp_path / "tight"),
                                   text=convert.TextOptions(domain_prefix="", controls_as_text=False, **tight))
    manifest, counters = convert.run(config, command="test")
    assert manifest.texts_truncated == 2 and counters["texts_truncated"] == 2  # the two valid instructions
    store = TextEmbeddingStore.from_manifest(str(tmp_path / "tight"), manifest)
    assert all(store.lookup(k).embedding.shape[0] == 5 and store.lookup(k).truncated for k in store.keys())


def test_encoder_and_output_on_an_object_store(language_table_dir, tiny_t5_dir, tmp_path):
    for name in os.listdir(tiny_t5_dir):
        memfs.put(f"memory://models/t5/{name}", open(os.path.join(tiny_t5_dir, name), "rb").read())
    manifest, _ = run(language_table_dir, "memory://bucket/embedded", "memory://models/t5")
    assert manifest.text_embeddings and manifest.text_encoder.path == "memory://models/t5"
    local_manifest, _ = run(language_table_dir, str(tmp_path / "local"), tiny_t5_dir)
    stored = memfs.objects("memory://bucket/embedded/")
    for shard in local_manifest.text_embeddings:
        assert stored[f"memory://bucket/embedded/{shard.path}"] == open(tmp_path / "local" / shard.path, "rb").read()
    summary = inspect.summarize("memory://bucket/embedded")
    assert summary["records_without_embedding"] == 0 and summary["unique_texts"] == summary["records"] == 5
    check_same_encoder([manifest, local_manifest])  # same checkpoint, two places: compatible


def test_bad_text_options_fail_before_the_output_is_touched(language_table_dir, tmp_path):
    output = tmp_path / "previous"
    output.mkdir()
    (output / "manifest.json").write_text("{}")  # a previous run's output must survive a bad command
    with pytest.raises(FileNotFoundError, match="config.json"):
        run(language_table_dir, str(output), str(tmp_path / "no-such-checkpoint"))
    with pytest.raises(ValueError, match="prefix"):
        convert.run(convert.ConvertConfig(dataset="language_table", source=language_table_dir, output=str(output),
                                          text=convert.TextOptions(domain_prefix="  two  spaces")), command="test")
    with pytest.raises(ValueError, match="max_tokens"):
        EncoderSettings("x", max_tokens=1)
    assert (output / "manifest.json").read_text() == "{}"
