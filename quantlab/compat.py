"""Workarounds for library behaviour on CPU-only hosts, in one place.

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
