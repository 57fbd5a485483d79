"""llama.cpp's own tools on a GPU: CUDA build, F16 and Q4_K_M of a Llama-3.1-8B-shaped random model (8 of 32
layers), batch-1 decode as % of the measured bandwidth limit, served concurrency 1/8/32.

    python -m benchmarks.gpu.llamacpp_cuda_prepare .gpu      # here: the trimmed llama.cpp tree + tokenizer to carry
    python -m benchmarks.gpu.llamacpp_cuda --shape llama-3.1-8b --tree .gpu/llama.cpp-tree --tokenizer .gpu/tokenizer \
        --out $OUT                                           # on the GPU (benchmarks/gpu/llamacpp_cuda.md)
    python -m benchmarks.gpu.llamacpp_cuda --shape tiny --out /tmp/gpu-dry          # CPU dry run, same steps

Most valuable first, each written to --out when done: build (in a thread, while the random bf16 model is made and
converted to an F16 GGUF artifact by quantlab), Q4_K_M by `llama-quantize`, read bandwidth, llama-bench per
file, then served sweeps (bench_load, llama-server) while they fit before --deadline-s. Bytes read per token: the
GGUF's tensors less `token_embd` (a row lookup) plus the f16 KV cache at tg128's mean context.

Writes to --out, after every step: `gpu-llamacpp.ndjson`, one benchmark record (benchmarks/lib/records.py) whose
settings are the command's options and whose measurement holds device (torch, GPU, nvidia-smi), cuda (where
cuBLAS came from), build, model, llama_quantize, bandwidth, bench (llama-bench per file), served (per file) and
seconds (per step); `gpu-llamacpp.md`, its tables; and `gpu-llamacpp-served.jsonl`, the served sweeps' Results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.lib.console import START, log, timed
from benchmarks.lib.random_model import SHAPES, build_random_model
from benchmarks.lib.records import BenchRecord, measured, start_run, write_records

RUNS = {"llama-3.1-8b": dict(backend="cuda", prompt=512, new=64), "tiny": dict(backend="cpu", prompt=128, new=16)}
LAYERS = {"llama-3.1-8b": 8}  # the default layer count where it is not the shape's own: 8 of the 8B's 32
STAMP = ".quantlab-tree.json"
HEAD = (
    "| file | GGUF MiB | read/token MiB | pp512 tok/s | tg128 tok/s | limit tok/s | decode % of limit |",
    "| served | concurrency | requests | errors | output tok/s | TTFT p50 ms | TPOT p50 ms |",
)
CUDA_LIBS = ("cublas", "cublasLt")  # what ggml-cuda links besides cudart and the driver


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--layers", type=int, help="override the shape's layer count (default: 8 of the 8B's 32)")
    parser.add_argument("--backend", choices=["cpu", "cuda"], help="default: cuda for the 8B shape, cpu for tiny")
    parser.add_argument("--tree", type=Path, help="llama.cpp tree to build from (sets QUANTLAB_LLAMACPP_DIR)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer folder; default: the embedded default model's")
    parser.add_argument("--out", type=Path, default=Path("results/gpu"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-llamacpp-work"))
    parser.add_argument("--rig", help="rig of the served results; default: cpu, or the built-in rig of this GPU")
    parser.add_argument("--until", choices=["quantize", "bench", "served"], default="served")
    parser.add_argument("--skip-served", action="store_true", help="same as --until bench")
    parser.add_argument("--deadline-s", type=int, default=510, help="a served sweep starts only if it fits")
    return parser


def cuda_env(work: Path) -> dict:
    """If the CUDA toolkit lacks cuBLAS (headers, libraries), point CMake at the pip wheels torch brings."""
    nvcc = Path(shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc").resolve()
    toolkit = nvcc.parent.parent
    facts = {"nvcc": str(nvcc), "nvcc_version": subprocess.getoutput(f"{nvcc} --version").splitlines()[-1:]}
    roots = [toolkit / d for d in ("include", "lib64", "lib64/stubs", "targets/x86_64-linux/lib/stubs")]
    wheels = [p for base in sys.path for p in Path(base or ".").glob("nvidia/*") if p.is_dir()]
    if not any((r / "cublas_v2.h").is_file() for r in roots):
        header = next((h for w in wheels for h in w.glob("include/cublas_v2.h")), None)
        if header:
            os.environ["CUDAFLAGS"] = f"{os.environ.get('CUDAFLAGS', '')} -I{header.parent}".strip()
        facts["cublas_header"] = str(header)
    for name in CUDA_LIBS:
        if not any(r.glob(f"lib{name}.so*") for r in roots):
            found = next((f for w in wheels for f in sorted(w.glob(f"lib/lib{name}.so*"))), None)
            facts[f"lib{name}"] = found and link_library(found, work / "cuda-libs", name)
    return facts


def link_library(found: Path, links: Path, name: str) -> str:
    links.mkdir(parents=True, exist_ok=True)
    (links / f"lib{name}.so").symlink_to(found)  # find_library wants the unversioned name
    for key, value in {"CMAKE_LIBRARY_PATH": links, "LD_LIBRARY_PATH": found.parent}.items():
        os.environ[key] = f"{value}:{os.environ[key]}" if os.environ.get(key) else str(value)
    return str(found)


def build_tools(backend: str) -> tuple[object, dict]:
    from quantlab.llamacpp import build, source

    root = source.tree_dir(log)
    commit = json.loads((root / STAMP).read_text()).get("commit") if (root / STAMP).is_file() else None
    started = time.monotonic()
    tools = build.ensure(log, backend)
    wall = round(time.monotonic() - started, 1)
    log(f"build ready after {wall} s: {tools.label}")
    return tools, {
        **{"backend": tools.backend, "cuda_arch": tools.cuda_arch, "commit": commit or tools.commit},
        **{"build_label_commit": tools.commit, "tree": str(root), "folder": tools.folder, "args": tools.cmake_args},
        **{"build_seconds": tools.seconds, "wall_seconds": wall, "cached": wall < tools.seconds / 2},
    }


def run_tool(command: list[str]) -> dict:
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed ({proc.returncode}): {(lines or ['no output'])[-1][:300]}")
    return {"command": " ".join([Path(command[0]).name, *command[1:]]), "log": [ln for ln in lines if "_impl:" in ln]}


def device_facts(device: str) -> dict:
    import torch

    facts = {"torch": torch.__version__, "device": device}
    if device == "cuda":
        smi = "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv,noheader"
        facts |= {"gpu": torch.cuda.get_device_name(0), "nvidia_smi": subprocess.getoutput(smi).strip()}
    return facts


def bandwidth(device: str) -> dict:
    from quantlab.roofline import PROBE_BYTES, PROBE_REPEATS, measure_bandwidth

    gb_s = measure_bandwidth(device)
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
    method = f"quantlab.roofline: torch sum over {PROBE_BYTES >> 20} MiB fp32 on {device}, best of {PROBE_REPEATS}"
    return {"gb_s": round(gb_s, 1), "method": method}


def llama_bench(tools, gguf: Path, model_dir: Path, bw: dict) -> dict:
    from quantlab.llamacpp.ops import inspect
    from quantlab.roofline import kv_bytes_read

    tensors = {t["name"]: t["n_bytes"] for t in inspect(gguf)["tensors"]}
    embd = tensors.get("token_embd.weight", 0) if "output.weight" in tensors else 0
    kv, kv_detail = kv_bytes_read(model_dir, "fp16", 0, 128)  # tg128 decodes from an empty context
    per = {"file_bytes": gguf.stat().st_size, "weights": sum(tensors.values()) - embd, "kv": kv}
    per |= {"total": per["weights"] + kv, "detail": f"GGUF tensors less token_embd ({embd:,} B) + {kv_detail}"}
    command = [str(tools.tool("llama-bench")), "-m", str(gguf), "-p", "512", "-n", "128", "-ngl", "99", "-o", "json"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    out = {"command": " ".join(["llama-bench", *command[1:]]), "bytes_per_token": per}
    if proc.returncode != 0:
        return out | {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    tests = json.loads(proc.stdout)
    pp = next(t for t in tests if t["n_prompt"] > 0 and t["n_gen"] == 0)
    tg = next(t for t in tests if t["n_gen"] > 0 and t["n_prompt"] == 0)
    limit = bw["gb_s"] * 1e9 / per["total"]
    keep = ("backends", "gpu_info", "n_gpu_layers", "flash_attn", "type_k", "n_threads", "build_commit", "model_size")
    out |= {k: tg.get(k) for k in keep} | {"pp512_tok_s": round(pp["avg_ts"], 1), "pp512_sd": round(pp["stddev_ts"], 1)}
    out |= {"tg128_tok_s": round(tg["avg_ts"], 2), "tg128_sd": round(tg["stddev_ts"], 2)}
    return out | {"limit_tok_s": round(limit, 1), "pct_of_limit": round(100 * tg["avg_ts"] / limit, 1)}


def serve(artifact, args, record: dict) -> dict:
    from quantlab.bench.config import BenchConfig
    from quantlab.bench.served import bench_load
    from quantlab.rigs import load_rigs

    run, device, gpu = RUNS[args.shape], record["build"]["device"], record["device"].get("gpu", "")
    rigs = [r.name for r in load_rigs().values() if r.n_gpus == 1 and r.gpu_match and r.gpu_match in gpu]
    rig = args.rig or ("cpu" if device == "cpu" else (rigs or [None])[0])
    fields = dict(engine="llamacpp", device=device, rig=rig, dataset="embedded", concurrency=[1, 8, 32])
    config = BenchConfig(**fields, prompt_tokens=run["prompt"], new_tokens=run["new"])
    opts = dict(startup_timeout_s=180, request_timeout_s=180, progress=log)  # a stuck server must not eat the lease
    result = bench_load(artifact.path, config=config, results_path=args.out / "gpu-llamacpp-served.jsonl", **opts)
    levels = []
    for lv in result.load.levels:
        kept = lv.model_dump(include={"concurrency", "requests", "errors", "error_examples", "output_tok_s"})
        dists = {"ttft_p50_ms": lv.ttft_ms, "tpot_p50_ms": lv.tpot_ms, "itl_p50_ms": lv.itl_ms}
        levels.append(kept | {k: d.median if d else None for k, d in dists.items()})
    return {"startup_s": result.load.startup_s, "kernel": result.runtime.kernel_detail, "levels": levels}


def bench_table(record: dict) -> list[str]:
    lines = [HEAD[0], "|---|" + "---:|" * 6]
    for name, r in record["bench"].items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} ||||||")
            continue
        size, read = (r["bytes_per_token"][k] / 2**20 for k in ("file_bytes", "total"))
        row = (f"{size:,.1f}", f"{read:,.1f}", r["pp512_tok_s"], r["tg128_tok_s"], r["limit_tok_s"], r["pct_of_limit"])
        lines.append(f"| {name} | " + " | ".join(f"{v:,}" if not isinstance(v, str) else v for v in row) + " |")
    return lines


def served_table(record: dict) -> list[str]:
    lines = [HEAD[1], "|---|" + "---:|" * 6]
    for name, s in record["served"].items():
        if "levels" not in s:
            lines.append(f"| {name} | {s} ||||||")
        for lv in s.get("levels", []):
            ms = [f"{v:,.1f}" if v is not None else "–" for v in (lv["ttft_p50_ms"], lv["tpot_p50_ms"])]
            cells = [lv["concurrency"], lv["requests"], lv["errors"], f"{lv['output_tok_s']:,.1f}", *ms]
            lines.append(f"| {name} | " + " | ".join(map(str, cells)) + " |")
    return lines


def table(run: BenchRecord, record: dict) -> str:
    bw, b = record.get("bandwidth", {}), record.get("build", {})
    where = record["device"].get("gpu", run.host.cpu)
    lines = [f"llama.cpp {b.get('commit')} ({b.get('backend')}), {run.settings['shape']}, {where}"]
    lines += [f"read bandwidth {bw.get('gb_s')} GB/s ({bw.get('method')})", "", *bench_table(record), ""]
    lines += served_table(record)
    return "\n".join([*lines, "", "Seconds: " + ", ".join(f"{k} {v}" for k, v in record["seconds"].items())]) + "\n"


def save(out: Path, run: BenchRecord, record: dict) -> None:
    """The run so far, rewritten after every step, so a cut-short lease still returns every finished number."""
    plain = json.loads(json.dumps(record, default=str))
    write_records(out / "gpu-llamacpp.ndjson", [measured(run, plain)])
    (out / "gpu-llamacpp.md").write_text(table(run, record), encoding="utf-8")


def start(args) -> tuple[str, BenchRecord, dict]:
    """Environment for the build (backend, tree, cuBLAS) and the run's envelope and empty measurement."""
    backend = args.backend or RUNS[args.shape]["backend"]
    device = "cuda" if backend == "cuda" else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    os.environ["QUANTLAB_LLAMACPP_BACKEND"] = backend
    if args.tree is not None:
        os.environ["QUANTLAB_LLAMACPP_DIR"] = str(args.tree.resolve())
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()} | {"backend": backend}
    run = start_run("benchmarks.gpu.llamacpp_cuda", settings)
    record: dict = {"device": device_facts(device), "seconds": {}, "bench": {}, "served": {}}
    if backend == "cuda":
        record["cuda"] = cuda_env(args.work)
    return backend, run, record


