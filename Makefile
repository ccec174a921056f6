# The two commands of the README: `make demo` (set up .venv, run `mls compare` on the demo) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast test-avx2 test-gpu lint bench clean

setup: $(VENV)/.installed

# The README's install: the pinned requirements, then the suite itself in editable mode (the `mls` command;
# pyproject.toml refuses a regular install, which would put a package named `utils` into site-packages).
$(VENV)/.installed: requirements/base.txt requirements/dev.txt requirements/extras.txt requirements/cluster.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

demo: setup
	$(VENV)/bin/mls compare

test: setup
	$(PY) -m pytest -q

# The development lane: everything but the slow, cluster and GPU tests (markers in pytest.ini), a few minutes.
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not cluster and not gpu"

# The AVX2 lane: artifacts built natively, then checked under QEMU with AVX2 kernels (no AVX-512/VNNI).
# Needs Debian's qemu-user (apt-get install -y qemu-user); see evaluation/avx2_lane.py.
QEMU ?= qemu-x86_64 -cpu Haswell
LANE_DIR ?= models/avx2_lane
test-avx2: setup
	@command -v $(firstword $(QEMU)) >/dev/null || { echo "error: $(firstword $(QEMU)) not found (apt-get install -y qemu-user)" >&2; exit 2; }
	$(PY) -m evaluation.avx2_lane build --dir $(LANE_DIR)
	set -o pipefail; MLS_EMULATOR="$(QEMU)" $(QEMU) $(PY) -m evaluation.avx2_lane check --dir $(LANE_DIR) 2>&1 \
	    | grep -v "TCG doesn't support"

# TensorRT's first real run, on a GPU host with requirements/tensorrt.txt installed: FP32/FP16/INT8 engines of
# the demo model and ResNet-50, evaluated, figures printed; then the GPU test. One line + exit 2 without them.
test-gpu: setup
	$(PY) -m quantization.TensorRT.gpu_check
	$(PY) -m pytest -q tests/test_tensorrt.py -k gpu

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf models/*/ results/*/
