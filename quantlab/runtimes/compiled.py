"""The transformers runtime's decode loop, eager or compiled: prefill, then one token per step, greedy.

Eager: a `DynamicCache` and one Python call of the model per token, as before. On a GPU that loop measures
Python and kernel launches more than the hardware. Compiled: the decode step (one token for every sequence,
greedy pick included) is one `torch.compile`d graph over a preallocated `StaticCache`, with CUDA graphs on a
GPU (mode "reduce-overhead"), which is what transformers' own `generate(cache_implementation="static")` does.
Prefill stays eager in both: it is one large forward whose shape changes with every prompt length.

Compilation happens in untimed warm-up generations, once per (batch, cache length): the first of them compiles,
the second replays, and the difference is recorded as compile seconds. The same prompts are then generated
eagerly twice, over the same static cache (what compilation alone may change) and over the eager loop's
`DynamicCache`, and the greedy sequences compared with both: every compiled record says whether its output is
the eager one. In bf16 the static cache itself can flip a near-tie (attention over the padded cache length
rounds differently on a CPU: 2 of 8 sequences at batch 8 on SmolLM2, with or without compilation); in fp32 it
does not.

`fullgraph=True` makes a graph break an error instead of a silent split into pieces; the loop then falls back to
eager and records why, so a speed figure never claims a compiled loop it did not run. Quality logits never come
from here (one forward, eager).
"""

from __future__ import annotations

import contextlib
import time

from quantlab.errors import exception_line
from quantlab.results import DecodePath, OpShare

TOP_OPS = 6


def compile_mode(device: str) -> str:
    return "reduce-overhead" if device.startswith("cuda") else "default"


