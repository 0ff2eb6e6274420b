# The two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck proto bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench,otel]'
	touch $(STAMP)

## Start a private redis-server, a worker and the gateway on 127.0.0.1:50051.
run: $(STAMP)
	$(BIN)/python -m scripts.run

## Lint, type-check and run the whole test suite.
test: $(STAMP) lint typecheck
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m taskgate.codegen lint

typecheck: $(STAMP)
	$(BIN)/mypy

## Measure taskgate against raw Celery and Flower's REST API (writes bench/results.md).
bench: $(STAMP)
	$(BIN)/python -m bench

## Regenerate the Python stubs in taskgate/v1 from proto/.
proto: $(STAMP)
	$(BIN)/python -m taskgate.codegen

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
