"""The `llamacpp` runtime: a GGUF artifact served by llama.cpp through llama-cpp-python, on the CPU (or on a
GPU with a CUDA build, every layer offloaded). The library it runs is quantlab's own llama.cpp build
(`llamacpp/build.py`), the one `llama-server` links.

Quality: the token ids the transformers runtime scores are fed as ids, never re-tokenized, through llama.cpp's
batch API with every position marked as an output, in `n_batch` chunks as `Llama.eval` makes them (the same
graph). Each chunk's rows are copied once from llama.cpp's output buffer into the returned tensor:
llama-cpp-python's `logits_all=True` would mirror every position's logits in its `scores` array, and being
fixed when a context is made it would need a context of its own; the open speed context is reused whenever it
is long enough. Speed: prefill = one `eval` of the prompt, decode = one `eval` per greedy token, timed
separately with the same threads. Batching: none. The high-level `Llama` object holds one sequence; batch sizes
above 1 are skipped and the result says why (a served sweep, `llama-server`, is where multi-sequence batching
is measured).

KV cache: f16 by default, flash attention off (llama-cpp-python's defaults). `kv_cache_dtype` sets K and V to
a llama.cpp cache type and turns flash attention on (a quantized V requires it; f16 named explicitly gets it
too, so types compare with the cache the only difference). llama.cpp attends over the cache tensors even
within one batch, so a quantized cache changes prefill logits too, and perplexity/KLD measure it. The bytes per
token are llama.cpp's own: its log line for the cache it allocated (`llamacpp.kv`), captured while the context
is made.

Kernel: ggml's CPU matmuls work directly on the quantized blocks (dot products per block type, no
dequantized copy of the model), so quantized GGUFs are `native`; F16/BF16/F32 files are `dense`.
"""

from __future__ import annotations

import ctypes
import functools
import os
import time
from pathlib import Path

import numpy as np

from quantlab.artifact import Artifact
from quantlab.env import host_info
from quantlab.errors import BenchError
from quantlab.llamacpp import BATCH_TOKENS, SPEED_CTX, build
from quantlab.llamacpp.kv import kv_allocation
from quantlab.llamacpp.types import FLOAT_TYPES
from quantlab.results import RuntimeDescription
from quantlab.roofline import BytesPerToken
from quantlab.runtimes.base import Capabilities, GenTiming, LoadRequest, Runtime, Session

KV_CACHE_DTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")  # common/arg.cpp
BATCHING = "not batched: llama-cpp-python's Llama serves one sequence; batch sizes above 1 are skipped, not emulated"


def threads() -> int:
    """All cores unless QUANTLAB_THREADS says otherwise; the same count for prefill and decode."""
    return int(os.environ.get("QUANTLAB_THREADS", os.cpu_count() or 1))


def _version(module) -> str:
    found = build.find()
    return f"{module.__version__} / {found.label}" if found else module.__version__


def _gpu_name() -> str:
    import subprocess

    try:
        query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        out = subprocess.run(query, capture_output=True, text=True, check=False)
    except OSError:
        return "unknown GPU"
    return (out.stdout.strip().splitlines() or ["unknown GPU"])[0]


