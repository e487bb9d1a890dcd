# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the tests).
# Each installs what it needs: a .venv with the package and its dev extras, and the Debian
# packages listed in DEBIAN_PACKAGES (redis-server, for the elasticache transfer mode; bubblewrap, the
# functions' sandbox).

# As root, the venv's Python must be one that any user can run: functions run under uids of
# their own (see tools/pick-python). Say PYTHON=... to choose another.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell tools/pick-python)
endif
VENV := .venv
BIN := $(VENV)/bin
# Named after the Python it was built from: another Python builds the venv afresh.
STAMP := $(VENV)/.installed-$(subst /,_,$(PYTHON))
DEBIAN_PACKAGES := redis-server bubblewrap

.PHONY: demo test lint typecheck unit bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(if $(wildcard $(STAMP)),,--clear) $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing; fi

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) system-deps
	$(BIN)/pytest

test: lint typecheck unit

# The evaluation, small: three workflows in the four transfer modes, side by side (a few minutes).
demo: $(STAMP) system-deps
	$(BIN)/xdt bench apps --quick --out demo-results

bench: $(STAMP) system-deps
	$(BIN)/xdt bench transfer --json bench-transfer.json
	$(BIN)/xdt bench platform --json bench-platform.json
	$(BIN)/xdt bench all --out bench-results

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
