# The two commands of the README: `make run` (the main job) and `make test`.
# TORCH picks the PyTorch requirement. The default pins the release this suite is
# tested with; on a Linux machine PyPI serves its CUDA build, so a GPU user gets CUDA.
# Override it to use another build, e.g. `make test TORCH="torch --index-url ..."`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install run test test-slow test-gpu bench reproduce clean install-ecosystem test-ecosystem

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m probes.kernels.cpp_hooks

run: install
	$(BIN)/python experiments/grad_flow.py

# The committed references: the frozen plan's confirmatory run (plans/plan.json), ~3 h on 2 cores.
reproduce: install
	$(BIN)/python experiments/reproduce.py --confirmatory

test: install
	$(BIN)/python -m pytest -q

# The tests too slow for `make test` (each over ~10 s: CIFAR end to end, Triton under its
# interpreter, several processes); .ci/run runs them after `make test`.
test-slow: install
	$(BIN)/python -m pytest -q -m "slow and not gpu and not slurm"

test-gpu: install
	$(BIN)/python -m pytest -q -m gpu

bench: install
	$(BIN)/python experiments/bench_probes.py

# The adapter (probes.adapters.tapping) against the real torchvision, timm and Lightning, in an
# environment of its own: torchvision's PyPI wheel does not import beside the CPU build of
# torch that `make install` gets here, so this one takes PyPI's default Linux build (CUDA; it
# runs on the CPU too) with the torchvision built for it. ECOSYSTEM is what is tested
# (docs/integrations.md); override it to try other releases, e.g.
# `make test-ecosystem ECOSYSTEM="torch torchvision timm lightning" ECO_VENV=.venv-latest`.
ECO_VENV ?= .venv-ecosystem
ECOSYSTEM ?= torch==2.14.1 torchvision==0.29.1 timm==1.0.31 lightning==2.6.6
ECO_BIN := $(ECO_VENV)/bin
ECO_TESTS := tests/test_ecosystem.py tests/test_tapping.py tests/test_integrations.py tests/test_tutorial.py

$(ECO_BIN)/python:
	$(PYTHON) -m venv $(ECO_VENV)

install-ecosystem: $(ECO_BIN)/python
	$(ECO_BIN)/python -m pip install -q --disable-pip-version-check $(ECOSYSTEM)
	$(ECO_BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	$(ECO_BIN)/python -m probes.kernels.cpp_hooks

test-ecosystem: install-ecosystem
	$(ECO_BIN)/python -m pytest -q $(ECO_TESTS)

clean:
	rm -rf $(VENV) $(ECO_VENV) build *.egg-info
