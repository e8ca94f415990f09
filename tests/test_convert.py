"""The convert pipeline end to end on the hand-built Language Table release (real Beam, TFDS, ArrayRecord)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from unisim.samples.fixtures import language_table as fixtures
import memfs
from unisim.pipelines import convert, inspect
from unisim.shards import reader
from unisim.schemas import record as rec
from unisim.schemas.manifest import MANIFEST_NAME

# 5 episodes × 25 steps at 10 Hz, 20-frame clips with 4 context → clip 0 = frames 0–15, clip 1 = 12–24.
EXPECTED_RECORDS = {"episode_000/00000", "episode_000/00001", "episode_001/00001",  # 001/00000 holds the NaN
                    "episode_004/00000", "episode_004/00001"}  # 002 has a bad JPEG in both clips, 003 no text
EXPECTED_REASONS = {"empty_text": 1, "non_finite_control": 1, "undecodable_image": 2}


def run(source, output, **kwargs):
    clip_threads = kwargs.pop("clip_threads", 1)
    config = convert.ConvertConfig(dataset="language_table", source=source, output=output,
                                   records_per_shard=kwargs.pop("records_per_shard", 2), **kwargs)
    return convert.run(config, clip_threads=clip_threads, command="test")


def read_dir(path):
    return {name: open(os.path.join(path, name), "rb").read() for name in sorted(os.listdir(path))}


@pytest.fixture(scope="module")
def converted(language_table_dir, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("converted"))
    manifest, counters = run(language_table_dir, output)
    return output, manifest, counters


def test_every_item_is_written_or_rejected_with_a_reason(converted):
    output, manifest, counters = converted
    records = list(reader.iter_records(output))
    assert {r.key for r in records} == EXPECTED_RECORDS
    assert manifest.records == 5 and manifest.source_episodes == 5
    assert manifest.rejected_reasons == EXPECTED_REASONS and manifest.rejected == 4
    dead = list(reader.iter_dead_letter(output, manifest))
    assert sorted((r.key, r.reason) for r in dead) == [
        ("episode_001/00000", "non_finite_control"), ("episode_002/00000", "undecodable_image"),
        ("episode_002/00001", "undecodable_image"), ("episode_003", "empty_text")]
    assert all(r.detail and r.source_file.endswith(tuple("0123456789")) for r in dead)
    assert counters["episodes_read"] == 5 and counters["clips_made"] == 5


def test_records_are_valid_clips_with_context_and_tokens(converted):
    output, manifest, _ = converted
    stats = manifest.control_stats
    assert stats.names == ("action_dx", "action_dy") and stats.low_percentile == 1.0
    by_key = {r.key: r for r in reader.iter_records(output)}
    first, second = by_key["episode_000/00000"], by_key["episode_000/00001"]
    assert (first.context_frames, first.num_frames) == (0, 16)
    assert (second.context_frames, second.num_frames) == (4, 13)
    assert second.frame_indices.tolist() == list(range(12, 25))
    assert first.text == "push the block 0 to the left" and first.fps == 10.0
    frames = rec.decode_frames(second)
    assert frames.shape == (13, 192, 320, 3)
    # Frames are the source frames, resized: the magenta square moves right by 15 px a step in the source.
    magenta = lambda f: np.argwhere((f[..., 0] > 200) & (f[..., 1] < 80) & (f[..., 2] > 200))[:, 1].mean()  # noqa: E731
    assert magenta(frames[-1]) > magenta(frames[0]) + 50
    # Tokens are the controls under the manifest's statistics (controls kept as read, float32).
    from unisim.schemas.controls import ControlTokenizer

    np.testing.assert_array_equal(second.control_tokens, ControlTokenizer(stats).encode(second.controls))
    assert manifest.frames_per_record == (13, 16) and manifest.frame_shape == (192, 320, 3)
    assert sum(s.records for s in manifest.shards) == 5 and len(manifest.shards) == 3


def test_rerun_gives_identical_bytes_with_one_or_two_clip_threads(converted, language_table_dir, tmp_path):
    output, _, _ = converted
    reference = read_dir(output)
    run(language_table_dir, str(tmp_path / "again"))  # note: the manifest records the output path
    again = read_dir(str(tmp_path / "again"))
    assert again.keys() == reference.keys()
    assert {k: v for k, v in again.items() if k != MANIFEST_NAME} == {
        k: v for k, v in reference.items() if k != MANIFEST_NAME}
    # In place, with two clip threads: every byte, manifest included, is the same.
    run(language_table_dir, output, clip_threads=2)
    assert read_dir(output) == reference


def test_output_on_a_non_local_filesystem(converted, language_table_dir):
    output, _, _ = converted
    # Through unisim.fileio to the tests' in-memory store (fsspec memory://), as gs://.
    run(language_table_dir, "memory://bucket/out")
    stored = memfs.objects("memory://bucket/out/")
    local = read_dir(output)
    assert sorted(stored) == sorted(f"memory://bucket/out/{name}" for name in local)
    for name, data in local.items():
        if name != MANIFEST_NAME:
            assert stored[f"memory://bucket/out/{name}"] == data, name
    assert not [p for p in stored if "/.tmp-" in p]
    summary = inspect.summarize("memory://bucket/out")
    assert summary["records"] == 5 and summary["rejected_reasons"] == EXPECTED_REASONS


def test_output_with_foreign_files_is_refused(language_table_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not UniSim shards"):
        run(language_table_dir, str(tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_unknown_dataset_and_missing_source_fail_early(tmp_path):
    with pytest.raises(KeyError, match="unknown dataset 'nope'"):
        convert.run(convert.ConvertConfig(dataset="nope", source=str(tmp_path), output=str(tmp_path / "o")))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(str(tmp_path / "missing"), str(tmp_path / "o"))


def _cli(*args):
    return [sys.executable, "-m", "unisim.cli", *args]


def test_killed_run_then_rerun_leaves_exactly_the_clean_result(tmp_path):
    source = fixtures.write_language_table(str(tmp_path / "release"), num_episodes=24, steps=40,
                                           plant_defects=False, num_shards=4)
    clean, killed = str(tmp_path / "clean"), str(tmp_path / "killed")
    args = ["convert", "--dataset", "language_table", "--source", source, "--records_per_shard", "2"]
    subprocess.run(_cli(*args, "--output", clean), check=True, capture_output=True)
    # Kill the second run as soon as its first shard file (final or temporary) appears.
    proc = subprocess.Popen(_cli(*args, "--output", killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.isdir(killed) and any(".array_record" in n for n in os.listdir(killed)):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not os.path.exists(os.path.join(killed, MANIFEST_NAME)), "a killed run must not leave a manifest"
    # Leftovers of an older run with another shard count must not survive either.
    open(os.path.join(killed, "records-00099-of-00100.array_record"), "wb").write(b"stale")
    subprocess.run(_cli(*args, "--output", killed), check=True, capture_output=True)
    clean_files, rerun_files = read_dir(clean), read_dir(killed)
    assert rerun_files.keys() == clean_files.keys()
    manifest = json.loads(clean_files[MANIFEST_NAME])
    assert {s["path"] for s in manifest["shards"]} | {MANIFEST_NAME, *manifest["dead_letter"]} == set(clean_files)
    for name in clean_files:
        if name != MANIFEST_NAME:
            assert rerun_files[name] == clean_files[name], name
    assert manifest["records"] == 24 * 3 and manifest["rejected"] == 0  # 40 steps → clips of 16, 16, 8 targets


def test_cli_inspect_json_and_preview(converted, tmp_path):
    output, _, _ = converted
    preview = str(tmp_path / "sheet.png")
    result = subprocess.run(_cli("inspect", output, "--json", "--preview", preview), check=True,
                            capture_output=True, text=True)
    summary = json.loads(result.stdout)
    assert summary["schema_version"] == rec.SCHEMA_VERSION and summary["records"] == 5
    assert summary["datasets"] == {"language_table": 5}
    assert summary["rejected"] == 4 and summary["rejected_reasons"] == EXPECTED_REASONS
    assert summary["dead_letter"] == {"files": 1, "rejections": 4, "reasons": EXPECTED_REASONS,
                                      "matches_manifest": True}
    assert summary["frame_shape"] == [192, 320, 3] and summary["frames_per_record"] == [13, 16]
    assert sorted(summary["action_texts"]) == [f"push the block {e} to the left" for e in (0, 1, 4)]
    tokens = summary["control_tokens"]
    assert tokens["dims"] == 2 and 0 <= tokens["min"] < tokens["max"] <= 4095
    import cv2

    sheet = cv2.imread(preview)
    assert sheet is not None and sheet.shape[0] > 3 * 192
    adapters = subprocess.run(_cli("adapters"), check=True, capture_output=True, text=True).stdout
    listed = [line.split()[0] for line in adapters.splitlines() if line and not line.startswith(" ")]
    assert {"bridge", "language_table", "rlds", "rt1"} <= set(listed) and listed == sorted(listed)
    assert "--adapter_option fps=… (default 0.0): control rate of the steps in Hz; required" in adapters


def test_dataflow_options_pass_through_to_beam():
    from apache_beam.options.pipeline_options import GoogleCloudOptions, SetupOptions

    runner, options = convert.pipeline_options(
        ["--project", "my-project", "--region", "us-central1", "--temp_location", "gs://bucket/tmp",
         "--setup_file", "./setup.py"], "DataflowRunner")
    assert runner == "DataflowRunner"
    gcp = options.view_as(GoogleCloudOptions)
    assert (gcp.project, gcp.region, gcp.temp_location) == ("my-project", "us-central1", "gs://bucket/tmp")
    assert options.view_as(SetupOptions).setup_file == "./setup.py"
    local, local_options = convert.pipeline_options(["--direct_num_workers", "2"], "local")
    assert type(local).__name__ == "FnApiRunner"  # one worker whatever is asked: parallelism is clip threads
    local_options = local_options.get_all_options()
    assert (local_options["direct_running_mode"], local_options["direct_num_workers"]) == ("in_memory", 1)


def test_a_run_whose_runner_lost_records_is_withdrawn(tmp_path):
    from types import SimpleNamespace

    manifest_path = tmp_path / "manifest.json"
    manifest_path.write_text("{}")
    complete = SimpleNamespace(records=9, rejected_reasons={"duplicate_key": 1})
    convert.check_nothing_lost(str(tmp_path), complete, {"records_encoded": 10})
    conflicts = SimpleNamespace(records=7, rejected_reasons={"duplicate_key": 1, "conflicting_key": 2})
    convert.check_nothing_lost(str(tmp_path), conflicts, {"records_encoded": 10})
    assert manifest_path.exists()
    short = SimpleNamespace(records=7, rejected_reasons={"duplicate_key": 1})
    with pytest.raises(convert.LostRecordsError, match="lost 2"):
        convert.check_nothing_lost(str(tmp_path), short, {"records_encoded": 10})
    assert not manifest_path.exists()  # inspect and the trainer refuse a directory without a manifest
