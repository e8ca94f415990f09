"""Shard integrity (issue 21, item 2): the manifest records each shard's records, bytes and SHA-256; `inspect`
checks sizes and counts always and hashes with --verify, the trainer refuses a share that does not match, and a
manifest cannot point outside its directory. Every failure is one clear line, never a traceback."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from unisim.trainer import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def converted(language_table_clips):
    return language_table_clips  # shared and read-only: the tampering tests work on a `_copy`


def _copy(converted, tmp_path) -> tuple[str, dict]:
    target = str(tmp_path / "clips")
    shutil.copytree(converted, target)
    return target, json.load(open(os.path.join(target, "manifest.json")))


def _inspect(directory, *flags):
    return subprocess.run([sys.executable, "-m", "unisim.cli", "inspect", directory, *flags], capture_output=True,
                          text=True, cwd=ROOT)


def _filled(manifest) -> list[dict]:
    return [s for s in manifest["shards"] if s["records"]]


def test_the_manifest_records_hashes_and_an_intact_directory_verifies(converted):
    manifest = json.load(open(os.path.join(converted, "manifest.json")))
    for shard in manifest["shards"] + manifest["text_embeddings"]:
        assert len(shard["sha256"]) == 64
    result = _inspect(converted, "--verify", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["verified"] == "sizes, record counts and content hashes"


def test_replaced_truncated_deleted_and_altered_shards_are_each_one_line(converted, tmp_path):
    directory, manifest = _copy(converted, tmp_path)
    first, second = (s["path"] for s in _filled(manifest)[:2])
    shutil.copyfile(os.path.join(directory, second), os.path.join(directory, first))  # another valid shard
    result = _inspect(directory)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"shard {first} holds" in result.stderr
    with pytest.raises(data.MixtureError, match=f"shard {first} holds"):
        data.build_input([data.Source(directory, 1.0)], data.InputConfig(batch_size=2, threads=1))
    shutil.copyfile(os.path.join(converted, first), os.path.join(directory, first))
    # Truncated, then deleted.
    with open(os.path.join(directory, first), "r+b") as f:
        f.truncate(100)
    result = _inspect(directory)
    assert result.returncode == 2 and f"shard {first} holds 100 bytes" in result.stderr
    os.remove(os.path.join(directory, first))
    result = _inspect(directory)
    assert result.returncode == 2 and f"shard {first} is missing" in result.stderr
    assert "Traceback" not in result.stderr
    shutil.copyfile(os.path.join(converted, first), os.path.join(directory, first))
    # Same size and record count, other bytes: only the content hash tells.
    with open(os.path.join(directory, first), "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = _inspect(directory)  # sizes and counts match; reading the records finds the chunk's own hash wrong
    assert result.returncode == 2 and f"shard {first} is corrupt" in result.stderr
    assert "Traceback" not in result.stderr
    result = _inspect(directory, "--verify")
    assert result.returncode == 2 and f"shard {first} has other content" in result.stderr


def test_a_manifest_cannot_point_outside_its_directory(converted, tmp_path):
    directory, manifest = _copy(converted, tmp_path)
    manifest["shards"][0]["path"] = "../../../../etc/passwd"
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    result = _inspect(directory)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'../../../../etc/passwd' is not a plain file name" in result.stderr
    with pytest.raises(data.MixtureError, match="not a plain file name"):
        data.build_input([data.Source(directory, 1.0)], data.InputConfig(batch_size=2, threads=1))
