"""A real multi-worker engine: `--worker_processes 2` (Beam's FnApiRunner with two SDK worker processes) gives the
one-worker run's bytes — shards, embeddings, dead letter — and its manifest but for the command, for an RLDS, a
video and an image-text adapter."""

import json
import os

import pytest

from unisim.samples.fixtures import images as imf
from unisim.samples.fixtures import videos as vf
from unisim.pipelines import convert
from unisim.pipelines.embed import EncoderSettings
from unisim.schemas.manifest import MANIFEST_NAME


def _files(folder: str) -> dict[str, bytes]:
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))
            if name != MANIFEST_NAME}


def _manifest(folder: str) -> dict:
    manifest = json.load(open(os.path.join(folder, MANIFEST_NAME)))
    manifest.pop("command")
    manifest["options"].pop("output")  # the two runs write to different folders
    return manifest


@pytest.mark.parametrize("dataset", ["language_table", "ego4d", "laion"])
def test_two_worker_processes_write_the_bytes_of_one(dataset, language_table_dir, tiny_t5_dir, tmp_path):
    source = {"language_table": lambda: language_table_dir,
              "ego4d": lambda: vf.write_ego4d(str(tmp_path / "ego4d")),
              "laion": lambda: imf.write_img2dataset(str(tmp_path / "laion"))}[dataset]()
    outputs = {}
    for workers in (1, 2):
        outputs[workers] = str(tmp_path / f"out-{workers}")
        config = convert.ConvertConfig(dataset=dataset, source=source, output=outputs[workers], records_per_shard=2,
                                       text=convert.TextOptions(encoder=EncoderSettings(tiny_t5_dir, batch_size=4)))
        manifest, counters = convert.run(config, command=f"test {workers}", worker_processes=workers)
        assert manifest.records > 0 and counters["records_encoded"] >= manifest.records
    one, two = _files(outputs[1]), _files(outputs[2])
    assert sorted(one) == sorted(two) and any(n.startswith("text_embeddings") for n in one)
    assert {name for name in one if one[name] != two[name]} == set()
    assert _manifest(outputs[1]) == _manifest(outputs[2])
