# mtm: `make run` starts the stack and runs one discharge to a physician; `make test` runs every test;
# `make faults` runs the fault suite (R1-R4, about 30 minutes; `make faults ARGS=--quick` for a few: faults/README.md).
# All set themselves up: uv (installed with pip when missing), a virtual environment, the locked dependencies;
# `make test` also installs Debian's chromium for the browser tests when no Chromium is on the machine.

PYTHON ?= python3
UV := $(PYTHON) -m uv
VENV := .venv/.synced

.PHONY: run up test test-unit test-integration test-e2e bench faults lint format schemas docs deploy-config clean browser
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(VENV): uv.lock pyproject.toml contracts/pyproject.toml libs/*/pyproject.toml services/*/pyproject.toml web/pyproject.toml cli/pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv \
		|| $(PYTHON) -m pip install --quiet --user --break-system-packages uv
	$(UV) sync --locked --all-packages --python $(PYTHON)
	@touch $(VENV)

run: $(VENV)
	$(UV) run --no-sync mtm up --demo

up: $(VENV)
	$(UV) run --no-sync mtm up

# Headless Chromium from the distribution (Playwright drives it; no browser is ever downloaded by a test tool).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [ -n "$$MTM_CHROMIUM" ] || { \
		echo "installing chromium (Debian package) for the browser tests ..."; \
		$(SUDO) apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

test: $(VENV) browser
	$(UV) run --no-sync pytest

test-unit: $(VENV)
	$(UV) run --no-sync pytest -m unit

test-integration: $(VENV)
	$(UV) run --no-sync pytest -m integration

test-e2e: $(VENV) browser
	$(UV) run --no-sync pytest -m e2e

bench: $(VENV)
	$(UV) sync --locked --all-packages --group bench --python $(PYTHON)
	$(UV) run --no-sync python -m bench

faults: $(VENV)
	$(UV) run --no-sync python -m faults $(ARGS)

lint: $(VENV)
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .
	$(UV) run --no-sync lint-imports --no-logo

format: $(VENV)
	$(UV) run --no-sync ruff format .
	$(UV) run --no-sync ruff check --fix .

schemas: $(VENV)
	$(UV) run --no-sync python -m mtm.contracts.schema contracts/schemas

# The NATS accounts of the compose file and of the Helm chart, from the access table (tests fail when stale).
deploy-config: $(VENV)
	$(UV) run --no-sync python -m mtm.platform.access deploy/nats/nats.conf
	{ echo "# Generated from mtm.platform.access by make deploy-config; passwords come from the environment."; \
	  $(UV) run --no-sync python -c "from mtm.platform.access import nats_accounts; print(nats_accounts())"; \
	} > deploy/helm/mtm/files/nats-accounts.conf

# AsyncAPI 3.0 documents of each service and of the whole system, from the handler tables (a test fails when stale).
docs: $(VENV)
	$(UV) run --no-sync python -m mtm.platform.asyncapi docs/asyncapi

clean:
	rm -rf .venv .pytest_cache .ruff_cache .import_linter_cache
