# lengow-orders: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install lock lint typecheck tools test test-unit test-faults run servers migrate docs bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# Every package from the lock, each file's hash checked; then the project itself, resolving
# nothing more (the build backend is in the lock too).
$(STAMP): pyproject.toml requirements.lock requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP) ## Create .venv with the project and its development tools, from the lock

lock: $(STAMP) ## Resolve requirements.lock and requirements-dev.lock again from pyproject.toml (uv)
	$(BIN)/python -m devstack.lock

lint: $(STAMP) ## ruff (lint and format check)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy --strict on services/, shared/, sandbox/ and devstack/
	$(BIN)/mypy

test: lint typecheck tools ## Lint, type-check, then every test (unit, integration, end-to-end)
	$(BIN)/pytest

test-faults: $(STAMP) servers ## The fault-injection suite: kill -9, broker and database restarts, outages (minutes)
	@command -v faketime >/dev/null || { command -v apt-get >/dev/null && apt-get install -y -q faketime >/dev/null; } || echo 'faketime missing: the clock scenario is skipped'
	$(BIN)/pytest -m faults tests/faults

test-unit: $(STAMP) ## Only the fast tests that need no server
	$(BIN)/pytest tests/unit

tools: ## Install the Debian tools the tests use when missing (pdftoppm, promtool)
	bash devstack/ensure-tools.sh

servers: ## Start the local PostgreSQL and RabbitMQ if they do not answer
	bash devstack/ensure-servers.sh

migrate: $(STAMP) servers ## Create the database if needed and apply every migration
	$(BIN)/python -m shared.migrate

run: migrate ## Run the whole pipeline locally: sandbox and every service (Ctrl-C stops it)
	$(BIN)/python -m devstack

bench: $(STAMP) servers ## Benchmarks: figures and ratios (minutes; BENCH_SCALE=0.1 for a glance)
	$(BIN)/python -m bench

docs: $(STAMP) ## Regenerate docs/asyncapi.yaml from the services' FastStream brokers
	$(BIN)/python -m devstack.asyncapi > docs/asyncapi.yaml

clean: ## Remove .venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
