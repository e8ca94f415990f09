"""The Dataflow job, built offline: `unisim convert --runner DataflowRunner --dry_run` for every adapter.

Beam's DataflowRunner with `--dry_run` (and `--no_auth`) translates the whole pipeline into the job it would
submit — every transform through Dataflow's own checks (deterministic key coders, side inputs, the v2 runner's
adjustments) — and submits nothing. The output is a gs:// bucket this machine cannot reach, so touching it would
fail the command. One test also stages the project as `--setup_file ./setup.py` would and installs what Dataflow's
workers would install.
"""

import json
import os
import subprocess
import sys
import tarfile

import pytest

from unisim.samples.fixtures import images as imf
from unisim.samples.fixtures import navigation as nf
from unisim.samples.fixtures import robots as rf
from unisim.samples.fixtures import videos as vf
from unisim.samples.fixtures.language_table import write_language_table
from unisim.samples.fixtures.episode_folders import write_fixture as write_episode_folders
from unisim.adapters import registry
from unisim.pipelines.recipes import RECIPES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATAFLOW = ["--runner", "DataflowRunner", "--dry_run=True", "--no_auth", "--project", "unisim-dry-run", "--region",
            "us-central1", "--temp_location", "gs://unisim-dry-run-unreachable/tmp", "--job_name", "unisim-dry-run"]
OUTPUT = "gs://unisim-dry-run-unreachable/clips"


def _source(dataset: str, tmp_path) -> list[str]:
    """`--source …` (and adapter options) for each adapter's fixture in its official layout."""
    folder = str(tmp_path / dataset)
    if dataset == "epic_kitchens":
        os.makedirs(folder)
    if dataset == "rlds":
        (tmp_path / "mapping.json").write_text(json.dumps({"fps": 2, "episode_id": "episode_metadata/episode_id"}))
    writers = {
        "language_table": lambda: write_language_table(folder, num_episodes=2, steps=6),
        "rt1": lambda: rf.write_rt1(folder),
        "bridge": lambda: rf.write_bridge_raw(folder, str(tmp_path)),
        "rlds": lambda: rf.write_toy_oxe(folder),
        "episode_folders": lambda: write_episode_folders(folder),
        "ego4d": lambda: vf.write_ego4d(folder),
        "ssv2": lambda: vf.write_ssv2(folder),
        "epic_kitchens": lambda: vf.write_epic(folder) and folder,
        "video_captions": lambda: vf.write_video_captions(folder),
        "laion": lambda: imf.write_img2dataset(folder),
        "r2r": lambda: nf.write_r2r(folder),
        "habitat_objectnav": lambda: nf.write_habitat(folder),
    }
    options = {"rlds": ["--adapter_config", str(tmp_path / "mapping.json")],
               "episode_folders": ["--adapter_option", "control_names=dx,dy"]}
    return ["--source", writers[dataset](), *options.get(dataset, [])]


_UNCOVERED = sorted(set(registry.all_adapters()) - {r.dataset for r in RECIPES.values()})  # adapters no recipe uses


