# The README's two quick-start commands as targets, and the rest of the workflow.
# `make test` is exactly what .ci/run runs.

WORKDIR ?= runs/default

.PHONY: demo test test-slow docs constraints clean

## Quick start 1: install gdtx with its examples and run the digits comparison.
demo:
	python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e ".[examples]" && .venv/bin/gdtx-train --config configs/default.py --workdir $(WORKDIR)

## Quick start 2: install gdtx with its test extras and run the default suite.
test:
	bash .ci/run

## The slow tier: long runs, paper reproductions, statistical tests.
test-slow:
	python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e ".[test]" && .venv/bin/python -m pytest -n auto -m slow --durations=20

## The documentation site, built offline into site/ (strict: any warning fails the build).
docs:
	python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e ".[docs]" && NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict

## Re-pin constraints.txt from a fresh resolution (after a deliberate upgrade). The check at
## the end fails on a pin that some Python admitted by requires-python cannot install
## (a fresh resolution picks the newest releases for *this* python3): pin those back by hand.
constraints:
	python3 -m venv .venv && .venv/bin/pip install -q -U -e ".[dev]"
	{ head -n 3 constraints.txt; .venv/bin/pip freeze --exclude-editable | grep -v '^gdtx'; } > constraints.new
	mv constraints.new constraints.txt
	.venv/bin/python -m pytest -q tests/test_project.py -k "pin or python"

clean:
	rm -rf .venv runs site build dist *.egg-info .pytest_cache .hypothesis
