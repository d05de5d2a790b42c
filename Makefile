# The two commands of the README: `make run` (the main job) and `make test`.
# TORCH picks the PyTorch requirement. The default pins the release this suite is
# tested with; on a Linux machine PyPI serves its CUDA build, so a GPU user gets CUDA.
# Override it to use another build, e.g. `make test TORCH="torch --index-url ..."`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install run test test-gpu bench reproduce clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m probes.kernels.cpp_hooks

run: install
	$(BIN)/python experiments/grad_flow.py

reproduce: install
	$(BIN)/python experiments/reproduce.py

test: install
	$(BIN)/python -m pytest -q

test-gpu: install
	$(BIN)/python -m pytest -q -m gpu

bench: install
	$(BIN)/python experiments/bench_probes.py

clean:
	rm -rf $(VENV) build *.egg-info
