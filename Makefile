# The two set-up commands of the README: `make up` (run the system, show results) and
# `make test`. Both create the virtual environment and export the models when needed.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install export up test protos

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

export: install
	$(BIN)/shelfwise export

up: export
	$(BIN)/shelfwise up

test: export
	$(BIN)/python -m pytest

protos: install
	$(BIN)/python protos/generate.py