class DecodeLoop:
    """Greedy generation with prefill and decode timed apart; `compiled` chooses the loop (see the module)."""

    def __init__(self, model, device: str, *, compiled: bool) -> None:
        self.model = model
        self.device = device
        # Every GPU holding weights: a model placed over several (--tensor-parallel) ends its step on the last,
        # and a timing that synchronised only the current device would stop before that GPU's kernels did.
        self._gpus = sorted({p.device for p in model.parameters() if p.device.type == "cuda"}, key=str)
        self.compiled = compiled
        self.compile_s = 0.0
        self.used = False
        self.checked = self.identical = self.identical_dynamic = 0
        self.divergence_margin: float | None = None
        self.profile: list[OpShare] = []
        self.profile_detail: str | None = None
        self.fallback: str | None = None
        self._caches: dict[tuple[int, int], object] = {}
        self._step = None
        if compiled:
            import torch

            self._step = torch.compile(self._decode_step, mode=compile_mode(device), fullgraph=True, dynamic=False)

    def describe(self) -> DecodePath:
        profiled = {"profile": self.profile, "profile_detail": self.profile_detail}
        if not self.compiled:  # never asked, or fell back (then `fallback` says why)
            failed = " (compiled loop failed)" if self.fallback else ""
            detail = f"DynamicCache, one eager forward per token{failed}"
            return DecodePath(mode="eager", detail=detail, fallback=self.fallback, **profiled)
        import torch

        graphs = ", CUDA graphs" if self.device.startswith("cuda") else ""
        return DecodePath(
            mode="compiled",
            detail=f"StaticCache + torch {torch.__version__} compile (inductor, mode {compile_mode(self.device)!r}, "
            f"fullgraph{graphs}) of the one-token decode step; prefill eager",
            compile_s=round(self.compile_s, 2),
            eager_check_sequences=self.checked,
            eager_check_identical=self.identical,
            eager_check_identical_dynamic=self.identical_dynamic,
            eager_check_divergence_margin=self.divergence_margin,
            **profiled,
        )

    def generate(self, batch, new_tokens: int, around_decode=contextlib.nullcontext):
        """(tokens [batch, new_tokens], prefill seconds, decode seconds) for a [batch, prompt] id tensor;
        the decode steps (not the prefill) run inside `around_decode()`."""
        self.used = True
        if not self.compiled:
            return self._eager(batch, new_tokens, around_decode)
        key = (batch.shape[0], batch.shape[1] + new_tokens)
        if key not in self._caches:
            self._warm_up(batch, new_tokens)
            if not self.compiled:
                return self._eager(batch, new_tokens, around_decode)
        return self._static(batch, new_tokens, self._caches[key], around_decode)

    def profile_decode(self, batch, new_tokens: int) -> None:
        """Where the decode time goes: one more (warm) generation with the decode steps under torch.profiler,
        its top ops by self time kept for the record. Run after the timed generations, never during them."""
        from torch.profiler import ProfilerActivity, profile

        cuda = self.device.startswith("cuda")
        activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
        holder = {}

        @contextlib.contextmanager
        def profiled():
            with profile(activities=activities) as prof:
                yield
            holder["prof"] = prof

        self.generate(batch, new_tokens, profiled)
        events = holder["prof"].key_averages()
        attr = "self_device_time_total" if cuda else "self_cpu_time_total"
        total = sum(getattr(e, attr) for e in events) or 1
        steps = new_tokens - 1
        top = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:TOP_OPS]
        self.profile = [
            OpShare(op=e.key[:120], share=round(getattr(e, attr) / total, 4), calls_per_step=round(e.count / steps, 2))
            for e in top
        ]
        where = "GPU kernels by self CUDA time" if cuda else "ops by self CPU time"
        self.profile_detail = f"{where}, {steps} decode steps at batch {batch.shape[0]} (prefill excluded)"

    def _warm_up(self, batch, new_tokens: int) -> None:
        import torch
        from transformers import StaticCache

        cache = StaticCache(config=self.model.config, max_cache_len=batch.shape[1] + new_tokens)
        try:
            start = time.perf_counter()
            self._static(batch, new_tokens, cache)
            first = time.perf_counter() - start
            start = time.perf_counter()
            tokens, _, _ = self._static(batch, new_tokens, cache)
            self.compile_s += max(first - (time.perf_counter() - start), 0.0)
        except Exception as exc:  # a graph break under fullgraph, no C++ compiler, an op inductor lacks
            self.fallback = f"torch.compile (fullgraph) failed: {exception_line(exc)}"
            self.compiled = False
            return
        self._caches[(batch.shape[0], batch.shape[1] + new_tokens)] = cache
        same_cache, _, _ = self._static(batch, new_tokens, cache, compiled=False)
        margins: list = []
        dynamic, _, _ = self._eager(batch, new_tokens, margins=margins)
        self.checked += batch.shape[0]
        self.identical += int((same_cache == tokens).all(dim=1).sum())
        self.identical_dynamic += int((dynamic == tokens).all(dim=1).sum())
        gaps = torch.stack(margins, dim=1)  # [batch, new_tokens]
        for row in range(batch.shape[0]):
            differs = (dynamic[row] != tokens[row]).nonzero()
            if len(differs):  # the eager loop's top-2 gap where the two first part
                self.divergence_margin = max(self.divergence_margin or 0.0, float(gaps[row, int(differs[0])]))

    def _decode_step(self, token, position, cache):
        logits = self.model(input_ids=token, position_ids=position, past_key_values=cache, use_cache=True).logits
        return logits[:, -1, :].argmax(-1, keepdim=True)

    def _static(self, batch, new_tokens: int, cache, around_decode=contextlib.nullcontext, *, compiled=True):
        import torch

        compiled_step = self._step if compiled else self._decode_step

        def prefill():
            out = self.model(input_ids=batch, past_key_values=cache, use_cache=True, logits_to_keep=1)
            return out.logits[:, -1, :].argmax(-1, keepdim=True)

        def step(i: int, token):
            position = torch.full_like(token, batch.shape[1] + i)
            # CUDA graphs reuse their output buffer on the next replay: keep a copy
            return compiled_step(token, position, cache).clone()

        return self._timed(prefill, step, new_tokens, around_decode, setup=cache.reset)

    def _eager(self, batch, new_tokens: int, around_decode=contextlib.nullcontext, margins: list | None = None):
        """`margins`, if given, receives each step's top-2 logit gap [batch] (for the greedy check, untimed)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)

        def pick(logits):
            if margins is not None:
                top2 = logits.float().topk(2, dim=-1).values
                margins.append(top2[:, 0] - top2[:, 1])
            return logits.argmax(-1, keepdim=True)

        def prefill():
            # logits_to_keep=1: only the last position's logits, as generate() and serving engines do.
            out = self.model(input_ids=batch, past_key_values=cache, use_cache=True, logits_to_keep=1)
            return pick(out.logits[:, -1, :])

        def step(_: int, token):
            return pick(self.model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1, :])

        return self._timed(prefill, step, new_tokens, around_decode)

    def _sync(self) -> None:
        import torch

        for gpu in self._gpus:
            torch.cuda.synchronize(gpu)

    def _timed(self, prefill, step, new_tokens: int, around_decode, setup=lambda: None):
        """What both loops share: `setup()` untimed, `prefill()` timed to the first token, then `step(i, token)`
        for each next one, the decode timed inside `around_decode()`; (tokens, prefill s, decode s)."""
        import torch

        with torch.inference_mode():
            setup()
            self._sync()
            start = time.perf_counter()
            token = prefill()
            self._sync()
            prefill_s = time.perf_counter() - start
            tokens = [token]
            with around_decode():
                start = time.perf_counter()
                for i in range(new_tokens - 1):
                    token = step(i, token)
                    tokens.append(token)
                self._sync()
                decode_s = time.perf_counter() - start
        return torch.cat(tokens, dim=1), prefill_s, decode_s
