# The two commands of the README. Each sets itself up on a fresh machine: it needs only python3 (≥ 3.11, with
# venv) and a reachable PyPI. The virtual environment is rebuilt when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.quantlab-installed
# llama-cpp-python (extra gguf) compiles llama.cpp for this CPU. On x86_64 its AMX kernels are compiled out:
# hosts that advertise AMX without enabling it (the Firecracker VMs this project is built on) die with SIGILL
# on the first quantized matmul, and AMX only speeds up some prefill on Sapphire Rapids and newer.
ifeq ($(shell uname -m),x86_64)
LLAMA_CFLAGS := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
endif

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
	# llama-cpp-python is built from source here (≈8 min on 2 cores); its multimodal library is not used by
	# quantlab, so it is not built. For a CUDA build add -DGGML_CUDA=on to CMAKE_ARGS.
	CMAKE_ARGS="-DLLAVA_BUILD=OFF $$CMAKE_ARGS" CFLAGS="$(LLAMA_CFLAGS) $$CFLAGS" CXXFLAGS="$(LLAMA_CFLAGS) $$CXXFLAGS" \
		$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
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
