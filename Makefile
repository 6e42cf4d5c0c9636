# Two commands for a newcomer: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
COSMIC_RAY := cosmic-ray==8.7.0
BIN := $(VENV)/bin

.PHONY: install run test up down status lint format bench mutation web

$(BIN)/astraforge: pyproject.toml toolkit/pyproject.toml astraforge/_native.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	rm -f astraforge/_native.*.so  # the build is optional: one that fails must not leave the last one in use
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' -e './toolkit[deepagents]'
	touch $@

install: $(BIN)/astraforge

## Start the local stack, the projector, the processors and the API (http://127.0.0.1:8000) in the foreground;
## the web UI (built once, cached by a hash of web/'s sources) is served at /.
run: install
	dist="$$(bash deploy/local/web.sh build)" && ASTRAFORGE_WEB_DIST="$$dist" flock -so "$$dist" $(BIN)/astraforge serve

## Install, start what the tests need, run every suite.
test: install up
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	bash deploy/local/web.sh unit
	$(BIN)/pytest

## Build the web UI (cached) and print where it is.
web:
	bash deploy/local/web.sh build

up: install
	$(BIN)/astraforge dev up

down:
	bash deploy/local/stack.sh down

status:
	bash deploy/local/stack.sh status

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

## Every benchmark, then every budget against what they measured (bench/budgets.py).
bench: install up
	rm -f .bench-results.jsonl
	export ASTRAFORGE_BENCH_RESULTS=$(CURDIR)/.bench-results.jsonl && \
	$(BIN)/python bench/codec.py && \
	$(BIN)/python bench/ingest.py && \
	$(BIN)/python bench/sse_latency.py && \
	$(BIN)/python bench/replay.py && \
	$(BIN)/python bench/sandbox.py && \
	$(BIN)/python bench/codex.py && \
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/budgets.py .bench-results.jsonl

## Mutation testing of the security-critical modules (not part of `make test`); SCOPES="auth queries", or "all".
mutation: install up
	$(BIN)/pip install -q '$(COSMIC_RAY)'
	$(BIN)/python tests/mutation/run.py $(SCOPES)
