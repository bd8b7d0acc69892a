# Two commands for a fresh clone: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/mailing

.PHONY: run test test-unit test-chaos lint typecheck check services db install bench bench-smoke soak clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

services:
	@scripts/ensure-services.sh

db: install services
	@$(BIN)/python -m scripts.create_database
	@$(BIN)/alembic upgrade head

## Start every service against local PostgreSQL and RabbitMQ and the provider stub.
run: db
	@$(BIN)/python -m scripts.devrun

## The whole test suite (unit, API, pipeline, infrastructure checks).
test: install services
	$(BIN)/pytest -q

test-unit: install
	$(BIN)/pytest -q tests/unit

## Resilience scenarios (faults, restarts, bad input, security), every one including chaos_slow;
## figures appended to $CHAOS_RESULTS (.chaos-results.jsonl). See docs/RELIABILITY.md.
test-chaos: install services
	$(BIN)/pytest -q tests/chaos

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy shared services

check: lint typecheck test

## Benchmarks at full size (10-14 minutes on 2 cores); writes docs/BENCHMARKS.md.
bench: install services
	$(BIN)/python -m bench.run

## The benchmarks at a tiny size (well under a minute): checks they work, report under build/.
bench-smoke: install services
	$(BIN)/python -m bench.run --smoke --report build/bench-smoke/BENCHMARKS.md

## Load at half the machine's capacity with faults cycling, 30 minutes (SOAK_ARGS="--minutes 8"
## for less); writes the Soak section of docs/RELIABILITY.md.
soak: install services
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
