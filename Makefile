# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the tests).
# Each installs what it needs: a .venv with the package and its dev extras, the Debian
# packages listed in DEBIAN_PACKAGES (redis-server, for the elasticache transfer mode; bubblewrap, the
# functions' sandbox; iproute2, the test hosts' namespaces and links; iperf3, their benchmarks'
# baseline), and for the tests Knative's and Kubernetes' schemas (npm, in tools/knative-schema).

# As root, the venv's Python must be one that any user can run: functions run under uids of
# their own (see tools/pick-python). Say PYTHON=... to choose another.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell tools/pick-python)
endif
VENV := .venv
BIN := $(VENV)/bin
# Named after the Python it was built from: another Python builds the venv afresh.
STAMP := $(VENV)/.installed-$(subst /,_,$(PYTHON))
DEBIAN_PACKAGES := redis-server bubblewrap iproute2 iperf3
SCHEMAS := tools/knative-schema/node_modules/.installed

.PHONY: demo test lint typecheck unit bench system-deps knative-schema clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(if $(wildcard $(STAMP)),,--clear) $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing; fi

# The rendered Knative manifests are validated offline against the published schemas.
knative-schema: $(SCHEMAS)
$(SCHEMAS): tools/knative-schema/package-lock.json
	@command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	npm ci --prefix tools/knative-schema --no-audit --no-fund --silent
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) system-deps $(SCHEMAS)
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
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache tools/knative-schema/node_modules
