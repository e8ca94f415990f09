"""Accelerators without one: the [tpu] and [cuda] extras resolve against the lock to exactly deploy/X.lock, and the
real train step compiles for a target with its memory, FLOPs and projected time reported (trainer/aot.py)."""

import configparser
import json
import os
import subprocess
import sys

import pytest
from test_worker_image import _canonical, read_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("extra,requirement", [("tpu", "jax[tpu]"), ("cuda", "jax[cuda12]")])
def test_extra_resolves_to_its_pins_over_the_lock(extra, requirement, tmp_path):
    """pip's resolver (a dry run, nothing installed) of the extra's requirement, the lock as constraints: every
    package it picks is the lock's version or deploy/X.lock's, and X.lock holds nothing it does not pick."""
    extras = configparser.ConfigParser()
    extras.read(os.path.join(ROOT, "setup.cfg"))
    assert extras["options.extras_require"][extra].split() == [requirement]
    lock = read_lock()
    pinned = read_lock(os.path.join(ROOT, "deploy", f"{extra}.lock"))
    constraints = tmp_path / "constraints.txt"  # torch's +cpu build lives on PyTorch's index, not a dependency here
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in {**lock, **pinned}.items() if n != "torch"))
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                             "--report", str(report), "-c", str(constraints), requirement],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    chosen = {_canonical(i["metadata"]["name"]): i["metadata"]["version"]
              for i in json.loads(report.read_text())["install"]}
    outside = {n: v for n, v in chosen.items() if n not in lock}
    assert outside == pinned, f"deploy/{extra}.lock is stale: pip now picks {outside}"
    assert all(lock[n] == v for n, v in chosen.items() if n in lock)


def test_compile_only_refuses_what_the_target_cannot_run():
    from unisim.trainer import aot

    with pytest.raises(aot.TargetError, match="known: v3-32, .*v5e-256.*cpu-N"):
        aot.target("v9-4")
    from unisim.trainer import configs

    config = configs.load(os.path.join(ROOT, "trainer/configs/tiny.py"), ["config.input.batch_size=4"])
    with pytest.raises(aot.TargetError, match="batch 4 does not split over the 16 devices of v5e-16"):
        aot.compile_step(config, aot.target("v5e-16"), 8, 2)  # refused before libtpu is needed
    v3 = aot.target("v3-1024")  # Table 6's 512 chips: two JAX devices (TensorCores) each, 16 GiB apiece
    assert (v3.chips, v3.devices, v3.hbm_bytes) == (512, 1024, 16 * aot.GiB)


def test_cli_compiles_the_train_step_for_a_target_and_reports_it(tmp_path):
    """`unisim train --compile_only` on two CPU devices, the tiny model with rematerialisation, no workdir: XLA's
    memory and FLOPs per device are reported and written; the FLOPs as compiled include the recomputation, the
    model FLOPs (MFU's numerator, the step lowered without remat) do not; refusals name what to change."""
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "unisim.cli", "train", "--config", "trainer/configs/tiny.py", "--compile_only",
               "--text_dim", "8", "--control_dims", "2", "--peak_tflops", "0.5", "--hbm_gib", "1",
               "--config.model.remat=True", "--config.input.frames=4", "--config.input.height=12",
               "--config.input.width=20", "--config.input.text_tokens=4"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = subprocess.run(command + ["--topology", "cpu-2", "--report", str(report), "--config.input.batch_size=2"],
                            capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[compile] cpu-2: 2 devices, mesh data×fsdp = 2×1, global batch 2" in result.stdout
    assert "remat on" in result.stdout and "fits yes" in result.stdout
    written = json.loads(report.read_text())
    assert written["devices"] == 2 and written["parameters"] > 0
    assert written["argument_bytes"] > 0 and written["temp_bytes"] > 0 and written["fits"] is True
    assert written["flops"] * 2 > written["model_flops"] > 0  # recomputed activations are not useful work
    assert 0 < written["mfu"] < written["utilization"]
    refused = subprocess.run(command + ["--topology", "cpu-2", "--config.input.batch_size=3"],
                             capture_output=True, text=True, cwd=ROOT, env=env)
    assert refused.returncode == 2 and "global batch 3 does not split over the 2 devices" in refused.stderr


def test_a_tpu_target_without_libtpu_says_what_to_install():
    """Where libtpu is not installed (as in CI), asking for a TPU topology says which extra brings it."""
    import importlib.util

    from unisim.trainer import aot

    if importlib.util.find_spec("libtpu") is not None:  # a machine with the [tpu] extra: the description works
        assert len(aot.devices_of(aot.target("v5e-16"))) == 16
        return
    with pytest.raises(aot.TargetError, match=r"needs the libtpu package .*pip install -e \.\[tpu\]"):
        aot.devices_of(aot.target("v5e-16"))
