# alliance-fhir developer commands. `make test` is THE test command (CI runs exactly this).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: help venv node web-assets oidc sysdeps postgres toxiproxy lint test unit integration ehr-matrix state-compare demo serve faults soak bench server-start server-stop clean
.PHONY: bench-cds
.PHONY: bench-workers
.PHONY: bench-conditions bench-conditions-split
.PHONY: bench-bulk
.PHONY: prevalidated

help:
	@echo "make serve  - the check-in page (alliance-fhir serve on 127.0.0.1:8765)"
	@echo "make demo   - start the local HAPI FHIR server (port $(PORT)) and sync the example clinic"
	@echo "make test   - install into .venv, run ruff, mypy --strict, the layer contract and the whole pytest suite"
	@echo "make lint   - ruff, mypy and the layer contract (import-linter) only"
	@echo "make unit   - unit tests only (no server)"
	@echo "make ehr-matrix - the EHR-profile sync tests against every test-server profile"
	@echo "make state-compare - the demo on a PostgreSQL state store vs SQLite, line by line"
	@echo "make faults - fault-injection scenarios with an invariant check (own server on :8097)"
	@echo "make soak   - bounded daemon soak: inbox files, the server stopped mid-way (:8098)"
	@echo "make bench  - benchmarks against the peers (own server on :8095), writes BENCHMARKS.md"
	@echo "make bench-workers - 1 vs 3 daemons on one PostgreSQL store, +25 ms latency (:8093)"
	@echo "make bench-conditions - validation on/off x 0/25 ms RTT, ceiling/sync/peers (~10 min)"
	@echo "make bench-conditions-split - the same, the server on a core of its own (diagnostic, ~15 min)"
	@echo "make prevalidated - list the shipped instruments' resources as validated (after a definition change)"
	@echo "make bench-bulk - \$$export vs paged search of 100,000 responses, time and peak RSS (:8092)"

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

# The check-in page's LHC-Forms files, from the npm package into the Python package (gitignored).
# --legacy-peer-deps: lforms names Angular as dependencies whose peer ranges npm otherwise
# re-resolves for minutes; the page uses only the package's prebuilt files.
LFORMS := src/alliance_fhir/web/checkin/static/lforms/VERSION

web-assets/node_modules/.installed: web-assets/package.json web-assets/package-lock.json
	cd web-assets && npm ci --legacy-peer-deps --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

$(LFORMS): web-assets/node_modules/.installed web-assets/build.js
	node web-assets/build.js

web-assets: $(LFORMS)

# The test OpenID provider (npm oidc-provider) for the SMART tests (issue #18).
tests/oidc/node_modules/.installed: tests/oidc/package.json tests/oidc/package-lock.json
	cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error
	touch $@

oidc: tests/oidc/node_modules/.installed

# Headless Chromium renders the clinician report to PNG (Debian's package; CI runs as root).
sysdeps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (report PNG rendering)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# PostgreSQL for the state-store tests (Debian's package; scripts/postgres runs throwaway
# clusters under .postgres/ with it). Found version-independently, as scripts/postgres does.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql (state-store tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

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

unit: venv node web-assets sysdeps postgres
	$(BIN)/python -m pytest tests/unit -q

# pytest's exit code 5 (nothing collected) is a failure here like any other non-zero code.
test: venv node web-assets oidc sysdeps postgres toxiproxy lint
	$(BIN)/python -m pytest -q --durations=25

# After changing an instrument definition or upgrading fhir.resources (see adapters/_prevalidated.py).
prevalidated: venv
	$(BIN)/python -m alliance_fhir.app.prevalidate

integration: venv postgres web-assets
	$(BIN)/python -m pytest tests/integration -q

# Sync against every EHR-like profile of the test server (make test runs batch-only,
# no-conditional and restricted), and the fault subset on each (matrix_ehr_faults.py, only
# here); one server start serves them all.
ehr-matrix: venv toxiproxy
	ALLIANCE_FHIR_EHR_PROFILES=all $(BIN)/python -m pytest -q -s --durations=0 \
		tests/integration/test_ehr_profiles.py tests/integration/test_ehr_degraded.py \
		tests/integration/matrix_ehr_faults.py

# The PostgreSQL state store beside SQLite: the example clinic's demo and a second run on
# each, every printed line compared (four syncs; a few minutes, so not in `make test`).
state-compare: venv postgres
	ALLIANCE_FHIR_STATE_COMPARE=1 $(BIN)/python -m pytest tests/integration/test_postgres_state_integration.py -q

server-start:
	scripts/fhir-server start --port $(PORT)

server-stop:
	scripts/fhir-server stop --port $(PORT)

demo: venv web-assets
	scripts/fhir-server start --port $(PORT)
	$(BIN)/alliance-fhir --server-url http://127.0.0.1:$(PORT)/fhir demo

serve: venv web-assets
	$(BIN)/alliance-fhir serve

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

# Issue 15's four server conditions (bench/conditions.py): request validation on/off x 0 / 25 ms
# added round trip (toxiproxy), ceiling, sync, fhirpy and fhirclient; own HAPI on :8095.
bench-conditions: venv toxiproxy
	$(BIN)/python -m bench.run --conditions all --size 300 --port 8095 --out BENCHMARKS.md --json .bench/conditions.json

# A diagnostic beside it: the same four conditions with the server (started here) on the last
# CPU and every client on the others, as if the server were another machine.
bench-conditions-split: venv toxiproxy
	$(BIN)/python -m bench.conditions --split-cores --repeat 4 --size 300 --port 8095 --out BENCHMARKS.md --json .bench/conditions-split.json

# CDS Hooks latency (bench/cds.py): patient-view with and without prefetch for a client with
# 50 check-ins, against our own HAPI on :8094; prints p50/p95 and the machine's load.
CDS_BENCH_PORT ?= 8094
bench-cds: venv
	$(BIN)/python -m bench.cds --port $(CDS_BENCH_PORT)

# 1 vs 3 daemons sharing one PostgreSQL state store, 25 ms added latency through toxiproxy
# (bench/workers.py; by hand, not in `make test`): our own HAPI on :8093 (expunged),
# PostgreSQL on :18519; prints seconds per worker count, the speed-up and the load average.
WORKERS_BENCH_PORT ?= 8093
WORKERS_BENCH_PG_PORT ?= 18519
bench-workers: venv postgres toxiproxy
	scripts/fhir-server start --port $(WORKERS_BENCH_PORT)
	$(BIN)/python -m bench.workers --base-url http://127.0.0.1:$(WORKERS_BENCH_PORT)/fhir --pg-port $(WORKERS_BENCH_PG_PORT)

# Bulk Data $export pull vs paged search of 100,000 QuestionnaireResponses (bench/bulk.py),
# by hand: own HAPI on :8092 with a file database under .bench/bulk-db that later runs reuse
# (loading 100k takes long); prints time and peak RSS of each pull. Not in `make test`.
BULK_BENCH_PORT ?= 8092
BULK_BENCH_SIZE ?= 100000
bench-bulk: venv
	$(BIN)/python -m bench.bulk --port $(BULK_BENCH_PORT) --size $(BULK_BENCH_SIZE) --db .bench/bulk-db

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache tests/js/node_modules web-assets/node_modules src/alliance_fhir/web/checkin/static/lforms tests/oidc/node_modules
