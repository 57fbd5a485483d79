"""`quantlab bench --load --target URL` against GuideLLM on the same hand-started llama-server, in alternating runs.

    python -m benchmarks.crosschecks.target_vs_guidellm [--guidellm PATH] [--rounds 3] [--requests 16]
        [--concurrency 1,8] [--threads N] [--results results/target-vs-guidellm.ndjson]
    python -m benchmarks.crosschecks.target_vs_guidellm --render   # the markdown again, no measuring

GuideLLM conflicts with quantlab's pins, so it lives in its own virtualenv (never a quantlab dependency):
    python3 -m venv ~/.cache/quantlab/guidellm-venv && ~/.cache/quantlab/guidellm-venv/bin/pip install guidellm==0.8.1

`--target` measures a server quantlab did not start, so the figures it records can only be trusted if another
tool, measuring the same server in the same minutes, gets the same ones. The server is started as a user would:
quantlab's own llama-server build, the default model's Q8_0 GGUF, `--parallel 8`, prompt caching off (so a prompt
repeated in a later round is computed again, as it was the first time). Each round runs, per concurrency level,
`bench_target` (what the CLI calls) and `guidellm run` back to back, the order swapped every round so drift hits
both alike; 128-token prompts, 32 forced output tokens, the same request count. A tool's figure is the median of
its per-round medians; its spread is max − min over rounds. "Agree": the tools' figures differ by no more than
the larger spread, or 1% of the figure where both spreads are below that (the line says which bound it used).

The server leaves one core to the clients by default: on 2 cores with the server on both, each client's own
work (GuideLLM's worker processes more than quantlab's event loop) waits for the server's threads, and at
concurrency 8 GuideLLM then reported TTFT 0.5 s and latency 1.2 s above what the server's own timings of its
requests allowed, while with one core left both tools agreed within their spreads on every figure.

llama-server's own per-request timings (the `print_timing` lines of its log, cut per run by log offsets) are the
third witness: its "eval time" / (tokens − 1) is the same definition as quantlab's TPOT and GuideLLM's ITL.

Timing hygiene: before the timed rounds it waits (up to 10 min) for the 1-minute load below 1.0 and holds
`flock /tmp/quantlab-timing.lock` throughout, so no other timed benchmark overlaps; the load is recorded.

One benchmark record (benchmarks/lib/records.py) per tool, level and round is appended to `--results`; the
markdown beside it is rendered from the newest run. Settings: model, scheme, prompt_tokens, new_tokens,
requests, threads, server (llama-server's flags). Measurement: round, tool (quantlab | guidellm), concurrency,
ttft_ms, tpot_ms, latency_ms (medians over requests), output_tok_s, completed, errors, loadavg, and server (the
medians of llama-server's own prompt_n, cached_n, prompt_ms, tpot_ms, total_ms over the run's requests).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.lib.artifacts import gguf
from benchmarks.lib.console import check, log
from benchmarks.lib.records import BenchRecord, append_records, measured, read_records, runs_newest_first, start_run
from benchmarks.lib.timing import LOCK, own_group, quiet_and_locked

BENCHMARK = "benchmarks.crosschecks.target_vs_guidellm"
GUIDELLM = Path.home() / ".cache/quantlab/guidellm-venv/bin/guidellm"
MAKE_GUIDELLM = (
    "python3 -m venv ~/.cache/quantlab/guidellm-venv && ~/.cache/quantlab/guidellm-venv/bin/pip install guidellm==0.8.1"
)
ALIAS = "default-Q8_0"
FLOOR = 0.01  # the agreement bound where both spreads are below 1% of the figure
# (key, column, definition): every column says what it measures
METRICS = (
    ("ttft_ms", "TTFT ms", "request sent → first streamed token, median over requests"),
    ("tpot_ms", "time/token ms", "per request (last token − first token) / (tokens − 1), median over requests: "
     "quantlab's TPOT = GuideLLM's ITL (GuideLLM's own TPOT includes the first token)"),
    ("latency_ms", "latency ms", "request sent → last byte of the stream, median over requests"),
    ("output_tok_s", "output tok/s", "output tokens of completed requests / wall time of the run"),
)  # fmt: skip
TIMING = re.compile(r"task (\d+) \|\s+(prompt eval|eval|total) time =\s+([\d.]+) ms /\s+(\d+) tokens")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guidellm", type=Path, default=GUIDELLM, help="the guidellm executable (0.8.1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=16, help="requests per tool, level and round")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument(
        "--threads", type=int, default=None, help="llama-server's threads; default: all cores but one (the clients')"
    )
    parser.add_argument("--max-wait", type=float, default=600.0, help="seconds to wait for a quiet machine")
    parser.add_argument("--results", type=Path, default=Path("results/target-vs-guidellm.ndjson"))
    parser.add_argument("--render", action="store_true", help="only render the markdown of --results again")
    return parser


def server_argv(gguf: Path, port: int, threads: int, levels: list[int]) -> list[str]:
    from quantlab.llamacpp import build

    slots = max(levels)
    return [
        str(build.ensure(log).tool("llama-server")), "--model", str(gguf), "--host", "127.0.0.1",
        "--port", str(port), "--alias", ALIAS, "--parallel", str(slots), "--ctx-size", str(slots * 512),
        "--threads", str(threads), "--threads-batch", str(threads), "--no-cache-prompt", "--cache-ram", "0",
    ]  # fmt: skip


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama-server exited with {proc.returncode} before answering")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"llama-server did not answer {url}/health in {timeout:.0f} s")


def run_quantlab(url: str, c: int, args) -> dict:
    """What `quantlab bench --load --target URL --concurrency C --requests N` measures (its library call)."""
    from quantlab.bench.config import BenchConfig
    from quantlab.bench.target import bench_target

    config = BenchConfig(concurrency=[c], requests=args.requests, prompt_tokens=128, new_tokens=32)
    lv = bench_target(url, config=config).load.levels[0]
    return {
        "ttft_ms": lv.ttft_ms.median if lv.ttft_ms else None,
        "tpot_ms": lv.tpot_ms.median if lv.tpot_ms else None,
        "latency_ms": lv.e2e_ms.median if lv.e2e_ms else None,
        "output_tok_s": lv.output_tok_s,
        "completed": lv.completed,
        "errors": lv.errors,
    }


def run_guidellm(url: str, c: int, args, work: Path) -> dict:
    """`guidellm run` at concurrency c (GuideLLM 0.8.1's CLI); figures from its per-request JSON, medians taken
    here over requests as quantlab's are (its own ITL summary weights each request by its token count)."""
    from quantlab.default_model import ensure_default_model

    out = work / f"guidellm-c{c}-{time.monotonic_ns()}.json"
    backend = {"kind": "openai_http", "target": url, "model": ALIAS, "request_format": "/v1/completions"}
    argv = [
        str(args.guidellm), "run", "--backend", json.dumps(backend), "--profile", f"kind=concurrent,streams={c}",
        "--data", "kind=synthetic_text,prompt_tokens=128,output_tokens=32",
        "--tokenizer", f"kind=huggingface_auto,model={ensure_default_model(log=log)}",
        "--constraint", f"kind=max_requests,count={args.requests}", "--output", f"kind=json,path={out}",
        "--disable-console",
    ]  # fmt: skip
    with own_group(argv, work / "guidellm.log") as proc:
        if proc.wait(timeout=1800) != 0:
            raise SystemExit(f"guidellm failed ({proc.returncode}); see {work / 'guidellm.log'}")
    bench = json.loads(out.read_text())["benchmarks"][0]
    done = bench["requests"]["successful"]
    return {
        "ttft_ms": statistics.median(r["time_to_first_token_ms"] for r in done),
        "tpot_ms": statistics.median(r["inter_token_latency_ms"] for r in done),
        "latency_ms": 1e3 * statistics.median(r["request_latency"] for r in done),
        "output_tok_s": sum(r["output_tokens"] for r in done) / bench["duration"],
        "completed": len(done),
        "errors": len(bench["requests"]["errored"]) + len(bench["requests"]["incomplete"]),
    }


def server_timings(text: str, skip_first: bool) -> dict:
    """Medians of llama-server's own per-request timings in one run's slice of its log (the warm-up request
    `bench_target` sends first is skipped): prompt tokens computed and taken from cache, prompt ms, time per
    token = eval ms / (generated − 1) (the first token comes from the prompt pass), total ms."""
    tasks: dict[str, dict] = {}
    for task, kind, ms, n in TIMING.findall(text):
        tasks.setdefault(task, {})[kind] = (float(ms), int(n))
    rows = [t for t in tasks.values() if len(t) == 3][1 if skip_first else 0 :]
    if not rows:
        return {}
    pick = {
        "prompt_n": lambda t: t["prompt eval"][1],
        "cached_n": lambda t: t["total"][1] - t["prompt eval"][1] - t["eval"][1],
        "prompt_ms": lambda t: t["prompt eval"][0],
        "tpot_ms": lambda t: t["eval"][0] / max(t["eval"][1] - 1, 1),
        "total_ms": lambda t: t["total"][0],
    }
    return {"requests": len(rows), **{k: statistics.median(f(t) for t in rows) for k, f in pick.items()}}


def one_round(i: int, url: str, server_log: Path, args, work: Path) -> list[dict]:
    """Both tools at every level, the order swapped every round; each run's slice of the server log kept."""
    out = []
    for c in args.concurrency:
        tools = ["quantlab", "guidellm"] if i % 2 == 0 else ["guidellm", "quantlab"]
        for tool in tools:
            start = server_log.stat().st_size
            load = os.getloadavg()[0]
            figures = run_quantlab(url, c, args) if tool == "quantlab" else run_guidellm(url, c, args, work)
            time.sleep(0.5)  # the server logs a request's timings just before its last chunk: let the log catch up
            with open(server_log, "rb") as fh:
                fh.seek(start)
                text = fh.read().decode(errors="replace")
            server = server_timings(text, skip_first=tool == "quantlab")
            out.append({"round": i, "tool": tool, "concurrency": c, **figures, "loadavg": load, "server": server})
            log(f"round {i + 1} c={c} {tool}: " + ", ".join(f"{k} {figures[k]:.1f}" for k, _, _ in METRICS))
    return out


def compare(rows: list[dict], c: int, key: str) -> dict:
    """One figure at one level: each tool's median over rounds and spread (max − min), the gap, the bound."""

    def side(tool: str) -> tuple[float, float]:
        vals = [r[key] for r in rows if r["tool"] == tool and r["concurrency"] == c]
        return statistics.median(vals), max(vals) - min(vals)

    (q, q_spread), (g, g_spread) = side("quantlab"), side("guidellm")
    spread = max(q_spread, g_spread)
    floor = FLOOR * (q + g) / 2
    bound, basis = (spread, "spread") if spread >= floor else (floor, "1% floor")
    return {"quantlab": q, "q_spread": q_spread, "guidellm": g, "g_spread": g_spread, "gap": q - g,
            "bound": bound, "basis": basis, "ok": abs(q - g) <= bound}  # fmt: skip


def server_figure(rows: list[dict], c: int, key: str) -> float | None:
    vals = [r["server"][key] for r in rows if r["concurrency"] == c and r["server"].get(key) is not None]
    return statistics.median(vals) if vals else None


def render(records: list[BenchRecord], source: str) -> str:
    rows_run = runs_newest_first(records)[0]
    first, settings = rows_run[0], rows_run[0].settings
    rows = [r.measurement for r in rows_run]
    levels = sorted({r["concurrency"] for r in rows})
    out = [
        "# `quantlab bench --load --target` against GuideLLM on the same llama-server",
        "",
        f"Generated by `python -m {BENCHMARK}` from `{source}` (its newest run); never typed in. Each tool's "
        "figure is the median of its per-round medians, its spread the max − min over rounds; the tools agree "
        f"where their gap ≤ the larger spread (or {FLOOR:.0%} of the figure where both spreads are smaller: "
        "the basis column says which).",
        "",
        "| concurrency | figure | quantlab | spread | GuideLLM | spread | gap | bound (basis) | agree |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in levels:
        for key, name, _ in METRICS:
            m = compare(rows, c, key)
            out.append(
                f"| {c} | {name} | {m['quantlab']:.2f} | {m['q_spread']:.2f} | {m['guidellm']:.2f} "
                f"| {m['g_spread']:.2f} | {m['gap']:+.2f} | {m['bound']:.2f} ({m['basis']}) "
                f"| {'yes' if m['ok'] else '**no**'} |"
            )
    out += ["", "Columns (both tools measure each the same way):", ""]
    out += [f"- **{name}**: {definition}." for _, name, definition in METRICS]
    out += server_section(rows, levels)
    out += ["", "## Every run (the 1-minute load at its start shows which rounds other jobs disturbed)", "",
            "| round | concurrency | tool | load | TTFT ms | time/token ms | latency ms | output tok/s |",
            "|---:|---:|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    out += [
        f"| {r['round'] + 1} | {r['concurrency']} | {r['tool']} | {r['loadavg']:.2f} | {r['ttft_ms']:.1f} "
        f"| {r['tpot_ms']:.2f} | {r['latency_ms']:.1f} | {r['output_tok_s']:.1f} |"
        for r in rows
    ]
    loads = [r["loadavg"] for r in rows]
    out += [
        "",
        "## How it was made",
        "",
        f"- {first.timestamp} on {first.host.cpu} ({first.host.cpu_count} cores, {first.host.os}); 1-minute "
        f"load at the runs' starts {min(loads):.2f}–{max(loads):.2f} (timed under `flock {LOCK}`).",
        f"- quantlab {first.quantlab_version}; " + "; ".join(f"{k} {v}" for k, v in first.tools.items()) + ".",
        f"- Model {settings['model']} {settings['scheme']}; {settings['prompt_tokens']}-token prompts, "
        f"{settings['new_tokens']} forced output tokens; {settings['requests']} requests per tool, level and round; "
        f"{len({r['round'] for r in rows})} rounds, the tools' order swapped each round.",
        f"- Server, started by hand: `llama-server {' '.join(settings['server'])}`.",
        f"- Command: `{' '.join(['python -m', BENCHMARK, settings['argv']]).strip()}`.",
    ]
    return "\n".join(out) + "\n"


def server_section(rows: list[dict], levels: list[int]) -> list[str]:
    """llama-server's own per-request timings beside both tools' (medians over every request of both tools)."""
    out = [
        "",
        "## llama-server's own timings (its log's `print_timing` lines)",
        "",
        "Time/token = eval ms / (generated − 1), the definition of both tools' column; prompt ms = prompt "
        "start → first token sampled (TTFT without HTTP and client); total ms = prompt + eval (latency without "
        "them). Each figure: the median over rounds of the median over the tool's timed requests in that round (the "
        "tool columns are the tool's own figures from the table above).",
        "",
        "| concurrency | tool | server time/token ms | tool time/token ms | server prompt ms | tool TTFT ms "
        "| server total ms | tool latency ms | prompt tokens | cached tokens |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in levels:
        for tool in ("quantlab", "guidellm"):
            mine = [r for r in rows if r["tool"] == tool]
            s = {k: server_figure(mine, c, k) for k in ("tpot_ms", "prompt_ms", "total_ms", "prompt_n", "cached_n")}
            t = {k: compare(rows, c, k)[tool] for k in ("tpot_ms", "ttft_ms", "latency_ms")}
            out.append(
                f"| {c} | {tool} | {s['tpot_ms']:.2f} | {t['tpot_ms']:.2f} | {s['prompt_ms']:.1f} "
                f"| {t['ttft_ms']:.1f} | {s['total_ms']:.1f} | {t['latency_ms']:.1f} | {s['prompt_n']:.0f} "
                f"| {s['cached_n']:.0f} |"
            )
    return out


def checks(rows: list[dict]) -> None:
    for c in sorted({r["concurrency"] for r in rows}):
        for key, name, _ in METRICS:
            m = compare(rows, c, key)
            check(m["ok"], f"c={c} {name}: quantlab {m['quantlab']:.2f} vs GuideLLM {m['guidellm']:.2f}, gap "
                  f"{m['gap']:+.2f} within {m['bound']:.2f} ({m['basis']})")  # fmt: skip
        for tool in ("quantlab", "guidellm"):
            mine = compare(rows, c, "tpot_ms")[tool]
            srv = server_figure([r for r in rows if r["tool"] == tool], c, "tpot_ms")
            check(None, f"c={c} {tool} time/token {mine:.2f} ms vs llama-server's own {srv:.2f} ms "
                  f"on the same requests ({100 * (mine / srv - 1):+.2f}%)")  # fmt: skip
    bad = [r for r in rows if r["errors"] or r["server"].get("cached_n")]
    check(not bad, f"no errors and no cached prompt tokens in any run ({len(bad)} runs otherwise)")


def write_markdown(results: Path) -> None:
    text = render(read_records(results), results.name)
    results.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)


def measure(args, argv_text: str) -> None:
    from quantlab.llamacpp import build
    from quantlab.serve.process import free_port

    artifact = gguf("default", "Q8_0")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = server_argv(artifact.path / artifact.manifest.gguf.file, port, args.threads, args.concurrency)
    shown = subprocess.run([str(args.guidellm), "--version"], capture_output=True, text=True).stdout
    version = shown.split(":")[-1].strip()  # "guidellm version: 0.8.1"
    flags = [Path(a).name if "/" in a else a for a in argv[1:]]  # the file's name, not this machine's cache path
    settings = {"model": "default", "scheme": "Q8_0", "prompt_tokens": 128, "new_tokens": 32,
                "requests": args.requests, "threads": args.threads, "server": flags, "argv": argv_text}  # fmt: skip
    run = start_run(BENCHMARK, settings, {"guidellm": version, "llama_cpp_build": build.ensure(log).label})
    with tempfile.TemporaryDirectory(prefix="target-vs-guidellm-") as tmp:
        work = Path(tmp)
        server_log = work / "llama-server.log"
        with own_group(argv, server_log) as server:
            wait_healthy(url, server)
            log(f"llama-server up at {url} (pid {server.pid})")
            with quiet_and_locked(args.max_wait):
                for i in range(args.rounds):
                    rows = one_round(i, url, server_log, args, work)
                    append_records(args.results, [measured(run, row) for row in rows])
    rows = [r.measurement for r in runs_newest_first(read_records(args.results))[0]]
    write_markdown(args.results)
    checks(rows)


def main(argv: list[str] | None = None) -> None:
    parser_ = parser()
    args = parser_.parse_args(argv)
    if args.render:
        write_markdown(args.results)
        return
    if not args.guidellm.is_file():
        parser_.error(f"no guidellm at {args.guidellm}; make one: {MAKE_GUIDELLM}")
    if args.rounds < 2:
        parser_.error("--rounds must be at least 2: each tool needs a spread")
    args.threads = args.threads or max(1, (os.cpu_count() or 1) - 1)
    from quantlab.util.signals import exit_on_sigterm

    exit_on_sigterm()  # SIGTERM unwinds like Ctrl-C, so the server's and GuideLLM's groups are killed
    measure(args, " ".join(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
