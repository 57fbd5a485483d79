"""Workarounds for library behaviour (most of it on CPU-only hosts), in one place.

Each one is narrow (applies only where the problem occurs, on the versions where it was seen), restores
what it changed, and says when it can go.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _has_accelerator() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)
    return bool(accelerator and accelerator.is_available()) or torch.cuda.is_available()


@contextmanager
def llmcompressor_on_cpu() -> Iterator[None]:
    """llm-compressor 0.14's AWQ pins its cached activations (`IntermediatesCache.pin_memory`) before the
    grid search; without an accelerator torch refuses ("Cannot access accelerator device"). Pinning only
    speeds host→GPU copies, so on a CPU-only host it is skipped. Remove when llm-compressor checks for an
    accelerator itself (seen on 0.14.0.1)."""
    version = _version("llmcompressor") or ""
    if _has_accelerator() or not version.startswith("0.14."):
        yield
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables the user has not set, for the duration of the block."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextmanager
def gptqmodel_quietly() -> Iterator[None]:
    """Run GPTQModel 7.6 on a small CPU host, quietly.

    - GPTQMODEL_CPU_WORKERS: its CPU worker pool fails on 2-core hosts ("Virtual pool ... requests 2
      workers") unless told the core count; set only on ≤ 2 cores. Remove when GPTQModel sizes the pool
      from the host.
    - GPTQMODEL_DISABLE_PACK_EXT: skips a ~30 s JIT C++ build of its packer on first use; the pure-torch
      packer writes byte-identical weights.
    - CI=1: LogBar (its logger) draws no progress bars. The banner it prints on import is swallowed, and
      the root logger, which its dependency tokenicer sets to INFO, is put back.
    """
    import logging

    env = {"GPTQMODEL_DISABLE_PACK_EXT": "1", "CI": "1"}
    if (os.cpu_count() or 1) <= 2:
        env["GPTQMODEL_CPU_WORKERS"] = str(os.cpu_count() or 1)
    root = logging.getLogger()
    root_level = root.level
    with _env(env):
        with redirect_stdout(io.StringIO()):
            import gptqmodel  # noqa: F401
        root.setLevel(root_level)
        logging.getLogger("logbar").setLevel(logging.ERROR)  # WARNs about calibration size go to stdout
        logging.getLogger("tokenicer").setLevel(logging.WARNING)
        logging.getLogger("torchao").setLevel(logging.ERROR)
        yield


def gptqmodel_log_dir(path) -> None:
    """GPTQModel 7.6 writes per-run logs to a hard-coded relative `logs/` in the working directory; point
    it elsewhere (a private module attribute, hence here). Remove when it becomes configurable."""
    from gptqmodel.looper import loop_processor

    loop_processor._PROJECT_LOG_DIR = path


@contextmanager
def autoawq_quietly() -> Iterator[None]:
    """AutoAWQ 0.2.9 prints a deprecation banner on import and resets the DeprecationWarning filter to
    'default' globally; import it with warnings and stderr contained."""
    import warnings

    with warnings.catch_warnings(), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        import awq  # noqa: F401
    with _env({"TQDM_DISABLE": "1"}):
        yield


@contextmanager
def llmcompressor_gptq_lean() -> Iterator[None]:
    """llm-compressor 0.14's GPTQ makes two more copies of each module's Hessian ([in, in] float32) at two
    points: `prepare_batch` divides it by the sample count into a new tensor and stacks that into a third, and
    `apply_activation_ordering` gathers columns then rows into two new tensors. For a Llama-3.2-1B down
    projection (in = 8192) that is 2 × 268 MB above what the pipeline holds, and it set a calibrated
    quantize's peak. These replacements move the same values (bit-identical results) with at most one extra
    Hessian alive, no more than the in-place Cholesky factorization that follows takes for its own temporary.
    Applies on any device (GPU memory has the same spikes). Remove when llm-compressor normalizes and permutes
    in place (seen on 0.14.0.1)."""
    version = _version("llmcompressor") or ""
    if not version.startswith("0.14."):
        yield
        return
    from llmcompressor.modifiers.gptq import base, gptq_quantize, helpers

    originals = (base.prepare_batch, gptq_quantize.apply_activation_ordering)
    base.prepare_batch = _lean_prepare_batch
    gptq_quantize.apply_activation_ordering = _lean_activation_ordering
    try:
        yield
    finally:
        base.prepare_batch, gptq_quantize.apply_activation_ordering = originals
        assert helpers.prepare_batch is originals[0]  # the library's own module is never changed


def _lean_prepare_batch(batch, batch_qparams, hessians_by_module, num_samples_by_module):
    """llm-compressor 0.14's `gptq.helpers.prepare_batch`, normalizing each Hessian in place; a batch of one
    module takes its Hessian as a view instead of a stacked copy."""
    import torch
    from llmcompressor.modifiers.gptq.helpers import GPTQ_PRECISION

    hessian = hessians_by_module.pop(batch[0])
    hessian.div_(num_samples_by_module.pop(batch[0]).to(device=hessian.device))
    if len(batch) == 1:
        hessians = hessian.unsqueeze(0)
    else:
        hessians = torch.empty((len(batch), *hessian.shape), dtype=hessian.dtype, device=hessian.device)
        hessians[0] = hessian
        del hessian  # the popped Hessians go one by one, so one of them is alive beside the stack
        for index, module in enumerate(batch[1:], start=1):
            hessian = hessians_by_module.pop(module)
            torch.div(hessian, num_samples_by_module.pop(module).to(device=hessian.device), out=hessians[index])
            del hessian
    weights = torch.empty((len(batch), *batch[0].weight.shape), device=batch[0].weight.device, dtype=GPTQ_PRECISION)
    torch.stack([module.weight for module in batch], out=weights)
    scales = torch.stack([qparam["scale"] for qparam in batch_qparams])
    zero_points = torch.stack([qparam["zero_point"] for qparam in batch_qparams])
    global_scales = (
        torch.stack([qparam["global_scale"].reshape(-1)[0] for qparam in batch_qparams])
        if batch_qparams[0]["global_scale"] is not None
        else None
    )
    return weights, hessians, scales, zero_points, global_scales


_PERMUTE_ROWS = 512  # rows of the Hessian gathered per step: a few MB of temporaries beside the one copy


def _lean_activation_ordering(weights, hessians, actorder):
    """llm-compressor 0.14's `gptq.helpers.apply_activation_ordering`, gathering the permuted Hessian into one
    new tensor a block of rows at a time (rows and columns in one step) instead of two whole copies."""
    import torch
    from compressed_tensors.quantization.quant_args import ActivationOrdering

    if not actorder:
        return weights, hessians, None
    if actorder not in (ActivationOrdering.WEIGHT, ActivationOrdering.STATIC):
        raise ValueError(f"Invalid activation ordering {actorder}. Only 'weight' and 'static' are supported for GPTQ.")
    num_rows, num_columns = weights.shape[-2:]
    perm = torch.argsort(torch.diagonal(hessians, dim1=-2, dim2=-1), dim=-1, descending=True)
    hessian_perm = perm.to(device=hessians.device)
    weight_perm = perm.to(device=weights.device)
    columns = hessian_perm.unsqueeze(-2)
    permuted = torch.empty_like(hessians)
    for start in range(0, num_columns, _PERMUTE_ROWS):
        rows = hessian_perm[:, start : start + _PERMUTE_ROWS]
        picked = torch.gather(hessians, -2, rows.unsqueeze(-1).expand(-1, -1, num_columns))
        permuted[:, start : start + rows.shape[1]] = torch.gather(picked, -1, columns.expand(-1, rows.shape[1], -1))
        del picked
    hessians.copy_(permuted)
    del permuted
    weights.copy_(torch.gather(weights, -1, weight_perm.unsqueeze(-2).expand(-1, num_rows, -1)))
    return weights, hessians, weight_perm
