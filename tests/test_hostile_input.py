"""Hostile inputs (issue 21, item 1), at small sizes: every bomb is refused before it is allocated, every decoder
failure is a counted reason, and nothing here crashes a conversion."""

import os
import pickle
import shutil
import subprocess
import tarfile

import numpy as np
import pytest

from unisim.samples.fixtures import images as imf
from unisim.adapters import files, registry, safe_pickle
from unisim.adapters.base import Episode
from unisim.pipelines import frames
from unisim.schemas.dead_letter import Rejection


def test_frame_decoding_refuses_bombs_and_turns_decoder_errors_into_reasons():
    for data, reason in ((imf.png_bomb(30_000, 30_000), "image_too_large"),
                         (imf.png_bomb(100_000, 100_000), "image_too_large"),
                         (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "undecodable_image"),
                         (b"", "missing_image")):
        with pytest.raises(frames.FrameError) as caught:
            frames.decode_rgb(data)
        assert caught.value.reason == reason


def _tar_with(path: str, members: list[tuple[str, bytes]], sparse: str | None = None) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, __import__("io").BytesIO(data))
    if sparse:  # GNU tar writes a real sparse member: a 4 MiB file that stores a few bytes
        folder = os.path.dirname(path)
        target = os.path.join(folder, sparse)
        with open(target, "wb") as f:
            f.seek(4 << 20)
            f.write(b"x")
        subprocess.run(["tar", "--sparse", "-rf", path, "-C", folder, sparse], check=True)
        os.remove(target)


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar writes the sparse member")
def test_tar_members_that_are_sparse_large_or_empty_are_rejected_unread(tmp_path):
    root = tmp_path / "laion"
    root.mkdir()
    _tar_with(str(root / "00000.tar"), [("000000000.jpg", imf.jpeg(seed=0)), ("000000000.txt", b"a mug"),
                                        ("000000001.jpg", b"\xff\xd8" + b"\0" * 50_000), ("000000001.txt", b"big"),
                                        ("000000002.jpg", b""), ("000000002.txt", b"an empty member")],
              sparse="000000003.jpg")
    adapter = registry.create("laion", str(root), options={"max_member_bytes": "40000"})
    items = [item for unit in adapter.work_units() for item in adapter.read(unit)]
    rejected = {item.key: (item.reason, item.detail) for item in items if isinstance(item, Rejection)}
    episodes = {item.episode_id: item for item in items if isinstance(item, Episode)}
    assert rejected["00000.tar/000000001.jpg"][0] == "unsafe_archive_member"
    assert "over the limit of 40,000" in rejected["00000.tar/000000001.jpg"][1]
    assert rejected["00000.tar/000000003.jpg"][0] == "unsafe_archive_member"
    assert "sparse" in rejected["00000.tar/000000003.jpg"][1]
    assert "000000000" in episodes, rejected
    assert episodes["000000002"].frames == [b""]  # then rejected as missing_image


def test_a_pickle_cannot_allocate_beyond_its_budget():
    class Bomb:
        def __reduce__(self):
            return bytearray, (3 << 30,)

    data = pickle.dumps(Bomb(), protocol=2)
    assert len(data) < 64
    with pytest.raises(safe_pickle.UnsafePickleError, match="over what is left"):
        safe_pickle.loads(data)
    arrays = [np.arange(70, dtype=np.float32).reshape(10, 7)]
    for protocol in (2, 4, 5):  # real trajectories still load
        np.testing.assert_array_equal(safe_pickle.loads(pickle.dumps(arrays, protocol=protocol))[0], arrays[0])


def test_frame_numbers_far_past_the_files_are_refused_not_allocated(tmp_path):
    import re

    for name in ("frame_00000.jpg", "frame_00001.jpg", "frame_10000000000.jpg"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(files.FrameNumberingError, match="run to 10000000000 for 3 files") as caught:
        files.numbered_files(str(tmp_path / "frame_*"), re.compile(r"frame_(\d+)\.jpg$"))
    assert caught.value.reason == "malformed_frame_numbers"
    (tmp_path / "frame_10000000000.jpg").unlink()
    (tmp_path / "frame_00005.jpg").write_bytes(b"x")  # an ordinary gap is kept
    paths = files.numbered_files(str(tmp_path / "frame_*"), re.compile(r"frame_(\d+)\.jpg$"))
    assert len(paths) == 6 and paths[2] is None


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_tfrecord_counts_every_episode_it_no_longer_gives(tmp_path, damage):
    """Issue 21, item 3: a TFRecord cut short or corrupted half-way — the episodes after the damage are each a
    rejection (dataset_info.json's shardLengths say how many the file held), so input = written + rejected."""
    from unisim.samples.fixtures import language_table as fixtures

    source = fixtures.write_language_table(str(tmp_path / "release"), num_episodes=12, steps=6, plant_defects=False,
                                           num_shards=1)
    (record_file,) = [os.path.join(source, n) for n in os.listdir(source) if ".tfrecord" in n]
    size = os.path.getsize(record_file)
    with open(record_file, "r+b") as f:
        if damage == "truncate":
            f.truncate(size // 2)
        else:  # flip a byte of the 7th record's length header: its checksum no longer matches
            offset = 0
            for _ in range(6):
                f.seek(offset)
                length = int.from_bytes(f.read(8), "little")
                offset += 8 + 4 + length + 4
            f.seek(offset + 1)
            byte = f.read(1)
            f.seek(offset + 1)
            f.write(bytes([byte[0] ^ 0xFF]))
    adapter = registry.create("language_table", source)
    items = [item for unit in adapter.work_units() for item in adapter.read(unit)]
    episodes = [i for i in items if isinstance(i, Episode)]
    unread = [i for i in items if isinstance(i, Rejection) and i.reason == "unreadable_source"]
    assert 0 < len(episodes) < 12 and len(episodes) + len(unread) == 12
    assert [r.source_index for r in unread] == list(range(len(episodes), 12))