class LlamaCppSession(Session):
    max_batch_size = 1

    def __init__(self, artifact: Artifact | None, device: str, kv_cache_dtype: str | None = None, *, path=None) -> None:
        """On an artifact's GGUF, or (`artifact` None) on a bare GGUF `path`: then only `logits` is meaningful, for
        measurements made before any artifact exists (`quantlab tune`'s candidates)."""
        if device != "cpu" and (tools := build.ensure()).backend != "cuda":
            raise BenchError(f"device {device!r} needs a CUDA build of llama.cpp; this one is {tools.label}")
        self.device = device
        self.gguf = artifact.manifest.gguf if artifact else None
        self.path = artifact.path / self.gguf.file if artifact else Path(path)
        self.source_dir = artifact.manifest.source.path if artifact else ""  # config.json, for the KV size
        self.threads = threads()
        self.kv_cache_dtype = kv_cache_dtype
        self._llm = None
        self._kv = None  # the KV cache llama.cpp says it allocated for the open context
        self._n_ctx = 0
        self._open(n_ctx=SPEED_CTX)

    def _open(self, *, n_ctx: int) -> None:
        llama_cpp = build.llama_cpp()
        self.close()
        kv = {}
        if self.kv_cache_dtype:
            ggml_type = getattr(llama_cpp, f"GGML_TYPE_{self.kv_cache_dtype.upper()}")
            kv = {"type_k": ggml_type, "type_v": ggml_type, "flash_attn": True}
        lines: list[bytes] = []

        @llama_cpp.llama_log_callback
        def capture(level, text, user_data):  # llama.cpp's log while the context is made, not printed
            lines.append(text)

        llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=n_ctx,
                n_batch=min(n_ctx, BATCH_TOKENS),
                n_ubatch=min(n_ctx, BATCH_TOKENS),
                logits_all=False,  # its `scores` mirror is then n_batch rows that nothing writes
                n_threads=self.threads,
                n_threads_batch=self.threads,
                n_gpu_layers=0 if self.device == "cpu" else -1,  # -1: every layer on the GPU
                seed=0,
                verbose=False,
                **kv,
            )
        except (ValueError, RuntimeError) as exc:
            from quantlab.llamacpp.reference import last_error_line

            said = last_error_line(b"".join(lines).decode(errors="replace")) if lines else ""
            raise BenchError(
                f"llama.cpp could not load {self.path.name}: {exc}" + (f" ({said})" if said else "")
            ) from exc
        finally:
            from llama_cpp import _logger

            llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        self._kv = kv_allocation(b"".join(lines).decode(errors="replace"), "llama.cpp's log")
        self._n_ctx = n_ctx

    def logits(self, ids: np.ndarray):
        import torch

        ids = np.asarray(ids, dtype=np.int32)
        n = len(ids)
        if self._n_ctx < n:
            self._open(n_ctx=max(n, BATCH_TOKENS))
        llama_cpp = build.llama_cpp()
        llm = self._llm
        vocab, step = llm.n_vocab(), llm.n_batch
        out = torch.empty((n, vocab), dtype=torch.float32)
        rows = out.numpy()  # shares the tensor's memory: the one copy of the logits made on the host
        llm.reset()  # llama-cpp-python's count of cached tokens, which its next `eval` trusts, must say none
        if (memory := llama_cpp.llama_get_memory(llm.ctx)) is not None:
            llama_cpp.llama_memory_clear(memory, True)
        batch = llama_cpp.llama_batch_init(step, 0, 1)
        try:
            token, pos, n_seq_id, output = (
                np.ctypeslib.as_array(field, shape=(step,))
                for field in (batch.token, batch.pos, batch.n_seq_id, batch.logits)
            )
            for i in range(step):
                batch.seq_id[i][0] = 0
            n_seq_id[:], output[:] = 1, 1
            for start in range(0, n, step):
                size = min(step, n - start)
                token[:size] = ids[start : start + size]
                pos[:size] = np.arange(start, start + size)
                batch.n_tokens = size
                if (code := llama_cpp.llama_decode(llm.ctx, batch)) != 0:
                    raise BenchError(f"llama.cpp could not decode {size} tokens at position {start}: code {code}")
                produced = llama_cpp.llama_get_logits(llm.ctx)
                rows[start : start + size] = np.ctypeslib.as_array(produced, shape=(size, vocab))
        finally:
            llama_cpp.llama_batch_free(batch)
        return out

    def timed_generate(self, prompts: np.ndarray, new_tokens: int) -> GenTiming:
        batch, prompt_len = prompts.shape
        if batch != 1:
            raise BenchError(f"llamacpp runtime: {BATCHING}")
        if self._n_ctx < prompt_len + new_tokens:
            self._open(n_ctx=max(SPEED_CTX, prompt_len + new_tokens))
        llama_cpp = build.llama_cpp()
        llm = self._llm
        vocab = llm.n_vocab()

        def next_token() -> int:
            # Without logits_all, llama-cpp-python keeps no scores: read the last position's logits from llama.cpp.
            return int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,))))

        llm.reset()
        start = time.perf_counter()
        llm.eval([int(t) for t in prompts[0]])
        token = next_token()
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(new_tokens - 1):
            llm.eval([token])
            token = next_token()
        decode = time.perf_counter() - start
        return GenTiming(
            batch_size=1, prompt_tokens=prompt_len, new_tokens=new_tokens, prefill_s=prefill, decode_s=decode
        )

    def kv_bytes_per_token(self) -> float:
        if self._kv is None:
            raise BenchError(f"llama.cpp did not log the KV cache it allocated for {self.path.name}")
        return self._kv.bytes_per_token

    def kv_cache_label(self) -> str:
        dtype = self.kv_cache_dtype or "f16"
        attention = "flash attention on" if self.kv_cache_dtype else "flash attention off"
        return f"{dtype} K and V ({attention}): {self.kv_bytes_per_token():,.1f} B/token (llama.cpp's allocation)"

    def describe(self) -> RuntimeDescription:
        llama_cpp = build.llama_cpp()
        types = ", ".join(f"{n}× {t}" for t, n in self.gguf.tensor_types.items())
        quantized = any(t not in FLOAT_TYPES for t in self.gguf.tensor_types)
        dense = "F16" if "F16" in self.gguf.tensor_types else next(iter(self.gguf.tensor_types))
        where = "CPU" if self.device == "cpu" else "CUDA (every layer offloaded)"
        return RuntimeDescription(
            runtime="llamacpp",
            runtime_version=_version(llama_cpp),
            device=self.device,
            device_name=host_info().cpu if self.device == "cpu" else _gpu_name(),
            threads=self.threads,
            compute_dtype=self.gguf.file_type,
            kernel="native" if quantized else "dense",
            kernel_detail=(
                f"ggml {where} matmul on the GGUF's own tensor types ({types})"
                if quantized
                else f"ggml {where} {dense} matmul ({types})"
            ),
            batching=BATCHING,
            kv_cache=self.kv_cache_label(),
            kv_allocation=self._kv,
            kv_cache_dtype=self.kv_cache_dtype,
        )

    def bytes_per_token(self, prompt_tokens: int, new_tokens: int) -> BytesPerToken:
        """Every tensor in the file as ggml reads it (quantized blocks, not a float copy), less `token_embd`
        when the file has a separate `output` head (then the embedding is only gathered); llama.cpp's KV cache
        is f16 by default."""
        from pathlib import Path

        from quantlab.llamacpp.ops import inspect
        from quantlab.roofline import kv_bytes_read

        tensors = {t["name"]: t["n_bytes"] for t in inspect(self.path)["tensors"]}
        weights = sum(tensors.values())
        separate_head = "output.weight" in tensors
        if separate_head:
            weights -= tensors.get("token_embd.weight", 0)
        if self.kv_cache_dtype:
            per_position, context = self.kv_bytes_per_token(), prompt_tokens + new_tokens // 2
            kv = round(per_position * context)
            kv_detail = f"KV {per_position:,.1f} B/position ({self.kv_cache_dtype}, llama.cpp's allocation) × {context}"
        else:
            kv, kv_detail = kv_bytes_read(Path(self.source_dir), "fp16", prompt_tokens, new_tokens)
        embedding = (
            "token_embd excluded: separate output head" if separate_head else "token_embd read as the output head"
        )
        detail = f"weights {weights:,} B of GGUF tensors ({embedding}) + {kv_detail}"
        return BytesPerToken(weights=weights, kv=kv, detail=detail)

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None


