# The two commands of the README. Each sets itself up on a fresh machine: it needs only python3 (≥ 3.11, with
# venv) and a reachable PyPI. The virtual environment is rebuilt when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.quantlab-installed

.PHONY: setup demo test test-fast lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

# The main job on the embedded default model: quantize, bench, write results/demo.{jsonl,md}, print the table.
demo: $(STAMP)
	$(BIN)/quantlab demo

# Everything CI runs: lint, then every test (the slow ones on the real model included).
test: $(STAMP)
	$(BIN)/ruff check quantlab tests benchmarks
	$(BIN)/pytest

# Only the fast tests (tiny random models), for a quick loop while editing.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