def build_and_convert(args, backend: str, run: BenchRecord, record: dict, model: Path):
    """The tools build in a thread while the random model is made and converted (the build needs no model, the
    conversion no build): the tools and the F16 artifact."""
    from quantlab.default_model import ensure_default_model
    from quantlab.llamacpp import ops
    from quantlab.quantizer import obtain
    from quantlab.spec import MethodSpec

    device, seconds = record["device"]["device"], record["seconds"]
    tok, layers = args.tokenizer or ensure_default_model(log), args.layers or LAYERS.get(args.shape)
    with ThreadPoolExecutor(1) as pool:
        building = pool.submit(timed, "build", lambda: build_tools(backend), seconds)
        make = lambda: build_random_model(args.shape, tok, model, device, layers=layers)  # noqa: E731
        record["model"] = timed("random_model", make, seconds)
        spec = MethodSpec(method="gguf", scheme="F16")
        f16 = timed("convert_F16", lambda: obtain(str(model), spec, args.work / "F16", log=log), seconds)
        if args.until == "served":  # the served Q4_K_M artifact starts from quantlab's own F16 conversion
            timed("convert_for_Q4_K_M_artifact", lambda: ops.converted_f16(str(model), log), seconds)
        try:
            tools, record["build"] = building.result()
        except Exception as exc:
            record["build"] = {"error": f"{type(exc).__name__}: {exc}"[:500], "device": device}
            save(args.out, run, record)
            raise
    record["build"]["device"] = device
    return tools, f16


