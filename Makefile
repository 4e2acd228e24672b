# One entry point for humans and CI. Each target creates the virtual environment and installs
# what it needs, so a fresh machine needs nothing but `make run` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= ./mqim-data
PORT ?= 1883
WS_PORT ?= 8083
# The built web client (`make web`); `make run` builds it when missing or older than its sources.
WEB_BUILT := mqim/web/static/index.html
WEB_SRC := $(wildcard web/src/*) web/build.mjs web/package.json web/package-lock.json

.PHONY: run test check lint typecheck services web bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	@$(MAKE) --no-print-directory $(WEB_BUILT) || echo "web client not built (needs npm): the page will say so"
	MQIM_SERVER__WS_PORT=$(WS_PORT) $(BIN)/mqim serve --port $(PORT) --data-dir $(DATA)

# Chromium and web/node_modules when missing, then the client's build into mqim/web/static.
web:
	./scripts/install-web
	cd web && npm run --silent build

$(WEB_BUILT): $(WEB_SRC)
	MQIM_SKIP_CHROMIUM=1 ./scripts/install-web
	cd web && npm run --silent build

services:
	./scripts/install-services

lint: $(STAMP)
	$(BIN)/ruff check mqim tests
	$(BIN)/ruff format --check mqim tests

typecheck: $(STAMP)
	$(BIN)/mypy

check test: $(STAMP) services web lint typecheck
	$(BIN)/pytest -q

bench: $(STAMP) services
	$(BIN)/mqim bench all --json bench.json

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
