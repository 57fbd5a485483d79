"""Library versions and host facts that every manifest and result carries.

Numbers from different machines or library versions are not comparable; recording both with every figure
is what lets a reader tell.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket

from quantlab.results.provenance import HostInfo

TRACKED_LIBRARIES = (
    "quantlab",
    "torch",
    "transformers",
    "safetensors",
    "llmcompressor",
    "compressed-tensors",
    "gptqmodel",
    "optimum",
    "autoawq",
    "auto-round",
    "accelerate",
    "datasets",
    "tokenizers",
    "numpy",
    "llama-cpp-python",
    "bitsandbytes",
)


def library_versions(names: tuple[str, ...] = TRACKED_LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries that shape a number; absent ones are left out."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def quantlab_version() -> str:
    try:
        return importlib.metadata.version("quantlab")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+unknown"


def is_installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


FP8_MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada, Hopper, Blackwell


def cuda_capability(device: str) -> tuple[int, int]:
    import torch

    return tuple(torch.cuda.get_device_capability(torch.device(device)))


def fp8_hardware(device: str) -> bool:
    """FP8 tensor-core matmuls: CUDA compute capability ≥ 8.9 (Ada, Hopper, Blackwell)."""
    return device.startswith("cuda") and cuda_capability(device) >= FP8_MIN_CAPABILITY


def cuda_device_names() -> list[str]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def host_info() -> HostInfo:
    import psutil

    return HostInfo(
        hostname=socket.gethostname(),
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        cpu=_cpu_name(),
        cpu_count=os.cpu_count() or 1,
        memory_bytes=psutil.virtual_memory().total,
        gpus=cuda_device_names(),
    )
