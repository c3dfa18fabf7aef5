# Hearth: `make run` sets everything up and starts the daemon; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: run test lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/hearth db upgrade
	$(BIN)/hearth demo
	exec $(BIN)/hearth serve

test: $(STAMP) tests/js/node_modules/.package-lock.json $(CHROMIUM)
	$(BIN)/ruff check service cli tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

# Debian's Chromium for the partner page's browser tests (Playwright drives it; it cannot
# download a browser of its own). Installed only when missing.
$(CHROMIUM):
	apt-get install -y chromium || (apt-get update && apt-get install -y chromium)

# ical.js for the feed interop tests, pinned by the lockfile.
tests/js/node_modules/.package-lock.json: tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error

lint: $(STAMP)
	$(BIN)/ruff check service cli tests bench
	$(BIN)/lint-imports
	$(BIN)/ruff format --check service cli tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) tests/js/node_modules .pytest_cache .ruff_cache .mypy_cache hearth.db hearth.db-wal hearth.db-shm
