# The two commands of the README. Each sets itself up on a fresh machine: it needs only python3 (≥ 3.11, with
# venv) and a reachable PyPI. The virtual environment is rebuilt when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.quantlab-installed
# glibc's malloc asks for transparent huge pages for its large blocks where the kernel offers them (THP in
# madvise mode): torch on a CPU allocates ~150 MB temporaries in loops (GPTQModel's AWQ clip search), and on 4 KiB
# pages the kernel spent ~40% of that time faulting in zeroed pages (measured: AWQ on 4 layers 91 s -> 69 s,
# byte-identical artifact). Ignored by glibc < 2.35 and where THP is off; a value you set yourself wins.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: setup demo test test-fast lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# llama-cpp-python's Python package alone (-DLLAMA_BUILD=OFF: seconds, no compiler): quantlab builds llama.cpp
	# once, its tools and the library together, and points llama-cpp-python at that library (see
	# quantlab/llamacpp/build.py). --no-cache-dir keeps this library-less wheel out of pip's wheel cache, where
	# another install of the same version elsewhere would pick it up.
	CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" \
		$(BIN)/python -m pip install --quiet --no-cache-dir -c constraints.txt llama-cpp-python
	# llama.cpp's llama-server, llama-bench, llama-perplexity, llama-imatrix, llama-quantize and libllama, from
	# the installed llama-cpp-python's llama.cpp tree (≈5 min on 2 cores; once per quantlab cache; CUDA when nvcc
	# and a GPU are found). It needs only what these first two lines install (quantlab without its dependencies),
	# so it compiles while pip installs the heavy wheels (torch, ...) instead of after them; both must succeed. It
	# runs in its own session (a background job would ignore Ctrl-C), which an interrupt of make kills whole.
	$(BIN)/python -m pip install --quiet -c constraints.txt numpy pydantic pyyaml typer rich psutil cmake ninja
	$(BIN)/python -m pip install --quiet --no-deps -e .
	setsid $(BIN)/quantlab llamacpp build & build=$$!; \
		trap 'env kill -TERM -- -$$build 2>/dev/null' INT TERM; \
		$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'; installed=$$?; \
		wait $$build; built=$$?; \
		test $$installed -eq 0 && test $$built -eq 0
	touch $(STAMP)

# The main job on the embedded default model: quantize, bench, write results/demo.{jsonl,md}, print the table.
demo: $(STAMP)
	$(BIN)/quantlab demo

# Everything CI runs: lint and format check, then every test (the slow ones on the real model included).
test: $(STAMP)
	$(BIN)/ruff check quantlab tests benchmarks
	$(BIN)/ruff format --check quantlab tests benchmarks
	$(BIN)/pytest

# Only the fast tests (tiny random models), for a quick loop while editing.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
