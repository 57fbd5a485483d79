"""Serving engines: which OpenAI-compatible server serves an artifact, and how to drive it fairly.

Each engine is a real server started as its own process (`process.ServerProcess`), never an in-process
imitation. What differs between engines is captured here, in one place per engine:
- the command line (loopback only, threads, context);
- whether it batches concurrent requests, said in words the report prints — a server that runs one request
  at a time must not look like one that batches;
- the request fields that force exactly `max_tokens` output tokens, so every engine generates the same
  amount of work (an early EOS would make a slow engine look fast);
- how readiness is probed;
- which serving levers it has (`serve.options`: KV-cache types, prefix caching), refused before any server
  starts when it lacks one, and what it reports of them in its own log.
vLLM, which runs under an interpreter of its own choosing, has its own module (`serve.vllm`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import sys

from quantlab.artifact import Artifact
from quantlab.errors import BackendUnavailableError, ServeError
from quantlab.results.kernels import KvAllocation
from quantlab.results.serving import ServingOptions
from quantlab.serve.base import LOOPBACK, Engine, LaunchPlan, loopback_plan
from quantlab.serve.vllm import VllmServer

__all__ = ["ENGINES", "LOOPBACK", "Engine", "LaunchPlan", "VllmServer", "select_engine"]

CPU_CB_BLOCK = 32  # tokens per paged-KV block of `transformers serve` on the CPU
CPU_CB_BATCH_TOKENS = 2048  # tokens per forward step (longer prefills are chunked)


class LlamaCppServer(Engine):
    """llama.cpp's own `llama-server`, built by quantlab from the tree the `llamacpp` runtime comes from.

    One slot per concurrent request of the highest level (`-np`), each with the workload's context (`-c` is
    the total: slots × per-slot context), continuous batching on (its default, stated). Prompt caching is off
    (`--no-cache-prompt`, `--cache-ram 0`): every prompt is distinct here, and reusing a slot's KV cache is a
    lever measured on its own, not a hidden difference between engines: `--prefix-cache` turns it on with the
    engine's defaults (`--cache-prompt`, its host-memory prompt cache). `--kv-cache-dtype` sets K and V alike and
    turns flash attention on, which a quantized V requires, for every type, f16 included, so a comparison of
    types differs in the cache alone."""

    name = "llamacpp"
    distribution = "llama_cpp_python"  # the version whose llama.cpp tree the server is built from
    module = "llama_cpp"
    install_hint = "pip install 'quantlab[gguf]'"
    batches_requests = True
    same_library_runtime = "llamacpp"
    batching_note = (
        "continuous batching (llama.cpp's llama-server: one slot per concurrent request, the running slots' "
        "tokens decoded together in one batch every step; prompt caching off unless the options say so)"
    )
    # llama.cpp's kv_cache_types (common/arg.cpp), as ggml names them
    kv_cache_dtypes = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
    prefix_caching = True
    speculation = ("draft", "ngram")

    def missing(self) -> str | None:
        if importlib.util.find_spec("llama_cpp") is None:
            return (
                f"engine 'llamacpp' needs llama-cpp-python, whose llama.cpp tree it is built from ({self.install_hint})"
            )
        return None

    def version(self) -> str:
        from quantlab.llamacpp import build

        found = build.find()
        return f"{super().version()} / {found.label}" if found else super().version()

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
        from quantlab.llamacpp import build

        gguf = artifact.manifest.gguf
        if gguf is None:
            raise ServeError(f"{artifact.path} has no GGUF record in its manifest")
        tools = build.ensure()
        if device != "cpu" and tools.backend != "cuda":
            raise ServeError(f"device {device!r} needs a CUDA build of llama.cpp; this one is {tools.label}")
        alias = artifact.path.name
        flags = [
            "--alias", alias,
            "--parallel", str(max_concurrency),
            "--ctx-size", str(max_concurrency * ctx),
            "--threads", str(threads),
            "--threads-batch", str(threads),
            "--n-gpu-layers", "0" if device == "cpu" else "999",
            "--cont-batching",
            *(["--cache-prompt"] if options.prefix_cache else ["--no-cache-prompt", "--cache-ram", "0"]),
            "--no-webui",
            "--log-verbosity", "4",  # the level at which libllama logs the KV cache it allocates (llamacpp.kv)
        ]  # fmt: skip
        if options.kv_cache_dtype:
            flags += ["--cache-type-k", options.kv_cache_dtype, "--cache-type-v", options.kv_cache_dtype]
            flags += ["--flash-attn", "on"]
        program = [str(tools.tool("llama-server")), "--model", str(artifact.path / gguf.file)]
        if options.speculative == "draft":
            # the draft on the same device and threads, its context as the target's; greedy drafting (p_min 0)
            program += ["--spec-draft-model", str(options.draft_path)]
            flags += ["--spec-type", "draft-simple", "--spec-draft-n-min", "0"]
            flags += ["--spec-draft-ngl", "0" if device == "cpu" else "999"]
            if options.draft_tokens:
                flags += ["--spec-draft-n-max", str(options.draft_tokens)]
        elif options.speculative == "ngram":
            # prompt lookup: the last 3 tokens looked up in the prompt and output so far (llama.cpp's default, 12,
            # almost never recurs in prose; 3 is prompt-lookup decoding's usual length), the m that followed drafted
            flags += ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "3"]
            if options.draft_tokens:
                flags += ["--spec-ngram-simple-size-m", str(options.draft_tokens)]
        return loopback_plan(program, flags, port=port, threads=threads, model=alias)

    def fixed_length(self, max_tokens: int) -> dict:
        # ignore_eos masks EOS until n_predict (= max_tokens); cache_prompt false again per request.
        return {"ignore_eos": True, "cache_prompt": False}

    def request_fields(self, max_tokens: int, options: ServingOptions) -> dict:
        return {**self.fixed_length(max_tokens), "cache_prompt": options.prefix_cache}

    def kv_allocation(self, log: str) -> KvAllocation | None:
        from quantlab.llamacpp.kv import kv_allocation

        return kv_allocation(log, "llama-server's log")


class TransformersServer(Engine):
    name = "transformers"
    distribution = "transformers"
    module = "transformers.cli.serve"
    install_hint = "pip install 'transformers[serving]' (quantlab extra 'serve')"
    batches_requests = True
    same_library_runtime = "transformers"
    batching_note = (
        "continuous batching (`transformers serve --continuous-batching`: paged KV cache, requests "
        "join and leave the running batch at every step; on the CPU the cache is sized to 2× the largest "
        "concurrency × context)"
    )

    def missing(self) -> str | None:
        from transformers.utils.import_utils import is_serve_available

        if not is_serve_available():
            return f"engine 'transformers' needs its serving dependencies ({self.install_hint})"
        return None

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
        flags = ["--continuous-batching", "--device", device, "--dtype", "auto", "--log-level", "warning"]
        if device == "cpu":
            # On a GPU, cache and batch size follow free device memory (like vLLM). On the CPU the same rule
            # sized the per-step token budget from host RAM: the server's peak RSS was 10.2 GB for a 135M
            # model (measured), a reservation rather than a need. Size both for the workload: the cache for 2×
            # the largest concurrency × context, steps of 2048 tokens (1.2 GB peak, measured).
            blocks = 2 * math.ceil(max_concurrency * ctx / CPU_CB_BLOCK)
            flags += [
                "--cb-block-size",
                str(CPU_CB_BLOCK),
                "--cb-num-blocks",
                str(blocks),
                "--cb-max-batch-tokens",
                str(CPU_CB_BATCH_TOKENS),
            ]
        program = [sys.executable, "-c", "from transformers.cli.transformers import main; main()", "serve", model]
        return loopback_plan(program, flags, port=port, threads=threads, model=model)

    def fixed_length(self, max_tokens: int) -> dict:
        # eos_token_id -1 disables EOS in the continuous-batching scheduler; greedy like every other engine.
        return {"generation_config": json.dumps({"max_new_tokens": max_tokens, "eos_token_id": -1, "do_sample": False})}


ENGINES: dict[str, Engine] = {engine.name: engine for engine in (LlamaCppServer(), TransformersServer(), VllmServer())}


def select_engine(
    artifact: Artifact, name: str | None = None, *, device: str = "cpu", gpus: int = 1, vllm_python: str | None = None
) -> Engine:
    """The named engine, or the first installed one that serves this artifact on this device (over `gpus` GPUs:
    one that splits a model). `vllm_python` is the interpreter vLLM is probed and run with (`serve.vllm`)."""
    engines = {**ENGINES, "vllm": VllmServer(vllm_python)} if vllm_python else ENGINES
    if name is not None:
        engine = engines.get(name)
        if engine is None:
            raise ServeError(f"unknown engine {name!r}; available: {', '.join(engines)}")
        if not engine.supports(artifact):
            raise ServeError(
                f"engine {name!r} cannot serve {artifact.path} ({artifact.manifest.format}); "
                f"engines: {', '.join(e.name for e in engines.values() if e.supports(artifact))}"
            )
        reason = engine.missing()
        if reason:
            raise BackendUnavailableError(reason)
        return engine
    candidates = [
        e for e in engines.values() if e.supports(artifact) and e.serves_on(device) and (gpus == 1 or e.tensor_parallel)
    ]
    reasons = {}
    for engine in candidates:
        reasons[engine.name] = engine.missing()
        if reasons[engine.name] is None:
            return engine
    if not candidates:
        span = f" over {gpus} GPUs (vLLM splits a model; the others serve on one device)" if gpus > 1 else ""
        raise ServeError(f"no engine serves {artifact.path} ({artifact.manifest.format}){span}")
    raise BackendUnavailableError(reasons[candidates[0].name])
