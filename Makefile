# Two commands for a machine with nothing but Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install run test lint bench simulate soak wrk clean

install: $(VENV)/.installed

# Exact versions of everything (requirements.lock) so every machine runs what CI ran.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

run: install
	$(BIN)/python -m devstack

test: lint
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

# wrk is the load generator; Debian and Ubuntu package it.
wrk:
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get install -y -qq wrk || (apt-get update -qq && apt-get install -y -qq wrk)); } \
	  || { echo "make bench needs wrk: sudo apt-get install wrk (or brew install wrk)"; exit 2; }

clean:
	rm -rf $(VENV) .data .pytest_cache
