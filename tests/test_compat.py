"""The CPU workarounds in `quantlab.compat` are still needed — when one of these tests fails, the library
has fixed the problem and the workaround (with this test) can go."""

from __future__ import annotations

import pytest
import torch

from quantlab import compat


@pytest.mark.skipif(torch.cuda.is_available(), reason="the problem only exists without an accelerator")
def test_llmcompressor_awq_still_pins_memory_without_an_accelerator():
    from llmcompressor.pipelines.cache import IntermediatesCache

    cache = IntermediatesCache.from_dataloader([{"x": torch.ones(2, 2)}])
    with pytest.raises(RuntimeError, match="accelerator"):
        cache.pin_memory(0)
    with compat.llmcompressor_on_cpu():
        cache.pin_memory(0)  # made a no-op inside the block
    with pytest.raises(RuntimeError, match="accelerator"):
        cache.pin_memory(0)  # restored after the block
