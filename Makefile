# Two commands for a fresh clone: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The machine's PostgreSQL and RabbitMQ when they let us in, else private ones under .data/
# for the length of the command (scripts/devservers.py); DATABASE_URL / AMQP_URL given win.
SERVERS := $(BIN)/python -m scripts.devservers --
MIGRATE := $(BIN)/python -m scripts.create_database && $(BIN)/alembic upgrade head
# Bytecode for our own modules too: with PYTHONDONTWRITEBYTECODE set (as on CI), every service
# start would otherwise compile its imports from source (~3.5 s of CPU each on 2 cores).
BYTECODE := $(BIN)/python -m compileall -q -j0 shared services scripts bench tests

.PHONY: run test test-unit test-chaos lint typecheck check services db install lock bench bench-smoke soak clean

# Installs follow uv.lock exactly (docs/DEPENDENCIES.md). uv itself is locked there too: the
# virtualenv starts with the uv version the lock names, which then syncs everything else.
UV := $(BIN)/uv
export UV_PYTHON_DOWNLOADS := never
LOCKED_UV = $$($(PYTHON) scripts/locked_version.py uv)

$(UV):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "uv==$(LOCKED_UV)"

$(STAMP): pyproject.toml uv.lock | $(UV)
	@$(UV) sync --quiet --locked --compile-bytecode --extra dev || { echo >&2; \
	  echo "make install: pyproject.toml and uv.lock disagree (or the sync failed, see above)." >&2; \
	  echo "After changing dependencies or merging, run 'make lock' and commit uv.lock." >&2; \
	  exit 1; }
	@touch $(STAMP)

install: $(STAMP)

## Re-resolve uv.lock after a change to pyproject.toml's dependencies (keeps other pins as
## they are; `make lock UPGRADE=1` moves everything to the newest allowed versions).
lock: | $(UV)
	$(UV) lock $(if $(UPGRADE),--upgrade)

services:
	@scripts/ensure-services.sh

db: install services
	@$(SERVERS) sh -c '$(MIGRATE)'

## Start every service against local PostgreSQL and RabbitMQ and the provider stub.
run: install services
	@$(BYTECODE)
	@$(SERVERS) sh -c '$(MIGRATE) && exec $(BIN)/python -m scripts.devrun'

## The whole test suite (unit, API, pipeline, infrastructure checks).
test: install services
	@$(BYTECODE)
	@$(SERVERS) $(BIN)/pytest -q

test-unit: install
	$(BIN)/pytest -q tests/unit

## Resilience scenarios (faults, restarts, bad input, security), every one including chaos_slow;
## figures appended to $CHAOS_RESULTS (.chaos-results.jsonl). See docs/RELIABILITY.md.
test-chaos: install services
	@$(BYTECODE)
	@$(SERVERS) $(BIN)/pytest -q tests/chaos

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy shared services

check: lint typecheck test

## Benchmarks at full size (10-14 minutes on 2 cores); writes docs/BENCHMARKS.md.
bench: install services
	@$(BYTECODE)
	@$(SERVERS) $(BIN)/python -m bench.run

## The benchmarks at a tiny size (well under a minute): checks they work, report under build/.
bench-smoke: install services
	@$(BYTECODE)
	@$(SERVERS) $(BIN)/python -m bench.run --smoke --report build/bench-smoke/BENCHMARKS.md

## Load at half the machine's capacity with faults cycling, 30 minutes (SOAK_ARGS="--minutes 8"
## for less); writes the Soak section of docs/RELIABILITY.md.
soak: install services
	@$(BYTECODE)
	@$(SERVERS) $(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
