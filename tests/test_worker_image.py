"""The Dataflow worker image's pip steps, run in a fresh virtual environment (CI has no Docker engine).

`deploy/worker.Dockerfile` is read and its steps are carried out the way `docker build` would on its own base: COPY
from the repository (minus .dockerignore) into a folder standing for the image's file system, WORKDIR, ENV, and
every RUN in a new virtual environment standing for the image's Python. Then the environment is checked against
the lock: every pinned package installed at its version and nothing else, torch the CPU build, the worker's modules
importable, and the launcher's Beam and Python versions the lock's. What this cannot check: the base image and the
launcher binary themselves (no Docker here), and PyTorch's index (unreachable here: pip takes the same wheel from
this machine's wheel folder; docs/development.md says so).
"""

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import venv

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(ROOT, "deploy", "worker.Dockerfile")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str = os.path.join(ROOT, "requirements.lock")) -> dict[str, str]:
    """{canonical name: version} of a pinned requirements file (the lock, or deploy/X.lock)."""
    pins = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                name, version = line.split("==")
                pins[_canonical(name)] = version
    return pins


def read_instructions(path: str = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined, comments dropped."""
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"\\\n", " ", "".join(line for line in f if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def _ignored(patterns: list[str]):
    """shutil.copytree's ignore function for .dockerignore patterns (paths from the root; `**/NAME` at any depth)."""
    def ignore(folder, names):
        rel = os.path.relpath(folder, ROOT)
        return {name for name in names
                if any(fnmatch.fnmatch(os.path.normpath(os.path.join(rel, name)), p)
                       or p.startswith("**/") and fnmatch.fnmatch(name, p[3:]) for p in patterns)}
    return ignore


def _dockerignore() -> list[str]:
    with open(os.path.join(ROOT, ".dockerignore"), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def build_without_docker(image_root: str, python_env: str) -> dict:
    """Carries out the Dockerfile's steps (see the module docstring); returns what it saw of FROM and ENTRYPOINT."""
    venv.create(python_env, with_pip=True)
    bin_dir = os.path.join(python_env, "bin")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": python_env}
    env.pop("PYTHONPATH", None)
    workdir, seen = image_root, {"from": [], "entrypoint": None}
    for instruction, args in read_instructions():
        if instruction == "FROM":
            seen["from"].append(args)
        elif instruction == "COPY" and args.startswith("--from="):
            seen["from"].append(args.split()[0].removeprefix("--from="))
        elif instruction == "COPY":
            *sources, dest = shlex.split(args)
            target = os.path.join(workdir, dest)
            for source in sources:
                src = os.path.join(ROOT, source)
                if os.path.isdir(src):
                    shutil.copytree(src, target, ignore=_ignored(_dockerignore()), dirs_exist_ok=True)
                else:
                    os.makedirs(target if dest.endswith("/") or dest in (".", "./") else os.path.dirname(target),
                                exist_ok=True)
                    shutil.copy(src, target)
        elif instruction == "WORKDIR":
            workdir = os.path.join(image_root, args.strip().lstrip("/"))
            os.makedirs(workdir, exist_ok=True)
        elif instruction == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(args)))
        elif instruction == "ARG":  # its default, as `docker build` without --build-arg gives it to RUN
            name, _, default = args.strip().partition("=")
            env[name] = default
        elif instruction == "RUN":
            subprocess.run(["bash", "-euo", "pipefail", "-c", args], cwd=workdir, env=env, check=True)
        elif instruction == "ENTRYPOINT":
            seen["entrypoint"] = json.loads(args)
        else:
            raise AssertionError(f"{DOCKERFILE}: {instruction} is not one the test carries out")
    return seen


def test_the_worker_image_steps_install_the_lock_and_nothing_else(tmp_path):
    python_env = str(tmp_path / "image-python")
    seen = build_without_docker(str(tmp_path / "image"), python_env)
    lock = read_lock()
    # The base is Python 3.11 (the lock's Python) and the launcher comes from the lock's Beam release.
    assert seen["from"][0] == "python:3.11-slim" and sys.version_info[:2] == (3, 11)
    assert seen["from"][1] == f"apache/beam_python3.11_sdk:{lock['apache-beam']}", seen["from"]
    assert seen["entrypoint"] == ["/opt/apache/beam/boot"]

    python = os.path.join(python_env, "bin", "python")
    frozen = json.loads(subprocess.run([python, "-m", "pip", "list", "--format=json"], check=True,
                                       capture_output=True, text=True).stdout)
    installed = {_canonical(p["name"]): p["version"] for p in frozen}
    wrong = {name: (version, installed.get(name)) for name, version in lock.items() if installed.get(name) != version}
    assert not wrong, f"lock pins not installed as pinned (pinned, installed): {wrong}"
    extra = set(installed) - set(lock) - {"unisim", "pip"}
    assert not extra, f"installed but not in the lock: {sorted(extra)}"
    assert installed["unisim"] == "0.1.0"

    probe = ("import torch, unisim.pipelines.convert, unisim.encoders.t5, unisim.adapters.registry as r; "
             "print(torch.__version__, torch.version.cuda, len(r.all_adapters()), unisim.pipelines.convert.__file__)")
    version, cuda, adapters, where = subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True,
                                                    cwd=str(tmp_path)).stdout.split()
    assert version == lock["torch"] and cuda == "None"
    assert int(adapters) > 10 and where.startswith(python_env), where  # the installed package, not this checkout


@pytest.mark.parametrize("build", ["cpu", "cuda"])
def test_the_install_script_installs_torchs_cpu_build_or_its_cuda_build_with_the_other_pins(build, tmp_path):
    """deploy/install-lock.sh's pip commands, recorded by a stand-in for Python (nothing is installed): the CPU
    build from PyTorch's CPU index, then the lock; or (the GPU worker image) the lock without its torch line and
    the same torch version from PyPI, in one resolution."""
    log, rest_copy = tmp_path / "calls.log", tmp_path / "rest.txt"
    fake = tmp_path / "python"
    fake.write_text(f"#!/usr/bin/env bash\necho \"$*\" >> {log}\n"
                    f"for a in \"$@\"; do [ \"$prev\" = -r ] && cp \"$a\" {rest_copy}; prev=\"$a\"; done\n")
    fake.chmod(0o755)
    subprocess.run(["bash", os.path.join(ROOT, "deploy", "install-lock.sh"), str(fake)], check=True,
                   env={**os.environ, "TORCH_BUILD": build})
    calls = log.read_text().splitlines()[1:]  # after pip's own upgrade
    torch = read_lock()["torch"]
    if build == "cpu":
        assert calls[0].endswith(f"--no-deps --index-url https://download.pytorch.org/whl/cpu torch=={torch}")
        assert calls[1].endswith(f"-r {os.path.join(ROOT, 'requirements.lock')}") and len(calls) == 2
    else:
        assert len(calls) == 1 and calls[0].endswith(f"torch=={torch.split('+')[0]}") and "--index-url" not in calls[0]
        rest = read_lock(str(rest_copy))
        assert "torch" not in rest and rest == {k: v for k, v in read_lock().items() if k != "torch"}
    bad = subprocess.run(["bash", os.path.join(ROOT, "deploy", "install-lock.sh"), str(fake)], capture_output=True,
                         text=True, env={**os.environ, "TORCH_BUILD": "rocm"})
    assert bad.returncode == 2 and "expected cpu or cuda" in bad.stderr