@pytest.mark.parametrize("case", [f"recipe:{name}" for name in RECIPES] + [f"adapter:{d}" for d in _UNCOVERED])
def test_dataflow_dry_run_builds_the_job_for_every_recipe_and_adapter(case, tmp_path, capsys):
    """docs/recipes.md's commands (`--recipe NAME`, the recipe's worker shape and disk in the job), and a plain
    `--dataset` run for each adapter no recipe uses."""
    from unisim.cli import main

    kind, name = case.split(":")
    dataset = RECIPES[name].dataset if kind == "recipe" else name
    chosen = ["--recipe", name] if kind == "recipe" else ["--dataset", dataset]
    argv = ["convert", *chosen, *_source(dataset, tmp_path), "--output", OUTPUT, *DATAFLOW,
            "--sdk_location", "container"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"nothing submitted, nothing written to {OUTPUT}" in out
    for step in ("ReadEpisodes", "MakeClips", "ControlStats", "Tokenize", "WriteShards", "EmbedTexts",
                 "AllRejected", "WriteManifest"):
        assert step in out
    if kind == "recipe":
        recipe = RECIPES[name]
        machine = recipe.worker[recipe.worker.index("--machine_type") + 1]
        assert f"workers: {machine}, {recipe.disk_gb} GB disk, experiments " in out and "use_runner_v2" in out, out


def test_flags_after_a_recipe_override_it():
    from unisim.cli.convert import RunOptions
    from unisim.cli import command_parser
    from unisim.pipelines.convert import ConvertConfig
    from unisim.pipelines.recipes import expand
    from unisim.schemas.options import from_flags

    parser, _ = command_parser("convert")
    argv = expand(["--recipe", "ego4d", "--source", "s", "--output", "o", "--fps", "3", "--clip_threads", "2"])
    args, beam = parser.parse_known_args(argv)
    config, run = from_flags(ConvertConfig, args, adapter_options={}), from_flags(RunOptions, args)
    assert (config.dataset, config.fps, run.clip_threads) == ("ego4d", 3, 2)
    assert beam == ["--machine_type", "n2-standard-8", "--disk_size_gb", "250", "--experiments", "use_runner_v2"]
    assert from_flags(ConvertConfig, parser.parse_known_args(expand(["--recipe=ego4d", "--source", "s", "--output",
                                                                      "o"]))[0], adapter_options={}).fps == 5


def test_the_dry_run_names_its_steps_and_stages_an_installable_project(tmp_path):
    from unisim.pipelines import convert
    from unisim.pipelines.frames import FrameSpec

    source = write_language_table(str(tmp_path / "lt"), num_episodes=2, steps=6)
    config = convert.ConvertConfig(dataset="language_table", source=source, output=OUTPUT, frame=FrameSpec())
    job = convert.run(config, [*DATAFLOW[2:], "--setup_file", os.path.join(ROOT, "setup.py"),
                               "--sdk_location", "container"], runner="DataflowRunner", command="test")
    assert isinstance(job, convert.DryRun) and job.units == 2
    for step in ("ReadEpisodes/Read", "MakeClips/Clip", "Tokenize", "WriteShards/GroupByShard", "WriteShards/Write",
                 "EmbedTexts", "WriteManifest"):
        assert step in job.steps, step
    # What the workers would install: the project's sdist, built from setup.py by Beam's stager.
    (sdist,) = [path for name, path in job.staged.items() if name == "workflow.tar.gz"]
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
        info = archive.extractfile(next(n for n in names if n.endswith("/PKG-INFO") and n.count("/") == 1)).read()
    assert any(n.endswith("/pipelines/convert.py") for n in names) and b"Requires-Dist: apache-beam" in info
    target = str(tmp_path / "worker-site-packages")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", target, sdist], check=True)
    probe = ("import unisim.pipelines.convert as c, unisim.adapters.registry as r; "
             "assert c.__file__.startswith(sys.argv[1]); print(len(r.all_adapters()))")
    env = {**os.environ, "PYTHONPATH": target}
    shown = subprocess.run([sys.executable, "-c", f"import sys; {probe}", target], check=True, env=env, cwd=tmp_path,
                           capture_output=True, text=True).stdout
    assert int(shown) == len(registry.all_adapters())


def test_a_dry_run_needs_a_remote_runner(tmp_path):
    from unisim.pipelines import convert

    config = convert.ConvertConfig(dataset="language_table", source=str(tmp_path), output=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="--dry_run builds a job for a remote runner"):
        convert.run(config, ["--dry_run=True"], command="test")
    assert not os.path.exists(tmp_path / "o")


def test_the_worker_image_command_of_the_docs_builds_a_job_on_that_image(tmp_path, capsys):
    """docs/usage.md's `--sdk_container_image` command, dry-run: the job's workers run the image, nothing staged."""
    import re

    from unisim.cli import main

    usage = open(os.path.join(ROOT, "docs", "usage.md"), encoding="utf-8").read()
    documented = re.search(r"--sdk_container_image \$IMAGE --sdk_location container", usage)
    assert documented, "docs/usage.md no longer shows the worker image command"
    image = "us-central1-docker.pkg.dev/unisim-dry-run/unisim/worker:test"
    source = write_language_table(str(tmp_path / "lt"), num_episodes=2, steps=6)
    argv = ["convert", "--dataset", "language_table", "--source", source, "--output", OUTPUT, *DATAFLOW,
            "--sdk_container_image", image, "--sdk_location", "container"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"worker image: {image}" in out and "workflow.tar.gz" not in out


def test_the_text_encoder_step_alone_asks_for_a_gpu(tiny_t5_dir, tmp_path, capsys):
    """`--text_encoder_accelerator`: Beam's accelerator hint on the encoding step only (Dataflow gives that step GPU
    workers; the rest of the job keeps the default machine type), as the dry-run job shows it."""
    from unisim.cli import main

    hint = "type:nvidia-l4;count:1;install-nvidia-driver"
    source = write_language_table(str(tmp_path / "lt"), num_episodes=2, steps=6)
    argv = ["convert", "--dataset", "language_table", "--source", source, "--output", OUTPUT, *DATAFLOW,
            "--text_encoder", tiny_t5_dir, "--text_encoder_accelerator", hint]
    assert main(argv) == 0, capsys.readouterr().err
    shown = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert shown == [f"step EmbedTexts/Encode runs with accelerator {hint}"]
    assert main([*argv[:-1], "nvidia-l4"]) == 2
    assert "a Beam accelerator hint starts with 'type:'" in capsys.readouterr().err


def test_the_encoder_runs_on_the_gpu_where_the_hint_gave_one():
    import torch

    from unisim.pipelines.embed import EncoderSettings

    gpu = "cuda" if torch.cuda.is_available() else "cpu"
    assert EncoderSettings("t5").torch_device() == "cpu"
    assert EncoderSettings("t5", accelerator="type:nvidia-l4;count:1").torch_device() == gpu
    assert EncoderSettings("t5", device="auto").torch_device() == gpu
    assert EncoderSettings("t5", device="cuda:1").torch_device() == "cuda:1"
