"""Where the transformers runtime puts a model's weights: one device, or one model over several GPUs.

Over N GPUs it is accelerate's `device_map="balanced"` with the memory of exactly those GPUs: the layers are
split into N consecutive runs, one per GPU, and a forward pass goes through them in turn. That is a layer split
(one GPU computes at a time), not tensor parallelism (vLLM's `--tensor-parallel-size`, every GPU on every
layer): it answers "does it load and what does it cost across these GPUs", and its speed is a layer split's.
Nothing may land on the CPU or disk: accelerate would offload what does not fit and a measurement would then
time PCIe copies, so such a placement is refused instead.
"""

from __future__ import annotations

from quantlab.errors import BenchError


def gpu_index(device: str) -> int:
    """The index of a CUDA device named `cuda` or `cuda:N`."""
    return int(device.split(":", 1)[1]) if ":" in device else 0


def gpu_span(device: str, gpus: int) -> list[int]:
    first = gpu_index(device)
    return list(range(first, first + gpus))


def placement(device: str, gpus: int) -> dict:
    """`from_pretrained` keyword arguments that place the model on `device`, or over `gpus` GPUs from it on."""
    if gpus == 1:
        return {"device_map": device}
    import torch

    return {
        "device_map": "balanced",
        "max_memory": {i: torch.cuda.get_device_properties(i).total_memory for i in gpu_span(device, gpus)},
    }


def check_placed(model, device: str, gpus: int) -> str | None:
    """How the model was spread (None: on one device); refused if a module landed outside the GPUs asked for."""
    if gpus == 1:
        return None
    where = getattr(model, "hf_device_map", None) or {}
    allowed = set(gpu_span(device, gpus))
    outside = sorted({str(d) for d in where.values() if _index(d) not in allowed})
    if outside:
        raise BenchError(
            f"the model does not fit on GPUs {sorted(allowed)}: accelerate placed modules on {', '.join(outside)}"
        )
    used = sorted({_index(d) for d in where.values()})
    return (
        f"layers over cuda:{', cuda:'.join(map(str, used))} (accelerate device_map 'balanced': a layer split, "
        "one GPU computes at a time, not tensor parallelism)"
    )


def _index(where) -> int | None:
    """accelerate names a GPU by its index (int, or 'cuda:N'); anything else (cpu, disk) is None."""
    if isinstance(where, int):
        return where
    text = str(where)
    return gpu_index(text) if text.startswith("cuda") else None
