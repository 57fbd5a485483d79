"""Speed and memory of one artifact, measured in a fresh process.

A fresh process is what makes peak RSS mean something on CPU: nothing else (no baseline model, no earlier
artifact, no allocator cache) is in it. The parent passes a JSON request file and reads a JSON answer file;
each line this process prints on stdout is a progress message.

Run as `python -m quantlab.bench.worker REQUEST.json ANSWER.json`.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def vm_hwm(pid: int | str = "self") -> int | None:
    """Linux's peak RSS of a process since its exec (VmHWM), in bytes; None where /proc does not say."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss() -> tuple[int, str]:
    """Peak RSS of this process since exec, and how it was read.

    Linux's VmHWM belongs to the address space that exec created, so it starts fresh in this process.
    `ru_maxrss` does not: it is inherited across fork+exec, so a child of a 3 GB parent reports ≥ 3 GB.
    """
    peak = vm_hwm()
    if peak is not None:
        return peak, "VmHWM"
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "ru_maxrss (may include the parent's peak)"


def main(request_path: str, answer_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    import numpy as np
    import torch
    import transformers  # noqa: F401  (imported before the reading: part of the runtime, not the model)

    from quantlab.artifact import load_artifact
    from quantlab.bench.speed import measure
    from quantlab.runtimes import select_runtime

    device = request["device"]
    cuda = device.startswith("cuda")
    if cuda:
        # The allocator's statistics exist only once CUDA is initialised ("Invalid device argument" otherwise);
        # an empty tensor does that without allocating anything that would count as the model's memory.
        torch.empty(0, device=device)
        torch.cuda.reset_peak_memory_stats(device)
    before = _rss()
    print("loading", flush=True)
    artifact = load_artifact(request["artifact"])
    session = select_runtime(artifact, request["runtime"]).load(artifact, device=device, dtype=request["dtype"])
    after = _rss()
    cuda_after = torch.cuda.memory_allocated(device) if cuda else None
    ids = np.asarray(request["ids"], dtype=np.int64)
    points = []
    for batch_size in request["batch_sizes"]:
        if session.max_batch_size is not None and batch_size > session.max_batch_size:
            print(f"batch {batch_size}: skipped (this runtime does not batch)", flush=True)
            continue
        print(f"batch {batch_size}", flush=True)
        points += measure(
            session,
            ids,
            batch_sizes=[batch_size],
            prompt_tokens=request["prompt_tokens"],
            new_tokens=request["new_tokens"],
            warmup=request["warmup"],
            repeats=request["repeats"],
        )
    per_token = (
        session.bytes_per_token(request["prompt_tokens"], request["new_tokens"])
        if any(p.batch_size == 1 for p in points)
        else None
    )
    peak, peak_source = peak_rss()
    answer = {
        "bytes_per_token": per_token.model_dump(mode="json") if per_token is not None else None,
        "runtime": session.describe().model_dump(mode="json"),
        "speed": [p.model_dump(mode="json") for p in points],
        "memory": {
            "before_load_bytes": before,
            "after_load_bytes": after,
            "peak_rss_bytes": peak,
            "peak_rss_source": peak_source,
        },
    }
    if cuda:
        answer["memory"]["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        answer["memory"]["cuda_peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
        answer["memory"]["cuda_after_load_bytes"] = cuda_after
    Path(answer_path).write_text(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
