# Two entry points for a newcomer: `make demo` and `make test`. Everything else is a step.
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(VENV)/collections
export ANSIBLE_FORCE_COLOR := 0
export PY_COLORS := 0

.PHONY: venv promtool lint unit mutants molecule e2e test demo demo-destroy lock clean

venv:
	@VENV=$(VENV) bash scripts/bootstrap-venv.sh
	@bash scripts/system-test-deps.sh

# Debian's prometheus package, for promtool only: the server is never left running or enabled.
promtool:
	@bash scripts/ensure-promtool.sh

lint: venv
	ruff check .
	ruff format --check .
	yamllint -s .
	ansible-lint -q

unit: venv promtool
	pytest -q -m "not e2e"

# Every guarantee bites: each row of tests/mutants/mutants.toml removes one mechanism in a
# scratch copy and must make its named tests fail (prints a row per mutant, total time).
mutants: venv
	python tests/mutants/run.py

# Both molecule scenarios on a real systemd test host (podman); prints "molecule: N passed, M failed".
molecule: venv promtool
	@bash scripts/run-molecule.sh

# The real module, through hyops, against a podman systemd test host (tests/runner), and
# on the HA test-host image (tests/ha): the role in cluster mode, then a two-node
# Pacemaker cluster with fencing and failover (about 5 minutes).
e2e: venv promtool
	pytest -q -m e2e tests/runner tests/ha

test: lint unit mutants molecule e2e

demo: venv
	@bash scripts/demo.sh up

demo-destroy: venv
	@bash scripts/demo.sh down

lock:
	rm -rf /tmp/hyops-lock-venv && python3.12 -m venv /tmp/hyops-lock-venv
	/tmp/hyops-lock-venv/bin/pip install -q -r requirements/dev.in
	{ echo "# Generated from requirements/dev.in by 'pip freeze' in a fresh venv (Python 3.12)."; \
	  echo "# Regenerate: make lock"; /tmp/hyops-lock-venv/bin/pip freeze; } > requirements/dev.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
