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
	@echo "creating $(VENV)" >&2
	@$(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/python -m pip install --quiet --upgrade pip >&2

$(STAMPS)/run: pyproject.toml | $(BIN)/python
	@echo "installing observable-chat into $(VENV)" >&2
	@$(BIN)/python -m pip install --quiet -e . >&2
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@mkdir -p $(STAMPS) && touch $@

# `make run | jq …`: stdout carries the service's lines and nothing else, so no recipe line is
# echoed and setup output goes to stderr. (A make started by another make prints "Entering
# directory" on stdout itself; such a caller passes --no-print-directory.)
run: $(STAMPS)/run ## set up .venv and start the chat on http://127.0.0.1:5000 (in memory, eventlet)
	@$(BIN)/chat-service

system-packages: ## install redis-server, prometheus, alertmanager, chromium, lnav and jq from Debian (root with apt-get)
	@bash .ci/install-system-packages

lint: $(STAMPS)/test ## ruff
	$(BIN)/ruff check service tests
	$(BIN)/ruff format --check service tests

typecheck: $(STAMPS)/test ## mypy on the package
	$(BIN)/mypy

pytest: $(STAMPS)/test ## the test suite alone
	$(BIN)/pytest

# The fast test files: mostly in process, no browser, no Prometheus (under a minute).
FAST_TESTS := tests/test_http.py tests/test_sockets.py tests/test_settings.py \
	tests/test_telemetry.py tests/test_ratelimit.py tests/test_store.py

check: lint typecheck ## lint, type-check and the fast in-process tests, while editing
	$(BIN)/pytest -q $(FAST_TESTS)

test: $(STAMPS)/test system-packages lint typecheck pytest ## set up, install what the tests need, lint, type-check and run every test

bench: $(STAMPS)/test ## benchmarks: vs bare Flask-SocketIO and Node socket.io (BENCH_ARGS=--quick), then login stall
	$(BIN)/python tests/bench/run.py $(BENCH_ARGS)
	$(BIN)/python tests/bench_login_stall.py

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) $(STAMPS) .pytest_cache .mypy_cache .ruff_cache test-artifacts
