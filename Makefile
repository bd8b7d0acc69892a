# Two commands for a fresh clone: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/mailing

.PHONY: run test test-unit test-chaos lint typecheck check services db install bench clean

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

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy shared services

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
