# Hearth: `make run` sets everything up and starts the daemon; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
# Compiled message catalogs (service/core/i18n.py compiles a missing or stale one in memory).
CATALOGS := $(patsubst %.po,%.mo,$(wildcard service/locale/*/LC_MESSAGES/hearth.po))

.PHONY: run test lint typecheck bench clean catalogs simulate

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(CATALOGS): %.mo: %.po $(STAMP)
	$(BIN)/pybabel compile -D hearth -i $< -o $@

# After changing a partner-facing text: re-extract and merge into every language's catalog,
# then translate what is new (docs/i18n.md); make test fails until it is.
catalogs: $(STAMP)
	$(BIN)/pybabel extract -F service/locale/babel.cfg -k N_ --no-location --sort-output --omit-header -o service/locale/hearth.pot .
	$(BIN)/pybabel update -D hearth -i service/locale/hearth.pot -d service/locale --ignore-obsolete --no-fuzzy-matching

run: $(STAMP) $(CATALOGS)
	$(BIN)/hearth db upgrade
	$(BIN)/hearth demo
	exec $(BIN)/hearth serve

test: $(STAMP) $(CATALOGS) tests/js/node_modules/.package-lock.json $(CHROMIUM)
	$(BIN)/ruff check service cli tests bench
	$(BIN)/ruff format --check service cli tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

# Generated histories at length (tests/histories/): 10,000 on SQLite and PostgreSQL, every
# failing one printed shrunk. HISTORIES=1000 make simulate for a shorter run.
HISTORIES ?= 10000
simulate: $(STAMP) $(CATALOGS)
	$(BIN)/python -m bench.simulate --histories $(HISTORIES)

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
	rm -rf $(VENV) tests/js/node_modules .pytest_cache .ruff_cache .mypy_cache hearth.db hearth.db-wal hearth.db-shm $(CATALOGS)
