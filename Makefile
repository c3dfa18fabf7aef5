# Hearth: `make run` sets everything up and starts the daemon; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
DOVECOT := /usr/sbin/dovecot
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

# A first run writes hearth.toml and its encryption key (hearth.key, 0600): answers are kept.
run: $(STAMP) $(CATALOGS)
	[ -e hearth.toml ] || $(BIN)/hearth init
	$(BIN)/hearth db upgrade
	$(BIN)/hearth demo
	exec $(BIN)/hearth serve

test: $(STAMP) $(CATALOGS) tests/js/node_modules/.package-lock.json $(CHROMIUM) $(DOVECOT)
	$(BIN)/ruff check service cli tests bench
	$(BIN)/ruff format --check service cli tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -n auto

# Generated histories at length (tests/histories/): 10,000 on SQLite and PostgreSQL, every
# failing one printed shrunk. HISTORIES=1000 make simulate for a shorter run.
HISTORIES ?= 10000
simulate: $(STAMP) $(CATALOGS)
	$(BIN)/python -m bench.simulate --histories $(HISTORIES)

# Debian's Chromium for the partner page's browser tests (Playwright drives it; it cannot
# download a browser of its own). Installed only when missing.
$(CHROMIUM):
	apt-get install -y chromium || (apt-get update && apt-get install -y chromium)

# Debian's Dovecot: the email-reply tests start their own on loopback (tests/peers/
# imap_server.py). Never the system's service: disabled again where the package started it.
$(DOVECOT):
	apt-get install -y --no-install-recommends dovecot-imapd || (apt-get update && apt-get install -y --no-install-recommends dovecot-imapd)
	-systemctl disable --now dovecot 2>/dev/null

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

# docs/page-phone.png and docs/page-desktop.png, taken by the browser tests of the couple's
# loop (the revealed question and "our questions"), at 375 px and 1280 px.
.PHONY: screenshots
screenshots: $(STAMP) $(CATALOGS) tests/js/node_modules/.package-lock.json $(CHROMIUM)
	SCREENSHOTS=1 $(BIN)/pytest -q tests/test_page_loop_browser.py -k both_answer
