"""The llamacpp runtime's quality pass, decoded through llama.cpp's batch API, against llama-cpp-python's own
all-positions evaluation (`Llama(logits_all=True)`, `eval`, `scores`) on the tiny GGUF."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantlab.llamacpp import BATCH_TOKENS, build
from quantlab.runtimes import LoadRequest, select_runtime

# q8 is the tiny random Llama converted with the real default model's tokenizer.
pytestmark = pytest.mark.slow


def _scores(session, ids: np.ndarray) -> np.ndarray:
    """What the runtime returned before it used the batch API: the same context parameters, every position's
    logits mirrored by llama-cpp-python."""
    llm = build.llama_cpp().Llama(
        model_path=str(session.path),
        n_ctx=max(len(ids), BATCH_TOKENS),
        n_batch=BATCH_TOKENS,
        n_ubatch=BATCH_TOKENS,
        logits_all=True,
        n_threads=session.threads,
        n_threads_batch=session.threads,
        n_gpu_layers=0,
        seed=0,
        verbose=False,
    )
    try:
        llm.eval([int(t) for t in ids])
        return np.array(llm.scores[: len(ids)], dtype=np.float32, copy=True)
    finally:
        llm.close()


def test_quality_logits_equal_llama_cpp_pythons_and_share_the_speed_context(q8):
    session = select_runtime(q8).load_as(q8, LoadRequest("cpu"))
    try:
        vocab = session._llm.n_vocab()
        # Longer than one batch, so the second chunk attends over the first's cache at later positions.
        ids = np.random.default_rng(0).integers(0, vocab, size=BATCH_TOKENS + 88)
        speed_context = session._llm
        first = session.logits(ids)
        assert first.dtype == torch.float32 and tuple(first.shape) == (len(ids), vocab)
        assert np.array_equal(first.numpy(), _scores(session, ids))

        session.timed_generate(ids[None, :32], 4)
        again = session.logits(ids)
        assert torch.equal(again, first)  # the speed pass left nothing in the cache the quality pass sees
        assert session._llm is speed_context  # one context served both passes
    finally:
        session.close()
