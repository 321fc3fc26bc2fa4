# Two entry points: `make up` (one-host cluster with the example functions) and `make test`.
# Both install at the versions of requirements/lock.txt (refreshed by `make lock`):
#   make up    the `local`, `models` and `observability` extras, pinned by requirements/constraints.txt
#   make test  everything in the lock, hash-checked (CI), then lint and the test suite
# torch is pinned apart, in requirements/torch.txt (see there). Where no local wheel or index
# holds its CPU build (PyPI's Linux wheel is the CUDA build):
#   TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements/lock.txt
PINS := requirements/constraints.txt
TORCH := requirements/torch.txt
TORCH_PIP_ARGS ?=
LOCK_VENV ?= .venv-lock
LOCK_ARGS ?=

.PHONY: up test lint lock bench bench-partition clean

$(BIN)/.installed: pyproject.toml $(PINS) $(TORCH)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIP_ARGS) -r $(TORCH)
	$(BIN)/pip install --quiet -c $(PINS) -c $(TORCH) -e '.[local,models,observability]'
	touch $@

# The test venv holds all of `make up`'s too, so it marks both as installed.
$(BIN)/.installed-test: pyproject.toml $(LOCK) $(TORCH)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-deps $(TORCH_PIP_ARGS) -r $(TORCH)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	@$(BIN)/pip check || { echo "$(LOCK) lacks what pyproject.toml asks for: run make lock" >&2; exit 1; }
	touch $@ $(BIN)/.installed

up: $(BIN)/.installed
	$(BIN)/shoal up

lint: $(BIN)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

# Re-resolve the lock after a change to pyproject.toml's dependencies (existing pins are kept
# where they still fit; LOCK_ARGS=--upgrade moves everything to the newest versions), for
# Linux x86_64 and the Python that runs it (CPython 3.11 in CI and the images).
lock:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip 'pip-tools>=7.4'
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes \
		--all-extras --build-deps-for wheel --strip-extras --constraint $(TORCH) \
		--unsafe-package torch --no-emit-index-url --no-emit-find-links $(LOCK_ARGS) \
		--output-file $(LOCK) pyproject.toml
	{ echo "# requirements/lock.txt's versions without its hashes, for pip's -c (written by make lock)"; \
		sed -e '/--hash=/d' -e 's/ \\$$//' $(LOCK); } > $(PINS)

# The benchmarks reuse the tests' fixtures (pytest): the test venv.
bench: $(BIN)/.installed-test
	$(BIN)/python bench/bench_invoke.py

bench-partition: $(BIN)/.installed-test
	$(BIN)/python bench/bench_partition.py

clean:
	rm -rf $(VENV) $(LOCK_VENV) .shoal
