# One entry point for humans and CI. Each target creates the virtual environment and installs
# what it needs, so a fresh machine needs nothing but `make run` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= ./mqim-data
PORT ?= 1883

.PHONY: run test check lint typecheck services bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mqim serve --port $(PORT) --data-dir $(DATA)

services:
	./scripts/install-services

lint: $(STAMP)
	$(BIN)/ruff check mqim tests
	$(BIN)/ruff format --check mqim tests

typecheck: $(STAMP)
	$(BIN)/mypy

check test: $(STAMP) services lint typecheck
	$(BIN)/pytest -q

bench: $(STAMP) services
	$(BIN)/mqim bench all --json bench.json

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
