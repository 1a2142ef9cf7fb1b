# The two quick-start targets, and the rest of the developer workflow.
# Each target makes its own virtual environment (.venv) the first time.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
WORKDIR ?= runs/default
# pytest-xdist workers: "auto" uses every core.
WORKERS ?= auto

.PHONY: demo test test-slow test-all constraints clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

## Quick start 1: install gdtx with its examples and run the digits comparison.
demo: $(BIN)/python
	$(PIP) -e ".[examples]"
	$(BIN)/gdtx-train --config configs/default.py --workdir $(WORKDIR)

## Quick start 2: install gdtx with its test extras and run the default suite.
# pytest exits 5 when it collected no tests: that must fail loudly, never pass.
test: $(BIN)/python
	$(PIP) -e ".[test]"
	$(BIN)/python -m pytest -n $(WORKERS) --durations=20 -m "not slow"; \
	  status=$$?; [ $$status -ne 5 ] || echo "make test: pytest collected no tests" >&2; exit $$status

## The slow tier: long runs, paper reproductions, statistical tests.
test-slow: $(BIN)/python
	$(PIP) -e ".[test]"
	$(BIN)/python -m pytest -n $(WORKERS) --durations=20 -m slow

test-all: test test-slow

## Re-pin constraints.txt from the current environment (after a deliberate upgrade).
constraints: $(BIN)/python
	$(BIN)/python -m pip install --quiet -U -e ".[dev]"
	{ head -n 3 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^gdtx'; } > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) runs build dist *.egg-info .pytest_cache .hypothesis
