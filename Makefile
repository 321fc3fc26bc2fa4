# Two entry points: `make up` (one-host cluster with the example functions) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: up test lint bench bench-partition clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[models,test]'
	touch $@

up: $(BIN)/.installed
	$(BIN)/shoal up

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: $(BIN)/.installed
	$(BIN)/python bench/bench_invoke.py

bench-partition: $(BIN)/.installed
	$(BIN)/python bench/bench_partition.py

clean:
	rm -rf $(VENV) .shoal
