# Two commands set everything up on a fresh machine:
#   make app    -> installs into .venv and launches the app (ARGS="--model tiny" for the no-weights preview)
#   make test   -> installs into .venv (plus Chromium and PostgreSQL from Debian) and runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: app test deps system-deps

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-refs.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -r requirements-refs.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

deps: $(VENV)/.installed

system-deps:
	bash scripts/install_system_deps.sh

app: deps
	$(PY) launch.py $(ARGS)

test: deps system-deps
	$(PY) -m pytest
