import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from unisim.samples.fixtures import language_table as fixtures


def _once_per_run(tmp_path_factory, name: str, build):
    """`build(folder)`'s JSON value, built once per test run even across pytest-xdist workers (`make test` runs two,
    each a process with its own session fixtures): the first worker to ask builds under a file lock, in a folder of
    the run's shared temporary directory; the others wait for it and reuse what it wrote. Only for fixtures whose
    files are read-only to their users (a test that alters them works on a copy)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build(tmp_path_factory.mktemp(name))
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent  # this run's (pytest-N/), above every worker's own
    done = root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if done.exists():
            return json.loads(done.read_text())
        folder = root / name
        shutil.rmtree(folder, ignore_errors=True)  # a build that failed on another worker left this half-made
        folder.mkdir()
        value = build(folder)
        done.write_text(json.dumps(value))
        return value


@pytest.fixture(scope="session")
def language_table_dir(tmp_path_factory) -> str:
    """The hand-built Language Table release (5 episodes × 25 steps, 3 planted defects), written once."""
    return _once_per_run(tmp_path_factory, "language_table_release",
                         lambda folder: fixtures.write_language_table(str(folder)))


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> str:
    """A tiny randomly initialised T5 encoder checkpoint (transformers format), vocabulary trained in the test."""
    from unisim.samples import tiny_t5

    corpus = [f"push the block {e} to the left" for e in range(8)] + ["language_table: push the block to the left"]
    return _once_per_run(tmp_path_factory, "tiny_t5", lambda folder: tiny_t5.write_tiny_t5(str(folder), corpus=corpus))


def _train(config: str, workdir: str, clips: str, steps: int, *extra: str) -> str:
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-m", "unisim.cli", "train", "--config", f"trainer/configs/{config}",
                             "--workdir", workdir, "--mixture", f"{clips}:1", "--steps", str(steps),
                             f"--config.log_every={steps}", f"--config.checkpoint_every={steps}",
                             "--config.sample_every=0", *extra], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "train.log"), "w", encoding="utf-8") as f:
        f.write(result.stderr)
    return workdir


@pytest.fixture(scope="session")
def language_table_clips(language_table_dir, tiny_t5_dir, tmp_path_factory) -> str:
    """The Language Table fixture converted once (2 records a shard, texts through the tiny T5). Read-only: a test
    that alters it works on a copy."""
    from unisim.pipelines import convert
    from unisim.pipelines.embed import EncoderSettings

    def build(folder) -> str:
        clips = str(folder / "clips")
        convert.run(convert.ConvertConfig(dataset="language_table", source=language_table_dir, output=clips,
                                          records_per_shard=2,
                                          text=convert.TextOptions(encoder=EncoderSettings(tiny_t5_dir,
                                                                                           batch_size=4))),
                    command="test")
        return clips

    return _once_per_run(tmp_path_factory, "language_table_clips", build)


@pytest.fixture(scope="session")
def tiny_workdirs(language_table_clips, tmp_path_factory) -> dict[str, str]:
    """Tiny trained stages on the Language Table fixture (192×320 frames, 2 controls, texts through the tiny T5):
    {"clips": converted output, "base": a tiny base workdir (4 steps), "sr": a tiny 24×40 → 48×80 stage (2 steps)}.
    Few steps: the simulator's tests check shapes, determinism and plumbing, not sample quality."""
    clips = language_table_clips
    return _once_per_run(tmp_path_factory, "tiny_stages", lambda root: {
        "clips": clips, "base": _train("tiny.py", str(root / "base"), clips, 4),
        "sr": _train("tiny_sr.py", str(root / "sr"), clips, 2)})


@pytest.fixture(scope="session")
def untrained_residual_run(tiny_workdirs, tmp_path_factory) -> str:
    """The fidelity bench's config (trainer/configs/tabletop_cpu.py: residual x-prediction) stopped by its
    wall-clock budget after its first step, with learning rate 0 so that its parameters stay at initialisation."""
    return _train("tabletop_cpu.py", str(tmp_path_factory.mktemp("untrained") / "run"), tiny_workdirs["clips"],
                  100_000, "--config.max_train_seconds=0.001", "--config.optimizer.learning_rate=0.0")
