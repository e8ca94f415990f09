"""trainer/data.py: the grain mixture over converted shards (tabletop clips + single images), with real embeddings."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from unisim.samples.fixtures import images as imf
from unisim.pipelines import convert
from unisim.pipelines.embed import EncoderSettings
from unisim.schemas.text_embeddings import EncoderMismatchError
from unisim.shards import reader
from unisim.trainer import data

CONFIG = data.InputConfig(batch_size=3, threads=2, seed=7)


def _convert(dataset, source, output, encoder):
    text = convert.TextOptions(encoder=EncoderSettings(encoder, batch_size=4) if encoder else None)
    convert.run(convert.ConvertConfig(dataset=dataset, source=source, output=output, records_per_shard=2, text=text),
                command="test")
    return output


@pytest.fixture(scope="module")
def shards(language_table_dir, tiny_t5_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("train_input")
    tabletop = _convert("language_table", language_table_dir, str(root / "tabletop"), tiny_t5_dir)
    images = _convert("laion", imf.write_coyo_files(str(root / "coyo")), str(root / "images"), tiny_t5_dir)
    return tabletop, images


def _batches(train_input, n):
    iterator = iter(train_input.dataset)
    return [next(iterator) for _ in range(n)]


def test_batches_have_the_base_shape_and_masks_say_what_is_real(shards):
    tabletop, images = shards
    train_input = data.build_input([data.Source(tabletop, 2.0), data.Source(images, 1.0)], CONFIG)
    assert train_input.control_dims == 2 and train_input.text_dim > 0
    batch = _batches(train_input, 1)[0]
    assert batch["frames"].shape == (3, 16, 24, 40, 3) and batch["frames"].dtype == np.uint8
    assert batch["history"].shape == (3, 4, 24, 40, 3)
    assert batch["text"].shape == (3, 64, train_input.text_dim) and batch["text"].dtype == np.float16
    assert batch["controls"].shape == (3, 16, 2) and batch["drop_condition"].shape == (3,)
    for i, source in enumerate(batch["source"]):
        if source == 1:  # a single image: one target frame, no history, no controls
            assert batch["frame_mask"][i].sum() == 1 and not batch["history_mask"][i].any()
            assert not batch["control_mask"][i].any() and not batch["frames"][i, 1:].any()
        else:
            assert batch["frame_mask"][i].sum() >= 1 and batch["control_mask"][i][batch["frame_mask"][i]][1:].all()
        assert batch["text_mask"][i].any() and not batch["text"][i][~batch["text_mask"][i]].any()


def test_the_realized_mixture_follows_the_weights_and_guidance_drops_about_its_share(shards):
    tabletop, images = shards
    train_input = data.build_input([data.Source(tabletop, 0.1), data.Source(images, 0.05)],
                                   dataclasses.replace(CONFIG, batch_size=8, condition_drop=0.25))
    batches = _batches(train_input, 30)
    counts = np.bincount(np.concatenate([b["source"] for b in batches]), minlength=2)
    np.testing.assert_allclose(data.realized_proportions(counts), [2 / 3, 1 / 3], atol=0.01)
    dropped = np.concatenate([b["drop_condition"] for b in batches]).mean()
    assert 0.15 < dropped < 0.35  # 240 draws at p = 0.25


def test_the_iterator_state_resumes_the_same_examples(shards):
    tabletop, images = shards
    sources = [data.Source(tabletop, 1.0), data.Source(images, 1.0)]
    iterator = iter(data.build_input(sources, CONFIG).dataset)
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(2)]
    resumed = iter(data.build_input(sources, CONFIG).dataset)  # a new process would build it anew
    resumed.set_state(state)
    for want, got in zip(expected, [next(resumed) for _ in range(2)]):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_two_processes_read_disjoint_shares_each_mixed_by_the_weights_and_resumable(shards):
    tabletop, images = shards
    sources = [data.Source(tabletop, 0.1), data.Source(images, 0.05)]
    config = dataclasses.replace(CONFIG, batch_size=8)
    inputs = [data.build_input(sources, config, p, 2) for p in range(2)]
    first, second = (set(i.shares[0].shards) for i in inputs)  # tabletop: several shards, split between them
    assert not first & second and first | second == {j for j, s in enumerate(inputs[0].manifests[0].shards)
                                                      if s.records}  # empty shards are nobody's
    # The images fit one shard: both processes read it, taking interleaved positions of its stream.
    assert [(i.shares[1].shards, i.shares[1].rank, i.shares[1].readers) for i in inputs] == [((0,), 0, 2),
                                                                                              ((0,), 1, 2)]
    seen = []
    for train_input in inputs:
        batches = _batches(train_input, 30)
        counts = np.bincount(np.concatenate([b["source"] for b in batches]), minlength=2)
        np.testing.assert_allclose(data.realized_proportions(counts), [2 / 3, 1 / 3], atol=0.01)
        seen.append({b["frames"][i].tobytes() for b in batches for i in range(len(b["source"])) if b["source"][i] == 0})
    assert not seen[0] & seen[1]  # no tabletop record read by both processes
    iterator = iter(inputs[1].dataset)
    next(iterator)
    state = iterator.get_state()
    want = next(iterator)
    resumed = iter(data.build_input(sources, config, 1, 2).dataset)
    resumed.set_state(state)
    got = next(resumed)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_mixtures_are_refused_with_a_clear_reason(shards, tmp_path, language_table_dir):
    tabletop, images = shards
    with pytest.raises(data.MixtureError, match="no manifest.json"):
        data.build_input([data.Source(str(tmp_path), 1.0)], CONFIG)
    old = shutil.copytree(tabletop, str(tmp_path / "old"))
    manifest = json.load(open(os.path.join(old, "manifest.json")))
    manifest["schema_version"] = 1
    json.dump(manifest, open(os.path.join(old, "manifest.json"), "w"))
    with pytest.raises(data.MixtureError, match="schema version 1"):
        data.build_input([data.Source(tabletop, 1.0), data.Source(old, 1.0)], CONFIG)
    plain = _convert("language_table", language_table_dir, str(tmp_path / "plain"), None)
    with pytest.raises(EncoderMismatchError, match="converted without a text encoder"):
        data.build_input([data.Source(tabletop, 1.0), data.Source(plain, 1.0)], CONFIG)


def test_mixture_specs(tmp_path):
    assert data.parse_mixture("/a/b:0.1, gs://c/d:0.05") == [data.Source("/a/b", 0.1), data.Source("gs://c/d", 0.05)]
    spec = tmp_path / "mix.py"
    spec.write_text("MIXTURE = [('/x', 0.1, 'ego4d'), ('/y', 0.05)]\n")
    assert data.parse_mixture(str(spec)) == [data.Source("/x", 0.1, "ego4d"), data.Source("/y", 0.05)]
    for bad in ("/a", "/a:x", "/a:0", ""):
        with pytest.raises(data.MixtureError):
            data.parse_mixture(bad)


def test_the_input_path_never_imports_tensorflow(shards):
    tabletop, images = shards
    code = ("import sys; from unisim.trainer import data; "
            f"it = iter(data.build_input(data.parse_mixture({tabletop + ':1,' + images + ':1'!r}), "
            "data.InputConfig(batch_size=2, threads=1)).dataset); next(it); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_the_shipped_mixtures_parse_with_the_papers_weights():
    table5 = data.parse_mixture(os.path.join(os.path.dirname(data.__file__), "configs", "mixtures", "paper_table5.py"))
    assert len(table5) == 14 and {s.weight for s in table5} == {0.1, 0.05}
    assert sum(s.weight for s in table5) == pytest.approx(1.0)  # 6 × 0.1 + 8 × 0.05
    assert data.parse_mixture(os.path.join(os.path.dirname(data.__file__), "configs", "mixtures", "demo.py"))


def test_reduced_jpeg_decoding_matches_decode_then_area_resize():
    import cv2

    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 255, (24, 40, 3), np.uint8), (320, 192), interpolation=cv2.INTER_CUBIC)
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    full = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    for target in ((24, 40), (48, 80), (30, 50), (192, 320)):
        got = reader.decode_resized([jpeg], (192, 320), target)[0]
        expected = cv2.resize(full, (target[1], target[0]), interpolation=cv2.INTER_AREA)
        assert got.shape == (*target, 3)
        assert np.abs(got.astype(int) - expected).mean() < 3.0, target  # the same picture, colour order included


def test_a_remote_source_is_copied_once_and_reads_the_same(shards, tmp_path):
    import memfs

    tabletop, _ = shards
    for name in os.listdir(tabletop):
        memfs.put(f"memory://bucket/tabletop/{name}", open(os.path.join(tabletop, name), "rb").read())
    config = dataclasses.replace(CONFIG, cache_dir=str(tmp_path / "cache"))
    remote = _batches(data.build_input([data.Source("memory://bucket/tabletop", 1.0)], config), 2)
    local = _batches(data.build_input([data.Source(tabletop, 1.0)], config), 2)
    for got, want in zip(remote, local):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    (copy,) = os.listdir(tmp_path / "cache")
    stamp = os.path.getmtime(tmp_path / "cache" / copy / "manifest.json")
    lines = []
    data.build_input([data.Source("memory://bucket/tabletop", 1.0)], config, log=lines.append)  # reused as it is
    assert os.path.getmtime(tmp_path / "cache" / copy / "manifest.json") == stamp
    assert "fetched 0 bytes" in lines[0]
    with pytest.raises(data.MixtureError, match="no manifest.json"):
        data.build_input([data.Source("memory://bucket/elsewhere", 1.0)], config)
    # Process 1 of 2 copies its own shards and their embedding shards only.
    share_cache = tmp_path / "share-cache"
    second = data.build_input([data.Source("memory://bucket/tabletop", 1.0)],
                              dataclasses.replace(config, cache_dir=str(share_cache)), 1, 2, log=lines.append)
    (manifest,) = second.manifests
    filled = [i for i, s in enumerate(manifest.shards) if s.records]
    assert second.shares[0] == data.Share(tuple(filled[1::2])) and len(filled) >= 2
    want = {name for name, _ in data.share_files(manifest, second.shares[0])} | {"manifest.json"}
    (copy,) = os.listdir(share_cache)
    assert set(os.listdir(share_cache / copy)) == want
    assert manifest.shards[filled[0]].path not in want and manifest.text_embeddings[filled[0]].path not in want
    fetched = int(lines[-1].split("fetched ")[1].split(" bytes")[0].replace(",", ""))
    assert fetched == sum(os.path.getsize(share_cache / copy / name) for name in want - {"manifest.json"})
    assert fetched < sum(s.bytes for s in manifest.shards + manifest.text_embeddings) / 2


def test_random_windows_keep_history_targets_and_controls_in_step(shards):
    """With `random_window`, an example's targets start at a frame drawn from [1, n − frames]: the history is the
    frames just before it, and target t's controls are those of the frame before it. Checked on a record whose
    frame values and control tokens are their own frame index."""
    import cv2

    from unisim.schemas import record as rec
    from unisim.schemas.manifest import Manifest

    tabletop, _ = shards
    manifest = Manifest.loads(open(os.path.join(tabletop, "manifest.json")).read())
    source = data.Source(tabletop, 1.0)
    real = rec.decode(_first_record(tabletop, manifest), validate_record=False)
    n, frames = 12, 4
    record = dataclasses.replace(
        real, frames=[cv2.imencode(".png", np.full((8, 8, 3), 10 * i, np.uint8))[1].tobytes() for i in range(n)],
        image_format="png", height=8, width=8, context_frames=0, controls=np.zeros((n, 2), np.float32),
        control_tokens=np.repeat(np.arange(n, dtype=np.uint16)[:, None], 2, axis=1),
        frame_indices=np.arange(n, dtype=np.int32))
    config = dataclasses.replace(CONFIG, frames=frames, height=8, width=8, random_window=True)
    maker = data.ExampleMaker([source], [manifest], config)
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        example = maker((0, rec.encode(record)), rng)
        targets = example["frames"][:, 0, 0, 0] // 10
        start = int(targets[0])
        starts.add(start)
        assert example["frame_mask"].all() and list(targets) == list(range(start, start + frames))
        present = example["history_mask"]
        assert present[-1] and list(example["history"][present, 0, 0, 0] // 10) == list(
            range(start - present.sum(), start))
        np.testing.assert_array_equal(example["controls"][:, 0], np.arange(start - 1, start - 1 + frames))
    assert starts == set(range(1, n - frames + 1))  # every window with a frame of history and full targets


def _first_record(directory, manifest):
    import grain

    return grain.sources.ArrayRecordDataSource([os.path.join(directory, s.path) for s in manifest.shards
                                                if s.records])[0]


def test_text_drop_and_control_drop_leave_the_other_condition(shards):
    """text_drop: an example with controls keeps them and loses its text; control_drop: the reverse (so controls
    alone and text alone are trained conditions). Single images have no controls and always keep their text."""
    tabletop, images = shards
    for field in ("text_drop", "control_drop"):
        config = dataclasses.replace(CONFIG, batch_size=4, condition_drop=0.0, **{field: 1.0})
        batch = _batches(data.build_input([data.Source(tabletop, 1.0), data.Source(images, 1.0)], config), 1)[0]
        for i, source in enumerate(batch["source"]):
            if source == 1:
                assert batch["text_mask"][i].any() and not batch["control_mask"][i].any()
            elif field == "text_drop":
                assert not batch["text_mask"][i].any() and not batch["text"][i].any()
                assert batch["control_mask"][i][batch["frame_mask"][i]][1:].all()
            else:
                assert batch["text_mask"][i].any() and not batch["control_mask"][i].any()
                assert not batch["controls"][i].any()


def test_history_ghost_blends_history_with_an_earlier_frame_and_leaves_the_targets():
    """`InputConfig.history_ghost`: from the lag on, each history frame is (1 − w) × itself + w × the frame `lag`
    before it (rounded); the frames before the lag are untouched."""
    history = np.stack([np.full((2, 3, 3), v, np.uint8) for v in (0, 40, 200, 255)])
    data.ghost(history, 0.25, 2)
    assert history[:, 0, 0, 0].tolist() == [0, 40, 150, 201]  # 0.75·200 + 0.25·0; 0.75·255 + 0.25·40 = 201.25


def test_history_ghost_in_the_stream(shards):
    """In the loader: the same seed gives the same batch, the targets stay clean, and only history frames with an
    earlier frame to blend with change."""
    tabletop, _ = shards
    plain = dataclasses.replace(CONFIG, batch_size=4, condition_drop=0.0)
    ghosted = dataclasses.replace(plain, history_ghost=0.5)
    a, b, c = (_batches(data.build_input([data.Source(tabletop, 1.0)], config), 1)[0]
               for config in (plain, ghosted, ghosted))
    assert all(np.array_equal(b[k], c[k]) for k in b)  # deterministic
    np.testing.assert_array_equal(a["frames"], b["frames"])  # targets clean
    changed = (a["history"] != b["history"]).any(axis=(2, 3, 4))  # [batch, history frame]
    assert changed.any() and not changed[:, 0].any()  # the first frame has nothing earlier to blend with
