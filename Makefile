# Two commands for a machine with nothing but Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: help install run test lint bench simulate soak wrk test-tools clean

# This list; a bare `make` prints it (each target's description is the first line above it).
help:
	@awk '/^# / && !text { text = substr($$0, 3) } /^[a-z-]+:/ && text { sub(/:.*/, ""); \
	  printf "  %-11s %s\n", $$0, text } !/^# / { text = "" }' $(MAKEFILE_LIST)

# The virtualenv with every dependency at its locked version (make run and make test do it).
install: $(VENV)/.installed

# Exact versions of everything (requirements.lock) so every machine runs what CI ran.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

# The whole stack on this machine, PostgreSQL and NATS included, behind one entry point.
run: install
	$(BIN)/python -m devstack

# Lint, then every test against real PostgreSQL and NATS: PYTEST_ARGS="-k webhook" for a part.
test: lint test-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Lint rules, formatting and types (configured in pyproject.toml); make test runs it first.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The gateway's figures (docs/performance.md); BENCH_ARGS="--only 1,5 --seconds 3" for a part.
bench: install wrk
	$(BIN)/python -m bench $(BENCH_ARGS)

# A fleet of virtual TVs against the running stack (make run): SIMULATE_ARGS="--tvs 2000 --seconds 120".
simulate: install
	$(BIN)/python -m bench.simulate $(SIMULATE_ARGS)

# The long soak, on a stack of its own: 2,000 TVs for 10 minutes; SOAK_ARGS="--tvs 5000 --seconds 1800";
# SOAK_ARGS="--cluster" on three clustered NATS nodes (R3), "--faults 60" breaks a part every minute;
# TVs hold waiting requests (--wait 25; 0: plain polls) and carry out 200 commands (--commands).
soak: install
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# Programs the tests run that no wheel carries: Chromium (the docs page, headless) and promtool
# (the alert rules' tests, from Debian's prometheus package); installed when root on Debian/Ubuntu.
test-tools:
	@missing=""; command -v chromium >/dev/null || missing="chromium"; \
	  command -v promtool >/dev/null || missing="$$missing prometheus"; \
	  [ -z "$$missing" ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq --no-install-recommends $$missing \
	       || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; }; } >/dev/null; } \
	  || { echo "make test needs:$$missing (sudo apt-get install$$missing)"; exit 2; }

# The load generator make bench needs (wrk; Debian and Ubuntu package it).
wrk:
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get install -y -qq wrk || (apt-get update -qq && apt-get install -y -qq wrk)); } \
	  || { echo "make bench needs wrk: sudo apt-get install wrk (or brew install wrk)"; exit 2; }

# Remove the virtualenv and the local stack's data.
clean:
	rm -rf $(VENV) .data .pytest_cache
