"""The laion adapter on img2dataset and COYO-style fixtures with planted bad items, through the conformance kit."""

import os

import pytest

from unisim.samples.fixtures import images as imf
from unisim.samples.fixtures.language_table import copy_tree
from unisim.adapters import registry
from unisim.adapters.laion import image_pixels
from unisim.pipelines import inspect
from unisim.shards import reader
from unisim.pipelines.conformance import Expectation, check_adapter


def test_img2dataset_tars_pass_the_kit_with_every_bad_item_rejected(tmp_path):
    root = imf.write_img2dataset(str(tmp_path / "laion"))
    report = check_adapter(Expectation(dataset="laion", source=root, **imf.LAION_TAR_EXPECT), str(tmp_path))
    summary = inspect.summarize(report.output)
    assert summary["frames_per_record"] == [1, 1]
    records = {r.episode_id: r for r in reader.iter_records(report.output, report.manifest)}
    assert records["000000000"].text == "a red mug on a wooden table" and records["000000000"].is_image
    assert records["000000001"].text == "Ein Hund im Schnee — ❄"
    reasons = {r.key: r.reason for r in report.dead_letter}
    assert reasons["000000007"] == reasons["000000008"] == "download_failed"
    assert reasons["00000.tar/../../etc/evil.jpg"] == "unsafe_archive_member"
    assert reasons["000000004"] == "image_too_large" and reasons["000000002/00000"] == "undecodable_image"
    assert reasons["000000006"] == "missing_image" and reasons["000000005"] == "empty_text"
    # Nothing from the archive was extracted anywhere: the traversal target does not exist.
    assert not os.path.exists(os.path.join(str(tmp_path), "etc", "evil.jpg"))


def test_coyo_parquet_with_image_files_passes_the_kit(tmp_path):
    root = imf.write_coyo_files(str(tmp_path / "coyo"))
    report = check_adapter(Expectation(dataset="laion", source=root, **imf.COYO_EXPECT), str(tmp_path))
    assert {e.episode_id: e.text for e in report.episodes} == {"4000000": "a lighthouse at dusk",
                                                               "4000001": "two cats on a sofa"}
    assert report.rejections[0].key == "4000002"
    assert "never downloaded (url https://example.com/2.jpg)" in report.rejections[0].detail


def test_laion_400m_column_names_and_a_named_caption_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = str(tmp_path / "laion400m")
    os.makedirs(root)
    with open(os.path.join(root, "img.jpg"), "wb") as f:
        f.write(imf.jpeg())
    rows = [{"SAMPLE_ID": 17, "URL": "https://x/y.jpg", "TEXT": "a boat", "NOTE": "a note", "image_path": "img.jpg",
             "WIDTH": 64, "HEIGHT": 48, "similarity": 0.33},
            # SAMPLE_ID is not promised unique: a second row with it is kept under <key>@<row>.
            {"SAMPLE_ID": 17, "URL": "https://x/z.jpg", "TEXT": "a ship", "NOTE": "", "image_path": "img.jpg",
             "WIDTH": 64, "HEIGHT": 48, "similarity": 0.31}]
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(root, "part-00000.parquet"))
    episode, again = registry.create("laion", root).read(registry.create("laion", root).work_units()[0])
    assert (episode.episode_id, episode.text, episode.frames[0][:2]) == ("17", "a boat", b"\xff\xd8")
    assert (again.episode_id, again.text) == ("17@1", "a ship")
    adapter = registry.create("laion", root, options={"caption": "NOTE"})
    assert next(adapter.read(adapter.work_units()[0])).text == "a note"
    with pytest.raises(ValueError, match="not a column"):
        bad = registry.create("laion", root, options={"caption": "CAPTION"})
        list(bad.read(bad.work_units()[0]))


@pytest.mark.parametrize("columns", [("SAMPLE_ID", "URL", "TEXT", "WIDTH", "HEIGHT"), ("URL", "TEXT")])
def test_a_release_of_urls_alone_stops_before_the_pipeline_with_the_download_command(tmp_path, columns, capsys):
    """LAION-400M's parquet (SAMPLE_ID, URL, TEXT, …) and img2dataset's own test parquet (URL, TEXT) hold URLs:
    refused at launch, saying how to download them, and nothing is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from unisim.adapters.laion import MetadataOnlySource
    from unisim.cli import main

    root = str(tmp_path / "laion400m")
    os.makedirs(root)
    values = {"SAMPLE_ID": lambda i: 1000 + i, "URL": lambda i: f"https://example.com/{i}.jpg",
              "TEXT": lambda i: f"caption {i}", "WIDTH": lambda i: 64, "HEIGHT": lambda i: 48}
    rows = [{c: values[c](i) for c in columns} for i in range(40)]
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(root, "part-00000.parquet"))
    with pytest.raises(MetadataOnlySource, match="img2dataset --url_list .* --url_col URL --caption_col TEXT"):
        registry.create("laion", root).work_units()
    output = str(tmp_path / "out")
    assert main(["convert", "--dataset", "laion", "--source", root, "--output", output]) != 0
    assert "holds image URLs, not images" in capsys.readouterr().err and not os.path.exists(output)


def test_img2dataset_files_layout_with_six_digit_shards(tmp_path):
    """img2dataset's `files` output: NNNNNN/KEY.jpg beside NNNNNN.parquet; shard names have oom_shard_count digits
    (5 by default, 6 past 99,999 shards), so the folder is found from the table's name, not the key's first 5."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = str(tmp_path / "files")
    os.makedirs(os.path.join(root, "100000"))
    keys = ["1000000000", "1000000001"]
    for i, key in enumerate(keys):
        with open(os.path.join(root, "100000", f"{key}.jpg"), "wb") as f:
            f.write(imf.jpeg(seed=i))
    rows = [{"key": k, "url": f"https://x/{k}.jpg", "caption": f"image {k}", "status": "success"} for k in keys]
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(root, "100000.parquet"))
    adapter = registry.create("laion", root)
    assert [e.episode_id for e in adapter.read(adapter.work_units()[0])] == keys


def test_the_pixel_count_comes_from_the_header_alone():
    assert image_pixels(imf.png_bomb(30_000, 30_000)) == 900_000_000  # 900 Mpx from a file of a few hundred bytes
    assert image_pixels(imf.jpeg(48, 64)) == 48 * 64
    assert image_pixels(b"not an image") is None


def test_both_layouts_pass_the_kit_from_a_non_local_filesystem(tmp_path):
    for name, writer, expect in (("laion", imf.write_img2dataset, imf.LAION_TAR_EXPECT),
                                 ("coyo", imf.write_coyo_files, imf.COYO_EXPECT)):
        remote = copy_tree(writer(str(tmp_path / name)), f"memory://laion-kit-{name}")
        check_adapter(Expectation(dataset="laion", source=remote, **expect), str(tmp_path / f"out-{name}"))
