"""`quantlab demo`: the spine end to end on the embedded default model, with no network beyond PyPI."""

from __future__ import annotations

import os
from pathlib import Path

from quantlab.bench.run import BenchOptions, bench
from quantlab.methods.base import Log
from quantlab.models import resolve_model
from quantlab.paths import cache_dir
from quantlab.quantizer import quantize, reusable
from quantlab.report import tables
from quantlab.results import read_results
from quantlab.spec import MethodSpec

DEMO_SPECS: dict[str, MethodSpec] = {
    "none-fp32": MethodSpec(method="none", dtype="fp32"),
    "none-bf16": MethodSpec(method="none", dtype="bf16"),
    "rtn-w8-g64": MethodSpec(method="rtn", bits=8, group_size=64),
    "rtn-w4-g64": MethodSpec(method="rtn", bits=4, group_size=64),
    "gguf-q4_k_m": MethodSpec(method="gguf", scheme="Q4_K_M"),  # served by llama.cpp, not transformers
    # FP8 W8A8 has no CPU matmul (its row shows the `emulated` mark); bitsandbytes NF4 has a CPU kernel.
    "fp8-dynamic": MethodSpec(method="fp8", scheme="FP8_DYNAMIC"),
    "bnb-nf4": MethodSpec(method="bnb", scheme="nf4"),
}
BASELINE = "none-fp32"


def run_demo(
    *,
    results: Path,
    report_path: Path,
    work_dir: Path | None,
    dataset: str,
    max_tokens: int,
    ctx: int,
    batch_sizes: list[int],
    repeats: int,
    fresh: bool,
    log: Log,
    rig: str | None = None,
) -> str:
    work = work_dir or cache_dir() / "demo"
    log("preparing the default model (SmolLM2-135M-Instruct)")
    resolve_model("default", log=log)
    paths = {}
    for name, spec in DEMO_SPECS.items():
        out = work / name
        if not fresh and reusable(out, "default", spec):
            log(f"{name}: reusing {out}")
        else:
            log(f"{name}: quantizing")
            quantize("default", spec, out, force=True, log=lambda msg, name=name: log(f"{name}: {msg}"))
        paths[name] = out
    options = BenchOptions(
        dataset=dataset, ctx=ctx, max_tokens=max_tokens, batch_sizes=batch_sizes, repeats=repeats, rig=rig
    )
    bench(list(paths.values()), baseline=paths[BASELINE], options=options, results_path=results, progress=log)
    selected = tables.select(read_results(results))
    text = tables.markdown(selected, title="quantlab demo: SmolLM2-135M-Instruct on this host")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = report_path.with_name(report_path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, report_path)
    return text
