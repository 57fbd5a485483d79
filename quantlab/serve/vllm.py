"""vLLM as a serving engine, run by the Python interpreter a setting names.

vLLM pins its own torch and compressed-tensors, which conflict with llm-compressor's pins in quantlab's
environment, so on a GPU host vLLM usually lives in a virtualenv of its own. quantlab therefore never imports it:
the interpreter that will run the server is asked, in a subprocess, whether it imports vllm and which version it
has, and the server is started by that same interpreter, so the version recorded is the version that served.
The interpreter is the setting (`--vllm-python`, a recipe's `vllm_python`), else `$QUANTLAB_VLLM_PYTHON`, else
quantlab's own (`vllm_python`, the one place that default lives).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from quantlab.artifact import Artifact
from quantlab.errors import BackendUnavailableError
from quantlab.results.serving import EnginePython, ServingOptions
from quantlab.serve.base import Engine, LaunchPlan, loopback_plan

ENV_VAR = "QUANTLAB_VLLM_PYTHON"
PROBE = "import vllm, sys; print(vllm.__version__)"
# importing vLLM imports torch and its CUDA libraries: seconds when warm, tens of seconds from a cold disk
PROBE_TIMEOUT_S = 120.0
INSTALL_HINT = "pip install vllm on a CUDA rig"


@dataclass(frozen=True)
class Interpreter:
    path: str
    source: str  # where the choice came from, so an error names what to change

    @property
    def own(self) -> bool:
        # Paths compared as named, not resolved: two virtualenvs' bin/python link to the same base interpreter.
        return os.path.abspath(self.path) == os.path.abspath(sys.executable)

    def record(self) -> EnginePython:
        return EnginePython(path=self.path, own=self.own)


def vllm_python(named: str | None = None) -> Interpreter:
    """The interpreter that runs vLLM: `named` (the setting), else $QUANTLAB_VLLM_PYTHON, else quantlab's own.
    The environment is read at each call, so a sweep's worker sees its own host's variable."""
    if named:
        return Interpreter(_absolute(named), "--vllm-python")
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        return Interpreter(_absolute(from_env), ENV_VAR)
    return Interpreter(sys.executable, "quantlab's own Python")


def _absolute(name: str) -> str:
    """A bare name (`python3.12`) is looked up on PATH; a path is made absolute without resolving links, because
    a virtualenv's bin/python is a link whose target does not know the virtualenv."""
    if os.sep not in name:
        return shutil.which(name) or name
    return os.path.abspath(os.path.expanduser(name))


def probe(interpreter: Interpreter) -> str:
    """vLLM's version as `interpreter` imports it; a one-line BackendUnavailableError when it cannot."""
    return _probe(interpreter.path, interpreter.source)


@functools.cache  # an import of vLLM costs seconds: once per interpreter and process (a failure is not kept)
def _probe(path: str, source: str) -> str:
    where = f"engine 'vllm': its Python {path} ({source})"
    if not os.path.exists(path):
        raise BackendUnavailableError(f"{where} does not exist")
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise BackendUnavailableError(f"{where} is not an executable file")
    try:
        done = subprocess.run(
            [path, "-c", PROBE], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise BackendUnavailableError(f"{where} did not import vllm within {PROBE_TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise BackendUnavailableError(f"{where} cannot run: {exc.strerror or exc}") from None
    if done.returncode != 0:
        said = _last_line(done.stderr) or f"exit status {done.returncode}"
        raise BackendUnavailableError(
            f"{where} cannot import vllm ({said}); install vLLM there ({INSTALL_HINT}) or name the Python that "
            f"has it with --vllm-python or {ENV_VAR}"
        )
    version = _last_line(done.stdout)
    if not version:
        raise BackendUnavailableError(f"{where} imported vllm but printed no version")
    return version


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


class VllmServer(Engine):
    """vLLM's OpenAI-compatible server (`python -m vllm.entrypoints.openai.api_server`), started by the
    interpreter `vllm_python` names and probed through it; vLLM is never imported into quantlab's process."""

    name = "vllm"
    distribution = "vllm"
    module = "vllm"
    install_hint = INSTALL_HINT
    batches_requests = True
    batching_note = "continuous batching (vLLM's scheduler, PagedAttention)"
    verified = False
    same_library_runtime = "transformers"  # what it can load; its kernels are its own (see bench.served_run)
    loads_from = "vllm"
    devices = ("cuda",)
    kernel_readable = False
    kv_cache_dtypes = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")  # vLLM's --kv-cache-dtype choices (unverified)
    prefix_caching = True
    tensor_parallel = True  # --tensor-parallel-size: the GPUs from CUDA_VISIBLE_DEVICES on (unverified)

    def __init__(self, python: str | None = None) -> None:
        self.python = python  # the setting as given; None: the environment's, else quantlab's own (vllm_python)

    @property
    def interpreter(self) -> Interpreter:
        return vllm_python(self.python)

    def missing(self) -> str | None:
        try:
            probe(self.interpreter)
        except BackendUnavailableError as exc:
            return str(exc)
        return None

    def version(self) -> str:
        try:
            return probe(self.interpreter)
        except BackendUnavailableError:
            return "unknown"

    def engine_python(self) -> EnginePython:
        return self.interpreter.record()

    def _plan(
        self,
        artifact: Artifact,
        *,
        port: int,
        device: str,
        threads: int,
        ctx: int,
        max_concurrency: int,
        options: ServingOptions,
    ) -> LaunchPlan:
        model = str(artifact.path)
        program = [self.interpreter.path, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
        flags = ["--max-model-len", str(ctx), "--disable-log-requests"]
        flags += ["--enable-prefix-caching" if options.prefix_cache else "--no-enable-prefix-caching"]
        if options.kv_cache_dtype:
            flags += ["--kv-cache-dtype", options.kv_cache_dtype]
        if options.tensor_parallel > 1:
            flags += ["--tensor-parallel-size", str(options.tensor_parallel)]
        return loopback_plan(program, flags, port=port, threads=threads, model=model)

    def fixed_length(self, max_tokens: int) -> dict:
        return {"ignore_eos": True}
