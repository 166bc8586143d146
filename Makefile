# observable-chat: `make run` starts the chat, `make test` proves it. `make help` lists the rest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMPS := .make-stamps

.DEFAULT_GOAL := help
.PHONY: help run test lint typecheck check pytest system-packages bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "observable-chat needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMPS)/run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@mkdir -p $(STAMPS) && touch $@

run: $(STAMPS)/run ## set up .venv and start the chat on http://127.0.0.1:5000 (in memory, eventlet)
	$(BIN)/chat-service

system-packages: ## install redis-server, prometheus and chromium from Debian when missing and allowed
	@bash .ci/install-system-packages

lint: $(STAMPS)/test ## ruff
	$(BIN)/ruff check service tests
	$(BIN)/ruff format --check service tests

typecheck: $(STAMPS)/test ## mypy on the package
	$(BIN)/mypy

pytest: $(STAMPS)/test ## the test suite alone
	$(BIN)/pytest

test: $(STAMPS)/test system-packages lint typecheck pytest ## set up, install what the tests need, lint, type-check and run every test

bench: $(STAMPS)/test ## benchmarks that print figures (login cost and event-loop stall)
	$(BIN)/python tests/bench_login_stall.py

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) $(STAMPS) .pytest_cache .mypy_cache .ruff_cache test-artifacts
