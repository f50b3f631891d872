# Two commands for a machine with nothing but Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := $(BIN)/uv pip compile --quiet --no-config --universal --python-version 3.11 --generate-hashes \
	--override requirements/overrides.txt \
	--custom-compile-command "make lock"

.PHONY: help install lock run test lint bench simulate soak wrk test-tools clean

# This list; a bare `make` prints it (each target's description is the first line above it).
help:
	@awk '/^# / && !text { text = substr($$0, 3) } /^[a-z-]+:/ && text { sub(/:.*/, ""); \
	  printf "  %-11s %s\n", $$0, text } !/^# / { text = "" }' $(MAKEFILE_LIST)

# The virtualenv with every dependency at its locked version (make run and make test do it).
install: $(VENV)/.installed

# Exact files of everything (requirements/*.txt: versions and hashes) so every machine runs what CI
# ran; pip refuses a file whose hash is not in the lock. The locks are complete, so nothing is
# resolved again (--no-deps: what requirements/overrides.txt leaves out stays out). Then the project
# itself, editable, built by the locked setuptools, with nothing more.
$(VENV)/.installed: pyproject.toml requirements/dev.txt requirements/build.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements/dev.txt -r requirements/build.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The hashed locks again from pyproject.toml after a change there: LOCK_ARGS="--upgrade" moves them.
# requirements/runtime.txt is the image's, dev.txt adds the dev extra at the same versions, build.txt
# is what builds the project (setuptools); every file of each version is hashed, for Python 3.11+ on
# any platform. Locked versions stay unless LOCK_ARGS="--upgrade" (or "--upgrade-package NAME"); a
# new dependency gets its newest. Needs the package index (docs/supply-chain.md).
lock: install
	$(LOCK) pyproject.toml $(LOCK_ARGS) -o requirements/runtime.txt
	$(LOCK) pyproject.toml --extra dev -c requirements/runtime.txt $(LOCK_ARGS) -o requirements/dev.txt
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb")) \
	  ["build-system"]["requires"], sep="\n")' | $(LOCK) - $(LOCK_ARGS) -o requirements/build.txt

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
