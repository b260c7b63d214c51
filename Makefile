# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
EXTRAS  ?= test
# Where pip finds the torch wheel: empty = pip's configured index. Outside an environment that provides the CPU
# build, set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu (else pip may fetch the much larger CUDA build).
TORCH_INDEX_URL ?=
TORCH_SOURCE := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)

CONSUMERS := .consumer-venvs/.made
PYTEST_PARALLEL ?= -n auto --maxprocesses 4 --dist loadfile

.PHONY: demo test test-matrix bench install consumers clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, pinned, from TORCH_INDEX_URL when set, so nothing later pulls another build
	$(BIN)/python -m pip install -q torch==2.13.0 $(TORCH_SOURCE)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# side environments for the simulators that are not test dependencies (Norse, SpikingJelly, NeuroBench: each pins
# its own nir/nirtorch); they share this environment's torch (bench/consumer_envs.sh); best effort: where they
# cannot be installed, their tests skip and say why (and fail under CI=true)
$(CONSUMERS): $(STAMP) bench/consumer_envs.sh
	PYTHON=$(BIN)/python bash bench/consumer_envs.sh && touch $(CONSUMERS) \
		|| echo "make: the simulators' side environments could not be made; their tests will skip"

consumers: $(CONSUMERS)

demo: $(STAMP)
	$(BIN)/tdbn train

test: $(STAMP) $(CONSUMERS)
	# passive OpenMP waiting: idle threads must not spin while subprocess tests share the cores; one pytest
	# process per core (at most 4), each running whole files, so module fixtures are made once
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

# the suite at 1, 2 and 4 threads and as on an AVX2 CPU: lists every test whose outcome depends on them
test-matrix: $(STAMP) $(CONSUMERS)
	$(BIN)/python bench/thread_matrix.py

bench: $(STAMP)
	$(BIN)/python bench/lif.py
	$(BIN)/python bench/train_step.py

clean:
	rm -rf $(VENV) .consumer-venvs build dist src/*.egg-info
