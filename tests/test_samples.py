"""The built-in human-activity video sample (Something-Something V2 layout) and image-text sample (img2dataset
webdataset layout): deterministic for a seed, and converted by the real adapters through the conformance kit."""

import hashlib
import json
import os
import tarfile

import pyarrow.parquet as pq

from unisim.adapters import video
from unisim.shards import reader
from unisim.pipelines.conformance import Expectation, check_adapter
from unisim.samples import activity_video, image_text


def digest(root: str) -> dict[str, str]:
    """Every file under root, by relative path → SHA-256 of its bytes."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_activity_video_sample_is_the_ssv2_layout_and_each_video_becomes_one_record(tmp_path):
    count = 24  # the default, as the demo writes it
    root = activity_video.write_sample(str(tmp_path / "ssv2"), seed=1)
    labels = {split: json.load(open(os.path.join(root, "labels", f"{split}.json"))) for split in
              ("train", "validation")}
    assert [len(labels["train"]), len(labels["validation"])] == [20, 4]  # every sixth video is in validation
    index = json.load(open(os.path.join(root, "labels", "labels.json")))
    assert index["Pushing something from left to right"] == "93" and index["Moving something up"] == "45"
    for entry in labels["train"] + labels["validation"]:
        assert set(entry) == {"id", "label", "template", "placeholders"} and entry["id"].isdigit()
        filled = entry["template"].replace("[something]", entry["placeholders"][0])
        assert entry["label"] == filled[0].lower() + filled[1:]  # lower-case first letter, as released
        assert index[entry["template"].replace("[", "").replace("]", "")]  # every template is in labels.json
        info = video.probe(os.path.join(root, activity_video.VIDEO_DIR, f"{entry['id']}.webm"))
        assert info.fps == 12.0 and info.height == 240 and info.width in (320, 426) and 24 <= info.frames <= 36
    report = check_adapter(Expectation(dataset="ssv2", source=root, episodes=count, read_rejections={},
                                       records=count, rejected_reasons={}), str(tmp_path))
    assert report.units == ["train:0", "validation:0"]
    records = list(reader.iter_records(report.output, report.manifest))
    expected = {f"{split}/{e['id']}": e["label"] for split, entries in labels.items() for e in entries}
    assert {r.episode_id: r.text for r in records} == expected
    assert all(r.fps == 12.0 and len(r.frames) == 20 and not r.is_image for r in records)


def test_activity_video_sample_is_byte_identical_for_a_seed(tmp_path):
    first = digest(activity_video.write_sample(str(tmp_path / "a"), num_videos=7, seed=5))  # one per template
    assert first == digest(activity_video.write_sample(str(tmp_path / "b"), num_videos=7, seed=5))
    assert len(first) == 7 + 3  # videos, labels.json, train.json, validation.json
    other = digest(activity_video.write_sample(str(tmp_path / "c"), num_videos=7, seed=6))
    assert first["labels/train.json"] != other["labels/train.json"]


def test_image_text_sample_is_the_img2dataset_layout_and_failed_downloads_are_rejected(tmp_path):
    root = image_text.write_sample(str(tmp_path / "laion"))  # the default 64 rows: 2 shards of 32
    assert sorted(os.listdir(root)) == ["00000.parquet", "00000.tar", "00000_stats.json",
                                        "00001.parquet", "00001.tar", "00001_stats.json"]
    rows = [row for shard in ("00000", "00001") for row in pq.read_table(os.path.join(root, f"{shard}.parquet"))
            .to_pylist()]
    failed = [row for row in rows if row["status"] != "success"]
    assert len(rows) == 64 and len(failed) == 4 and all(r["status"] == "failed_to_download" for r in failed)
    assert all(r["error_message"] in image_text.ERRORS for r in failed)
    stats = [json.load(open(os.path.join(root, f"{shard}_stats.json"))) for shard in ("00000", "00001")]
    assert sum(s["count"] for s in stats) == 64 and sum(s["successes"] for s in stats) == 60
    assert sum(s["failed_to_download"] for s in stats) == 4
    with tarfile.open(os.path.join(root, "00001.tar")) as archive:
        names = archive.getnames()
        key = next(r["key"] for r in rows[32:] if r["status"] == "success")  # shard 1's keys start at 10^4
        assert key.startswith("00001") and names[:3] == [f"{key}.jpg", f"{key}.json", f"{key}.txt"]
        meta = json.loads(archive.extractfile(f"{key}.json").read())
        assert meta["caption"] == archive.extractfile(f"{key}.txt").read().decode()
    assert not {f"{r['key']}.jpg" for r in failed} & set(names)  # failed rows never reached the tar
    assert {"url", "caption", "key", "status", "error_message", "width", "height", "sha256"} <= set(meta)

    report = check_adapter(Expectation(dataset="laion", source=root, episodes=60,
                                       read_rejections={"download_failed": 4}, records=60,
                                       rejected_reasons={"download_failed": 4}), str(tmp_path))
    assert {r.key for r in report.dead_letter} == {r["key"] for r in failed}
    records = {r.episode_id: r for r in reader.iter_records(report.output, report.manifest)}
    captions = {r["key"]: r["caption"] for r in rows if r["status"] == "success"}
    assert {key: r.text for key, r in records.items()} == captions
    assert all(r.is_image and len(r.frames) == 1 for r in records.values())
    assert all(text.endswith(" table") for text in captions.values())


def test_image_text_sample_is_byte_identical_for_a_seed(tmp_path):
    first = digest(image_text.write_sample(str(tmp_path / "a"), num_images=40, seed=2))
    assert first == digest(image_text.write_sample(str(tmp_path / "b"), num_images=40, seed=2))
    assert first != digest(image_text.write_sample(str(tmp_path / "c"), num_images=40, seed=3))
