# alliance-fhir developer commands. `make test` is THE test command (CI runs exactly this).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: help venv node sysdeps toxiproxy lint test unit integration ehr-matrix demo faults soak bench server-start server-stop clean

help:
	@echo "make demo   - start the local HAPI FHIR server (port $(PORT)) and sync the example clinic"
	@echo "make test   - install into .venv, run ruff, mypy --strict, the layer contract and the whole pytest suite"
	@echo "make lint   - ruff, mypy and the layer contract (import-linter) only"
	@echo "make unit   - unit tests only (no server)"
	@echo "make ehr-matrix - the EHR-profile sync tests against every test-server profile"
	@echo "make faults - fault-injection scenarios with an invariant check (own server on :8097)"
	@echo "make soak   - bounded daemon soak: inbox files, the server stopped mid-way (:8098)"
	@echo "make bench  - benchmarks against the peers (own server on :8095), writes BENCHMARKS.md"

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

node: tests/js/node_modules/.installed

# Headless Chromium renders the clinician report to PNG (Debian's package; CI runs as root).
sysdeps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (report PNG rendering)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

TOXIPROXY := .tools/bin/toxiproxy-server

$(TOXIPROXY): scripts/install-toxiproxy
	scripts/install-toxiproxy

toxiproxy: $(TOXIPROXY)

lint: venv
	$(BIN)/ruff check src tests faults bench
	$(BIN)/ruff format --check src tests faults bench
	$(BIN)/mypy
	$(BIN)/mypy --strict faults bench
	$(BIN)/lint-imports

unit: venv node sysdeps
	$(BIN)/python -m pytest tests/unit -q

# pytest's exit code 5 (nothing collected) is a failure here like any other non-zero code.
test: venv node sysdeps toxiproxy lint
	$(BIN)/python -m pytest -q

integration: venv
	$(BIN)/python -m pytest tests/integration -q

# Sync against every EHR-like profile of the test server (make test runs batch-only,
# no-conditional and restricted), and the fault subset on each (matrix_ehr_faults.py, only
# here); one server start serves them all.
ehr-matrix: venv toxiproxy
	ALLIANCE_FHIR_EHR_PROFILES=all $(BIN)/python -m pytest -q -s --durations=0 \
		tests/integration/test_ehr_profiles.py tests/integration/test_ehr_degraded.py \
		tests/integration/matrix_ehr_faults.py

server-start:
	scripts/fhir-server start --port $(PORT)

server-stop:
	scripts/fhir-server stop --port $(PORT)

demo: venv
	scripts/fhir-server start --port $(PORT)
	$(BIN)/alliance-fhir --server-url http://127.0.0.1:$(PORT)/fhir demo

# Fault injection against our own file-backed HAPI on :8097 (toxiproxy + an HTTP status shim).
faults: venv toxiproxy
	$(BIN)/python -m faults.run --port 8097

# A bounded soak of the daemon (about 5 minutes; not part of `make test`): inbox files
# arriving while our own HAPI on :8098 is stopped and restarted; prints its figures.
SOAK_PORT ?= 8098
soak: venv
	$(BIN)/python -m faults.soak --port $(SOAK_PORT)

# Benchmarks against fhirpy, fhirclient and a bare-httpx ceiling on our own server (:8095).
bench: venv
	$(BIN)/python -m bench.run --size 1000 --mapping-size 10000 --memory-size 100000 --port 8095 --out BENCHMARKS.md --json .bench/results.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache tests/js/node_modules