def measure(args) -> None:
    backend, run, record = start(args)
    model = args.work / "model"
    tools, f16 = build_and_convert(args, backend, run, record, model)
    run = run.model_copy(update={"tools": {"llama_cpp_build": tools.label}})
    os.environ.setdefault("LLAMA_CPP_LIB_PATH", tools.folder)  # llama-cpp-python loads this build (set after join)
    files = {"F16": f16.path / f16.manifest.gguf.file, "Q4_K_M": args.work / "model-Q4_K_M.gguf"}
    command = [str(tools.tool("llama-quantize")), *map(str, files.values()), "Q4_K_M", str(os.cpu_count())]
    record["llama_quantize"] = timed("llama_quantize_Q4_K_M", lambda: run_tool(command), record["seconds"])
    save(args.out, run, record)
    if args.until == "quantize":
        return
    record["bandwidth"] = timed("bandwidth", lambda: bandwidth(record["device"]["device"]), record["seconds"])
    for name, path in files.items():
        bench = lambda p=path: llama_bench(tools, p, model, record["bandwidth"])  # noqa: E731
        try:
            record["bench"][name] = timed(f"llama_bench_{name}", bench, record["seconds"])
        except Exception as exc:  # keep going: the other file's numbers are worth having
            record["bench"][name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        save(args.out, run, record)
    print(table(run, record), flush=True)
    if args.until == "served":
        served_steps(args, run, record, model, f16)


def served_steps(args, run: BenchRecord, record: dict, model: Path, f16) -> None:
    from quantlab.quantizer import obtain
    from quantlab.spec import MethodSpec

    make_q4 = lambda: obtain(str(model), MethodSpec(method="gguf", scheme="Q4_K_M"), args.work / "Q4_K_M", log=log)  # noqa: E731
    remake = record["seconds"]["llama_quantize_Q4_K_M"] + 10  # its F16 was converted while the tools built
    for name, make, cost in (("F16", lambda: f16, 45), ("Q4_K_M", make_q4, 45 + remake)):
        elapsed = time.monotonic() - START
        if elapsed + cost > args.deadline_s:
            record["served"][name] = {"skipped": f"{elapsed:.0f} s + ≈{cost:.0f} s > --deadline-s {args.deadline_s}"}
            log(f"served {name}: skipped ({record['served'][name]['skipped']})")
            continue
        try:
            artifact = timed(f"artifact_{name}", make, record["seconds"])
            sweep = timed(f"served_{name}", lambda a=artifact: serve(a, args, record), record["seconds"])
            record["served"][name] = sweep
        except Exception as exc:  # a served failure must not lose the numbers already written
            record["served"][name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            log(f"served {name} failed: {record['served'][name]['error']}")
        save(args.out, run, record)
    print(table(run, record), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.skip_served and args.until == "served":
        args.until = "bench"
    measure(args)


if __name__ == "__main__":
    main()
