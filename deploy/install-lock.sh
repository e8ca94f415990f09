#!/usr/bin/env bash
# Installs requirements.lock into the Python environment of $1 (default: python), the one way every environment of
# this project is made: `make install` (.venv), the Dataflow worker image (deploy/worker.Dockerfile) and its check in
# CI (tests/test_worker_image.py).
#
# Two indexes, each for what only it serves:
#   1. torch, the CPU build (`torch==X+cpu`, the lock's own line), from PyTorch's CPU wheel index and nothing else.
#      PyPI's Linux torch is the CUDA build: ~4 GB more of nvidia-* packages that a CPU worker never loads.
#      `--no-deps`: torch's own dependencies are pinned in the lock and come from PyPI in step 2.
#   2. everything else in the lock from PyPI (or whatever index pip is configured with); torch is already satisfied.
# Set TORCH_INDEX_URL to use a mirror of PyTorch's index.
#
# TORCH_BUILD=cuda (the GPU worker image: `docker build --build-arg TORCH_BUILD=cuda`, for the text encoder on GPU
# workers) installs the lock with the same torch version's PyPI build instead — on Linux the CUDA one, with its
# nvidia-* runtime packages — in one resolution with every other pin of the lock.
set -euo pipefail
PYTHON="${1:-python}"
LOCK="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/requirements.lock"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
TORCH_BUILD="${TORCH_BUILD:-cpu}"

"$PYTHON" -m pip install --quiet --upgrade pip
torch="$(grep -E '^torch==' "$LOCK")" || { echo "install-lock.sh: no torch== line in $LOCK" >&2; exit 2; }
case "$TORCH_BUILD" in
  cpu)
    "$PYTHON" -m pip install --quiet --no-deps --index-url "$TORCH_INDEX_URL" "$torch"
    "$PYTHON" -m pip install --quiet -r "$LOCK" ;;
  cuda)
    rest="$(mktemp)"
    grep -vE '^torch==' "$LOCK" > "$rest"
    "$PYTHON" -m pip install --quiet -r "$rest" "${torch%%+*}"
    rm -f "$rest" ;;
  *) echo "install-lock.sh: TORCH_BUILD=$TORCH_BUILD: expected cpu or cuda" >&2; exit 2 ;;
esac