_PROBE = (
    "import sys\n"
    "from quantlab.llamacpp import build\n"
    "llama_cpp = build.llama_cpp(log=lambda _: None)\n"
    "llama_cpp.Llama(model_path=sys.argv[1], n_ctx=16, n_gpu_layers=0, verbose=False).close()\n"
)


@functools.cache
def _loadable(path: Path, size: int, mtime_ns: int) -> None:
    """Open the GGUF once in a child process first: llama.cpp GGML_ASSERTs on some damaged files (a vocabulary
    with a repeated token, a block count of 0) and abort()s whatever process opened them, which for the in-process
    runtime is quantlab itself, with no error line. A child's death becomes one line instead; once per file per
    process (`size`, `mtime_ns`: a file replaced since is probed again)."""
    import subprocess
    import sys

    from quantlab.llamacpp.reference import last_error_line

    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}  # an abort must not wait on a debugger attaching
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        said = last_error_line(proc.stderr) or f"exit code {proc.returncode}"
        raise BenchError(f"llama.cpp cannot load {path.name}: {said}")


class LlamaCppRuntime(Runtime):
    """llama.cpp's own kernels, compiled ahead of time, in the GGUF's own types, on one device."""

    name = "llamacpp"
    loads_from = "llama-cpp-python"
    capabilities = Capabilities(kv_cache_dtypes=KV_CACHE_DTYPES, dtypes=False)

    def supports(self, artifact: Artifact) -> bool:
        return super().supports(artifact) and artifact.manifest.gguf is not None

    def open(self, artifact: Artifact, request: LoadRequest) -> Session:
        path = artifact.path / artifact.manifest.gguf.file
        stat = path.stat()
        _loadable(path, stat.st_size, stat.st_mtime_ns)
        return LlamaCppSession(artifact, request.device, request.kv_cache_dtype)
