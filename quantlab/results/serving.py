"""The serving levers a sweep turns on beyond an engine's plain set-up, recorded with every served result.

The guide ranks levers besides quantization and batching: KV-cache quantization, prefix caching and
speculative decoding. Each is a switch of the engine (a flag of `llama-server`, vLLM), so a served result must
say which were on, or two rows that differ only by a lever would read as the same configuration. The label is
what the tables print in their "options" column; `plain` means none was turned on (the engine's defaults,
with quantlab's one standing change: prompt caching off, see `serve.engines`). The workload (a shared prompt
prefix, `LoadSweep.shared_prefix_tokens`) is not a lever and is recorded apart. Nor is the interpreter a
Python engine ran under (`EnginePython`): it changes which library versions serve, not what the server does.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantlab.results.schema import Schema

NGRAM = "ngram"  # --draft ngram: the draft-free variant, drafts looked up in the prompt and output so far


class ServingOptions(Schema):
    kv_cache_dtype: str | None = None  # None: the engine's default (llama.cpp: f16 K and V)
    prefix_cache: bool = False  # the engine reuses the KV of a prompt prefix it has already computed
    # speculative decoding: a draft model's tokens, or n-grams looked up in the text so far, verified by the model
    speculative: Literal["draft", "ngram"] | None = None
    draft: str | None = None  # the draft artifact as the tables name it
    # the draft artifact's digest: how a report finds the draft's own measurements (its cost per token)
    draft_digest: str | None = None
    draft_tokens: int | None = None  # tokens drafted per step at most; None: the engine's default
    draft_path: str | None = Field(None, exclude=True)  # where the engine loads the draft from (not recorded)
    tensor_parallel: int = Field(1, ge=1)  # GPUs one copy of the model is split over (vLLM --tensor-parallel-size)

    def label(self) -> str:
        parts = [f"tensor parallel {self.tensor_parallel}"] if self.tensor_parallel > 1 else []
        if self.speculative == "draft":
            parts.append(f"draft {self.draft}" + (f" k={self.draft_tokens}" if self.draft_tokens else ""))
        elif self.speculative == "ngram":
            parts.append("n-gram drafts" + (f" k={self.draft_tokens}" if self.draft_tokens else ""))
        if self.kv_cache_dtype:
            parts.append(f"KV {self.kv_cache_dtype}")
        if self.prefix_cache:
            parts.append("prefix cache on")
        return ", ".join(parts) or "plain"

    @property
    def plain(self) -> bool:
        return self.label() == "plain"


class EnginePython(Schema):
    """The Python interpreter that ran an engine which is a Python program quantlab may start under another
    interpreter than its own (vLLM, whose torch and compressed-tensors pins conflict with quantlab's, so it often
    lives in a virtualenv of its own). The engine's version beside it (`LoadSweep.engine_version`) is what that
    interpreter imported, not what quantlab's environment holds."""

    path: str  # as named (a virtualenv's bin/python is kept as given, not resolved to the base interpreter)
    own: bool  # quantlab's own interpreter (the default); False: another one, named by the setting
