# `make demo` and `make test` set themselves up: they create .venv and install the pinned dependencies when missing.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-output
PYTEST_ARGS ?=
# Two pytest workers, each test file whole on one (pytest-xdist): most tests wait on one-threaded work (XLA
# compiles, Beam's one worker, subprocess start-up), so two run side by side on two cores. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install install-tpu install-cuda bench docs clean

install: $(STAMP)

# deploy/install-lock.sh: torch's CPU build from PyTorch's CPU index, the rest of the lock from PyPI (why: in the script).
$(STAMP): requirements.lock setup.cfg setup.py deploy/install-lock.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	deploy/install-lock.sh $(PY)
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

# Accelerator runtimes over the CPU install (docs/accelerators.md): the extra's packages as deploy/X.lock pins them.
install-tpu install-cuda: install-%: $(STAMP)
	$(PY) -m pip install --quiet -c requirements.lock -r deploy/$*.lock

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/unisim demo --workdir $(DEMO_OUT)

test: $(STAMP) $(CHROMIUM)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The playground's browser test (tests/test_playground.py) drives Debian's Chromium through Playwright, which never
# downloads a browser of its own: the package comes from Debian's registry (as root, or through sudo).
$(CHROMIUM):
	$(SUDO) apt-get install -y -q chromium >/dev/null || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

docs: $(STAMP)
	$(VENV)/bin/mkdocs serve

bench: $(STAMP)
	$(PY) bench/convert_throughput.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
