# The Dataflow worker image: Python 3.11, requirements.lock installed exactly as `make install` installs it
# (deploy/install-lock.sh: torch's CPU build from PyTorch's CPU index, the rest from PyPI), this project, and Beam's
# worker launcher as the entrypoint. Build it from the repository root (docs/usage.md has the push and the job):
#
#   docker build -f deploy/worker.Dockerfile -t REGION-docker.pkg.dev/PROJECT/REPO/unisim-worker:TAG .
#
# A slim Python base rather than FROM the Beam SDK image: that image carries its own pins of numpy, protobuf, … that
# the lock then overwrites; here the worker's Python holds the lock and nothing else, which is what CI checks.
# tests/test_worker_image.py runs this file's RUN steps in a fresh virtual environment (no Docker there) and checks
# that the launcher's Beam version and the Python version match the lock's. Keep to FROM, COPY, WORKDIR, ENV, ARG,
# RUN and ENTRYPOINT: that is what the test reads.
FROM python:3.11-slim

# Beam's worker launcher (boot), from the SDK image of the lock's apache-beam version.
COPY --from=apache/beam_python3.11_sdk:2.77.0 /opt/apache/beam /opt/apache/beam

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /unisim

# The dependencies first, in their own layer: a change to the code does not reinstall them.
COPY requirements.lock ./
COPY deploy/install-lock.sh deploy/
# TORCH_BUILD=cuda: torch's CUDA build, for GPU workers that run the text encoder (docs/text.md).
ARG TORCH_BUILD=cpu
RUN bash deploy/install-lock.sh python

# The project itself (what .dockerignore leaves), installed as a package, then the whole set checked.
COPY . ./
RUN python -m pip install --quiet --no-deps . && python -m pip check

ENTRYPOINT ["/opt/apache/beam/boot"]
