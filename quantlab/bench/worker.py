"""Speed and memory of one artifact, measured in a fresh process.

A fresh process is what makes peak RSS mean something on CPU: nothing else (no baseline model, no earlier
artifact, no allocator cache) is in it. The parent (`measure_in_worker`) passes a JSON request file and reads a
JSON answer file; the lines this process prints on stdout with `PROGRESS` in front are progress messages, and
anything else a library prints there is not relayed (it would reach the user's terminal as a step).

Run as `python -m quantlab.bench.worker REQUEST.json ANSWER.json`.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from quantlab.errors import BenchError

PROGRESS = "quantlab-progress: "


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


def _say(message: str) -> None:
    print(PROGRESS + message, flush=True)


def measure_in_worker(request: dict, what: str, progress: Callable[[str], None]) -> dict:
    """Run the worker on `request` in a fresh process and return its answer; `what` names it in errors. The
    worker dies with this process, so a killed bench (or a cancelled Ray task) leaves nothing measuring."""
    from quantlab.serve.process import die_with_parent

    with tempfile.TemporaryDirectory(prefix="quantlab-worker-") as tmp:
        req, ans, err = Path(tmp) / "request.json", Path(tmp) / "answer.json", Path(tmp) / "stderr.txt"
        req.write_text(json.dumps(request))
        # stderr goes to a file: a pipe that is read only after stdout closes deadlocks once the worker's
        # library chatter (progress bars, profiler lines) fills the pipe buffer.
        with open(err, "w") as err_fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "quantlab.bench.worker", str(req), str(ans)],
                stdout=subprocess.PIPE,
                stderr=err_fh,
                text=True,
                env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"},
                preexec_fn=die_with_parent,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(PROGRESS):
                    progress(line[len(PROGRESS) :].strip())
            proc.wait()
        if proc.returncode != 0 or not ans.is_file():
            lines = [ln for ln in err.read_text(errors="replace").strip().splitlines() if ln.strip()]
            raise BenchError(f"{what} failed: {lines[-1] if lines else f'exit code {proc.returncode}'}")
        return json.loads(ans.read_text())


def _speed_points(session, request: dict) -> list:
    import numpy as np

    from quantlab.bench.speed import measure, prompts_from

    ids = np.asarray(request["ids"], dtype=np.int64)
    points = []
    for batch_size in request["batch_sizes"]:
        if session.max_batch_size is not None and batch_size > session.max_batch_size:
            _say(f"batch {batch_size}: skipped (this runtime does not batch)")
            continue
        _say(f"batch {batch_size}")
        points += measure(
            session,
            ids,
            batch_sizes=[batch_size],
            prompt_tokens=request["prompt_tokens"],
            new_tokens=request["new_tokens"],
            warmup=request["warmup"],
            repeats=request["repeats"],
        )
        if batch_size == 1 and request.get("profile"):  # where the decode time goes, after the timed runs
            _say("batch 1: profiling the decode steps")
            session.profile_decode(prompts_from(ids, 1, request["prompt_tokens"]), request["new_tokens"])
    return points


def main(request_path: str, answer_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    import torch
    import transformers  # noqa: F401  (imported before the reading: part of the runtime, not the model)

    from quantlab.artifact import load_artifact
    from quantlab.runtimes import LoadRequest, select_runtime
    from quantlab.runtimes.placement import gpu_span

    load = LoadRequest(**request["load"])
    device, gpus = load.device, load.gpus
    cuda = device.startswith("cuda")
    # every GPU the model is placed on (--tensor-parallel): its memory is the sum of theirs
    devices = [f"cuda:{i}" for i in gpu_span(device, gpus)] if cuda else []
    for each in devices:
        # The allocator's statistics exist only once CUDA is initialised ("Invalid device argument" otherwise);
        # an empty tensor does that without allocating anything that would count as the model's memory.
        torch.empty(0, device=each)
        torch.cuda.reset_peak_memory_stats(each)
    before = _rss()
    _say("loading")
    artifact = load_artifact(request["artifact"])
    session = select_runtime(artifact, request["runtime"]).load_as(artifact, load)
    after = _rss()
    cuda_after = sum(torch.cuda.memory_allocated(each) for each in devices) if cuda else None
    points = _speed_points(session, request)
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
        answer["memory"]["cuda_peak_allocated_bytes"] = sum(torch.cuda.max_memory_allocated(d) for d in devices)
        answer["memory"]["cuda_peak_reserved_bytes"] = sum(torch.cuda.max_memory_reserved(d) for d in devices)
        answer["memory"]["cuda_after_load_bytes"] = cuda_after
    Path(answer_path).write_text(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
