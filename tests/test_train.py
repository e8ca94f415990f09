"""`unisim train` (trainer/train.py) on real shards: the tiny config's loss falls on 1 CPU device; a SIGKILLed run
resumes with the same data and loss curve; 8 simulated devices with FSDP; 2 processes through jax.distributed,
resumed on 1."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest


STEPS = 16
OVERRIDES = ["--config.optimizer.learning_rate=3e-3", "--config.optimizer.warmup_steps=2", "--config.log_every=1",
             "--config.checkpoint_every=8", "--config.sample_every=8", "--config.sample_steps=2"]


@pytest.fixture(scope="module")
def clips(language_table_clips):
    return language_table_clips


def _command(workdir, clips, *extra):
    return [sys.executable, "-m", "unisim.cli", "train", "--config", "trainer/configs/tiny.py", "--workdir", workdir,
            "--mixture", f"{clips}:1", "--steps", str(STEPS), *OVERRIDES, *extra]


def _run(workdir, clips, *extra, env=None):
    result = subprocess.run(_command(workdir, clips, *extra), capture_output=True, text=True, env=env,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def _losses(workdir):
    rows = {}
    for line in open(os.path.join(workdir, "metrics.jsonl")):
        row = json.loads(line)
        rows[row["step"]] = row  # a restarted run logs some steps again: the last one counts
    return {step: row["loss"] for step, row in sorted(rows.items())}


@pytest.fixture(scope="module")
def reference_run(clips, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reference"))
    _run(workdir, clips)
    return workdir


def test_the_tiny_config_learns_and_writes_checkpoints_logs_and_samples(reference_run):
    losses = list(_losses(reference_run).values())
    assert len(losses) == STEPS
    assert sum(losses[-4:]) / 4 < 0.9 * sum(losses[:4]) / 4, losses
    assert sorted(os.listdir(os.path.join(reference_run, "checkpoints"))) == ["16", "8"]
    events = os.listdir(os.path.join(reference_run, "tensorboard"))
    assert any(name.startswith("events.out.tfevents") for name in events)
    assert sorted(os.listdir(os.path.join(reference_run, "samples"))) == [
        "step00000008_0.gif", "step00000008_1.gif", "step00000016_0.gif", "step00000016_1.gif"]
    row = json.loads(open(os.path.join(reference_run, "metrics.jsonl")).readline())
    assert row["mixture"] == {"language_table": {"realized": 1.0, "target": 1.0}} and row["examples_per_second"] > 0


def test_a_run_killed_after_a_checkpoint_resumes_the_same_loss_curve(reference_run, clips, tmp_path):
    workdir = str(tmp_path / "killed")
    process = subprocess.Popen(_command(workdir, clips), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    checkpoint = os.path.join(workdir, "checkpoints", "8")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None and not os.path.isdir(checkpoint):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill"
    stderr = _run(workdir, clips)
    assert "resumed from step 8" in stderr
    reference, resumed = _losses(reference_run), _losses(workdir)
    assert list(resumed) == list(range(1, STEPS + 1))
    for step in range(9, STEPS + 1):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5), step


def test_eight_simulated_devices_with_sharded_parameters(clips, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    stderr = _run(str(tmp_path / "eight"), clips, "--steps", "2", "--config.fsdp=2", "--config.input.batch_size=8",
                  "--config.sample_every=0", "--config.bf16=True", env=env)  # bf16 compute, float32 state
    assert "mesh data×fsdp = 4×2 over 8 cpu devices" in stderr
    assert len(_losses(str(tmp_path / "eight"))) == 2


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_two_processes_through_jax_distributed_each_fetch_their_own_shards(clips, tmp_path):
    """Two trainer processes read the clips from a non-local filesystem (`countfs`, shared by both and counting the
    bytes each one reads): each fetches the manifest and its own record and embedding shards, none of the other's.
    They start as docs/accelerators.md's SLURM recipe starts them (`srun … unisim train … --distributed`): SLURM's
    variables as srun sets them for two tasks on one node, 127.0.0.1 as the node, and jax.distributed finding the
    rest; SLURM_JOB_ID is chosen so that the port jax derives from it is free."""
    from unisim.samples.fixtures import countfs
    from unisim.schemas.manifest import RECORD_PREFIX, Manifest

    job = next(j for j in range(4096) if _port_is_free(61440 + j))  # jax: port = 61440 + SLURM_JOB_ID % 4096
    shutil.copytree(clips, tmp_path / "bucket" / "clips")
    env = {**os.environ, "COUNTFS_ROOT": str(tmp_path), "COUNTFS_LOG": str(tmp_path / "reads.log")}
    workdir = str(tmp_path / "two")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    launcher = [sys.executable, "-c", "import sys; from unisim.samples.fixtures import countfs; "
                "from unisim.cli import main; sys.exit(main(sys.argv[1:]))"]
    command = _command(workdir, "countfs://bucket/clips", "--steps", "2", "--config.sample_every=0",
                       f"--config.input.cache_dir={tmp_path / 'cache'}", "--distributed")[3:]  # from "train" on
    slurm = {"SLURM_JOB_ID": str(job), "SLURM_STEP_NODELIST": "127.0.0.1", "SLURM_NTASKS": "2",
             "SLURM_STEP_NUM_NODES": "1"}
    processes = [subprocess.Popen(launcher + command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  cwd=root, env={**env, **slurm, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)})
                 for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "process 1 of 2" in outputs[1][1] and "mesh data×fsdp = 2×1 over 2 cpu devices" in outputs[0][1]
    assert len(_losses(workdir)) == 2 and os.path.isdir(os.path.join(workdir, "checkpoints", "2"))

    manifest = Manifest.loads(open(os.path.join(clips, "manifest.json")).read())
    reads = countfs.bytes_read_by_process(str(tmp_path / "reads.log"))
    by_pid = {p.pid: p for p in processes}
    assert set(reads) == set(by_pid), reads  # the pytest process read nothing
    record_shards = [set(), set()]
    filled = [i for i, s in enumerate(manifest.shards) if s.records]  # empty shards are nobody's
    assert len(filled) >= 2
    for pid, files in reads.items():
        index = [p.pid for p in processes].index(pid)
        names = {path.rsplit("/", 1)[1]: size for path, size in files.items()}
        record_shards[index] = {n for n in names if n.startswith(RECORD_PREFIX)}
        expected = {manifest.shards[i].path for i in filled[index::2]}
        assert record_shards[index] == expected, (index, sorted(names))
        embeddings = {n for n in names if n.startswith("text_embeddings") and n.endswith(".array_record")}
        assert embeddings == {manifest.text_embeddings[i].path for i in filled[index::2]}
        own = sum(s.bytes for s in manifest.shards + manifest.text_embeddings if s.path in names)
        total = sum(s.bytes for s in manifest.shards + manifest.text_embeddings)
        fetched = sum(names.values()) - names["manifest.json"]
        assert fetched - own < 64 * 1024  # keys files
        print(f"process {index}: fetched {sum(names.values()):,} of {total:,} bytes")
        assert f"reads {len(expected)} of {len(manifest.shards)} shards" in outputs[index][1]
    assert not record_shards[0] & record_shards[1]

    # The same run resumed on one process (docs/training.md: a resume on another number of hosts): it restores the
    # two processes' step, reads first what they had not read of their epoch, and carries on.
    resumed = subprocess.run(launcher + command[:-1] + ["--steps", "4"], capture_output=True, text=True, cwd=root,
                             env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 2" in resumed.stderr and "saved by 2" in resumed.stderr, resumed.stderr[-3000:]
    assert "unread records of the epoch in progress carried over from 2 processes" in resumed.stderr
    assert list(_losses(workdir)) == [1, 2, 3, 4]


def test_a_diverging_run_stops_with_a_clear_message(clips, tmp_path):
    result = subprocess.run(_command(str(tmp_path / "nan"), clips, "--steps", "6", "--config.sample_every=0",
                                     "--config.optimizer.learning_rate=1e30", "--config.optimizer.clip_norm=1e30"),
                            capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "the loss or the gradient is not finite" in result.stderr and "the update was skipped" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_wall_clock_budget_stops_and_checkpoints_at_that_step(untrained_residual_run):
    log = open(os.path.join(untrained_residual_run, "train.log")).read()
    assert "stopped at step 1: the wall-clock budget of 0 s is spent" in log, log[-2000:]
    rows = [json.loads(line) for line in open(os.path.join(untrained_residual_run, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1] and rows[0]["elapsed_seconds"] > 0
    assert os.listdir(os.path.join(untrained_residual_run, "checkpoints")) == ["1"]
