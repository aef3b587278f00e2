# The README's two commands, `make demo` and `make test`, do all their own set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test unit integration lint bench install lock up down status clean image gauntlet

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "error: Python >= 3.11 is needed (found $$($(PYTHON) --version)); set PYTHON=python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The runtime dependencies are installed at the versions in requirements.lock (the ones the operator image
# ships), so a release published since the lock was made changes nothing here: `make lock` moves them on.
$(VENV)/.installed: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install --quiet --constraint requirements.lock -e '.[test]'
	touch $@

## lock: upgrade the runtime dependencies to the newest versions pyproject.toml allows and pin them
# Not through the constrained install: after a change in pyproject.toml the old pins may not satisfy it.
lock: | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade --upgrade-strategy eager -e '.[test]'
	$(BIN)/python tests/unit/test_chart_image.py > requirements.lock
	touch $(VENV)/.installed

install: $(VENV)/.installed

## demo: bring the sandbox up (building it the first time) and show Sequestra at work on it
## (`make demo LLM=1`: with the sandbox's language model as the diagnoser)
demo: install
	$(BIN)/sequestra demo $(if $(LLM),--llm)

## test: lint, type-check, the architecture contract, unit and integration tests on the real sandbox
test: install lint
	$(BIN)/sequestra sandbox up
	$(BIN)/pytest

unit: install
	$(BIN)/pytest -m unit

integration: install
	$(BIN)/sequestra sandbox up
	$(BIN)/pytest -m integration

lint: install
	$(BIN)/ruff check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/sequestra sandbox up
	$(BIN)/python -m bench

## gauntlet: every incident and look-alike in gauntlet/scenarios/ against the real operator on the sandbox;
## writes docs/GAUNTLET.md (and .json); exit 1 when a scenario is not handled as it should be
gauntlet: install
	$(BIN)/sequestra gauntlet --report docs/GAUNTLET.md

## image: the operator image from the Dockerfile, built with buildah on a Debian base made here (root; no Docker,
## no registry), checked as a pod runs it; written to ~/.cache/sequestra/images/sequestra-operator.oci.tar
image: install
	$(BIN)/python -m sequestra.sandbox.image

up: install
	$(BIN)/sequestra sandbox up

down: install
	$(BIN)/sequestra sandbox down

status: install
	$(BIN)/sequestra sandbox status

clean: down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
