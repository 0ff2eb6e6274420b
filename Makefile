# The two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The branch `buf breaking` compares the contract with.
PROTO_BASE ?= main
# The Node example's packages, installed for its test when npm is there (no package
# in its tree needs an install script).
NODE_MODULES := $(if $(shell command -v npm),examples/node/node_modules/.package-lock.json)

.PHONY: run test lint typecheck proto bench lock clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench,otel]'
	touch $(STAMP)

## Start a private redis-server, a worker and the gateway on 127.0.0.1:50051.
run: $(STAMP)
	$(BIN)/python -m scripts.run

## Lint, type-check and run the whole test suite.
test: $(STAMP) $(NODE_MODULES) lint typecheck
	$(BIN)/pytest

examples/node/node_modules/.package-lock.json: examples/node/package-lock.json
	npm ci --prefix examples/node --no-audit --no-fund --ignore-scripts

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m taskgate.codegen lint $(PROTO_BASE)

typecheck: $(STAMP)
	$(BIN)/mypy

## Measure taskgate against raw Celery and Flower's REST API (writes bench/results.md).
bench: $(STAMP)
	$(BIN)/python -m bench

## Regenerate the Python stubs in taskgate/v1 and the API reference docs/api.md from proto/.
proto: $(STAMP)
	$(BIN)/python -m taskgate.codegen

## Pin the image's runtime dependencies (with the otel extra, so the image can trace),
## with hashes, in requirements/runtime.lock (uv).
## Versions already pinned stay; `make lock LOCK_ARGS=--upgrade` moves all to the newest.
LOCK_FILE ?= requirements/runtime.lock
UV ?= $(BIN)/uv
lock: $(STAMP)
	$(UV) pip compile pyproject.toml --extra otel --quiet --generate-hashes \
		--python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
		--custom-compile-command 'make lock' --output-file $(LOCK_FILE) $(LOCK_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache examples/node/node_modules
