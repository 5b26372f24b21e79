# The two commands of the README: `make run` (the whole suite on loopback) and `make test`.
# Both install into .venv first when pyproject.toml changed or .venv is missing.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install run simulator test test-sqlite lint format schemas bench bench-ledger bench-aef clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m scripts.run

# The reference national registry (CHE01 on :8210) beside `make run`: onboards itself with the bootstrap
# client, then polls its inbox. Options: make simulator SIMULATOR_ARGS="--policy silent" (docs/simulator.md).
simulator: $(STAMP)
	$(PY) -m conformance.simulator --onboard $(SIMULATOR_ARGS)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# SQLite only: the second test target, for a machine without PostgreSQL.
test-sqlite: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -m "not postgres" $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

schemas: $(STAMP)
	$(PY) -m scripts.schemas

bench: $(STAMP)
	$(PY) -m bench.gateway

# The ledger on PostgreSQL (REGISTRY_TEST_POSTGRES_URL or postgres@127.0.0.1:5432): about 3 minutes.
bench-ledger: $(STAMP)
	$(PY) -m bench.ledger

# The AEF on PostgreSQL, 100k and 1M actions and the lag: about 7 minutes (the 1M XLSX dominates).
bench-aef: $(STAMP)
	$(PY) -m bench.aef

clean:
	rm -rf var .pytest_cache .ruff_cache .mypy_cache
