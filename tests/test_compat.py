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


def _modules_and_stats(count: int, rows: int, columns: int, seed: int):
    import torch

    torch.manual_seed(seed)
    modules = [torch.nn.Linear(columns, rows, bias=False) for _ in range(count)]
    hessians, samples, qparams = {}, {}, []
    for module in modules:
        x = torch.randn(4 * columns, columns)
        hessians[module] = x.T @ x
        samples[module] = torch.tensor(4 * columns)
        qparams.append({"scale": torch.rand(rows, columns // 128), "zero_point": torch.zeros(rows, columns // 128)})
        qparams[-1]["global_scale"] = None
    return modules, hessians, samples, qparams


@pytest.mark.parametrize("count", [1, 2])
def test_lean_gptq_batch_is_the_librarys(count):
    """The same normalized, stacked Hessians, weights and qparams as llm-compressor's own `prepare_batch`,
    which leaves the per-module dictionaries empty the same way."""
    import torch
    from llmcompressor.modifiers.gptq.helpers import prepare_batch

    modules, hessians, samples, qparams = _modules_and_stats(count, 256, 512, seed=count)
    ours_h, ours_s = {m: h.clone() for m, h in hessians.items()}, dict(samples)
    with torch.no_grad():  # as llm-compressor calls it
        theirs = prepare_batch(modules, qparams, {m: h.clone() for m, h in hessians.items()}, dict(samples))
        ours = compat._lean_prepare_batch(modules, qparams, ours_h, ours_s)
    assert ours_h == {} and ours_s == {}
    for mine, library in zip(ours, theirs, strict=True):
        assert (mine is None and library is None) or torch.equal(mine, library)


@pytest.mark.parametrize("actorder", [None, "static", "weight"])
def test_lean_activation_ordering_is_the_librarys(actorder):
    """Bit-identical permuted weights and Hessians, for a width that is not a whole number of gathered row
    blocks, and a batch of two."""
    import torch
    from compressed_tensors.quantization.quant_args import ActivationOrdering
    from llmcompressor.modifiers.gptq.helpers import apply_activation_ordering

    order = ActivationOrdering(actorder) if actorder else None
    torch.manual_seed(0)
    columns = compat._PERMUTE_ROWS + 256
    weights = torch.randn(2, 256, columns)
    x = torch.randn(2, 2 * columns, columns)
    hessians = x.transpose(1, 2) @ x
    theirs = apply_activation_ordering(weights.clone(), hessians.clone(), order)
    ours = compat._lean_activation_ordering(weights.clone(), hessians.clone(), order)
    for mine, library in zip(ours, theirs, strict=True):
        assert (mine is None and library is None) or torch.equal(mine, library)
    if order:
        assert not torch.equal(ours[1], hessians)  # it did permute


def test_lean_gptq_patches_only_inside_and_restores():
    from llmcompressor.modifiers.gptq import base, gptq_quantize, helpers

    with compat.llmcompressor_gptq_lean():
        assert base.prepare_batch is compat._lean_prepare_batch
        assert gptq_quantize.apply_activation_ordering is compat._lean_activation_ordering
    assert base.prepare_batch is helpers.prepare_batch
    assert gptq_quantize.apply_activation_ordering is helpers.apply_activation_ordering
