"""The scale probe: how quantlab's own memory and time grow with the model.

For a Llama-3.2-1B-shaped model (1.24B parameters, vocabulary 128256, tied embeddings; random bf16 weights built
here, since memory and time do not depend on the weights' values) and the default model (SmolLM2-135M), every
step is a fresh child process of the real CLI, measured from outside (`benchmarks.lib.child`): wall seconds, peak
RSS (`os.wait4`'s `ru_maxrss`: the child or any one process it waited for) and that peak over the bf16 model's
weight bytes. Steps: `quantize` none bf16 (the baseline), rtn w4, gptq w4 and awq w4 (llm-compressor, 16 × 256
calibration tokens), gguf Q4_K_M with an importance matrix (same calibration), bnb nf4; `reference` of the
baseline; scoring the baseline once with no reference (`bench` quality-only, the comparator for the reference's
cost); `load` of each artifact alone through quantlab's runtime (a cell's own load footprint); `bench` of each
cell against the reference file (quality on 2048 tokens at ctx 512, speed at batch 1).

Targets (checked PASS/FAIL, the rest INFO): a bench of one cell with a reference file peaks at ≤ that cell's load
footprint + 1 GB; a calibrated quantize (gptq, awq) peaks at ≤ 1.5 × the bf16 weight bytes; making the reference
costs no more (wall, peak RSS) than scoring the baseline once, within the host's noise (`--tolerance`).

Records (`BenchRecord.measurement`): model, step, cell, command, returncode, wall_s, peak_rss_bytes,
bf16_bytes, rss_over_bf16, load_footprint_bytes (bench steps), loadavg_before, loadavg_after, phases (the
largest RSS sampled while each progress line was the child's last, bytes, in order), tail (failed steps).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from benchmarks.lib.child import ChildRun, phase_peaks, run_child
from benchmarks.lib.console import check, log
from benchmarks.lib.records import BenchRecord, append_records, measured, read_records, start_run
from benchmarks.lib.scale_report import GB, QUANTIZE, gb, latest, render, table, verdicts

BENCHMARK = "benchmarks.crosschecks.scale_probe"
REPO = Path(__file__).resolve().parents[2]
STEPS = (*QUANTIZE, "reference", "score-baseline", "load", "bench")
CALIBRATION = ["--calib-dataset", "embedded", "--calib-samples", "16", "--calib-seq-len", "256"]
STREAM = ["--dataset", "embedded", "--max-tokens", "2048", "--ctx", "512", "--device", "cpu"]
SPEED = ["--batch-sizes", "1", "--prompt-tokens", "128", "--new-tokens", "16", "--warmup", "1", "--repeats", "1"]


def quantize_args(cell: str, group: int) -> list[str]:
    ints = ["--bits", "4", "--group-size", str(group)]
    return {
        "none": ["--method", "none", "--dtype", "bf16"],
        "rtn": ["--method", "rtn", *ints],
        "gptq": ["--method", "gptq", *ints, *CALIBRATION],
        "awq": ["--method", "awq", *ints, *CALIBRATION],
        "gguf": ["--method", "gguf", "--scheme", "Q4_K_M", "--imatrix", *CALIBRATION],
        "bnb": ["--method", "bnb", "--scheme", "nf4"],
    }[cell]


def cli() -> list[str]:
    """The real `quantlab` console script beside this interpreter (else the same entry point as a module)."""
    script = Path(sys.executable).parent / "quantlab"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "quantlab.cli"]


def child_env(work: Path) -> dict[str, str]:
    """This tree's quantlab and benchmarks first on the path; references in the probe's own folder."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "QUANTLAB_REFERENCES": str(work / "references")}


def phase_of(line: str) -> str:
    """A progress line as a phase name: its clock time dropped, numbers folded (window 3/4 → window N/N)."""
    text = re.sub(r"^\d\d:\d\d:\d\d\s+", "", line.strip())
    return re.sub(r"\d+(\.\d+)?", "N", text)[:90]


def build_model(work: Path) -> Path:
    """The Llama-3.2-1B-shaped random model, built once in a child process (its 2.5 GB never sit in this one)."""
    out = work / "llama-3.2-1b-random"
    if (out / "config.json").is_file():
        return out
    from quantlab.default_model import ensure_default_model

    tokenizer = ensure_default_model(log=lambda _: None)
    code = (
        "from pathlib import Path; from benchmarks.lib.random_model import build_random_model; "
        f"print(build_random_model('llama-3.2-1b', Path({str(tokenizer)!r}), Path({str(out)!r}), 'cpu'))"
    )
    run = run_child([sys.executable, "-c", code], env=child_env(work), cwd=REPO)
    if run.returncode != 0:
        raise SystemExit(f"building the 1B-shaped model failed:\n{run.tail()}")
    log(f"built {out}: {run.output[-1] if run.output else ''}")
    return out


class Probe:
    """One model's steps, each appended as a record as soon as it ends (a killed run keeps what it finished)."""

    def __init__(self, name: str, model: str, group: int, work: Path, results: Path, run: BenchRecord) -> None:
        self.name, self.model, self.group, self.results, self.run = name, model, group, results, run
        self.work = work / name
        self.env = child_env(work)
        self.reference: Path | None = None
        self.load_bytes: dict[str, int] = {}

    def artifact(self, cell: str) -> Path:
        return self.work / cell

    def bf16_bytes(self) -> int:
        manifest = json.loads((self.artifact("none") / "quantlab.json").read_text(encoding="utf-8"))
        return int(manifest["weight_bytes"])

    def step(self, step: str, cell: str, command: list[str]) -> ChildRun:
        log(f"{self.name}: {step} {cell} ...")
        run = run_child(command, env=self.env, cwd=REPO)
        bf16 = self.bf16_bytes() if (self.artifact("none") / "quantlab.json").is_file() else 0
        peaks = phase_peaks(run, phase_of)
        measurement = {
            "model": self.name,
            "step": step,
            "cell": cell,
            "command": " ".join(command).replace(str(REPO) + "/", ""),
            "returncode": run.returncode,
            "wall_s": run.wall_s,
            "peak_rss_bytes": run.peak_rss,
            "bf16_bytes": bf16,
            "rss_over_bf16": round(run.peak_rss / bf16, 3) if bf16 else None,
            "load_footprint_bytes": self.load_bytes.get(cell) if step == "bench" else None,
            "loadavg_before": list(run.loadavg_before),
            "loadavg_after": list(run.loadavg_after),
            "phases": [[phase, peak] for phase, peak in peaks.items()],
            "tail": run.tail() if run.returncode != 0 else "",
        }
        append_records(self.results, [measured(self.run, measurement)])
        # the whole sampled timeline beside the artifacts, for a closer look than the per-phase peaks
        timeline = self.work / f"timeline-{step}-{cell}.json"
        timeline.write_text(json.dumps({"output": run.output, "timeline": run.timeline}), encoding="utf-8")
        state = "ok" if run.returncode == 0 else f"FAILED (exit {run.returncode}):\n{run.tail()}"
        log(f"{self.name}: {step} {cell}: {run.wall_s} s, peak {run.peak_rss / GB:.2f} GB, {state}")
        return run

    def quantize(self, cell: str) -> None:
        args = quantize_args(cell, self.group)
        out = ["--out", str(self.artifact(cell)), "--force"]
        self.step("quantize", cell, [*cli(), "quantize", self.model, *args, *out])

    def make_reference(self) -> None:
        # `quantlab reference` loads nothing when the cache holds the file: remove it, so the step makes it
        for old in self.baseline_references():
            old.unlink()
        run = self.step("reference", "none", [*cli(), "reference", str(self.artifact("none")), *STREAM])
        lines = [line for line in run.output if line.endswith(".safetensors") and Path(line).is_file()]
        self.reference = Path(lines[-1]) if lines else None

    def find_reference(self) -> Path | None:
        """The reference made by this run, else (a run of later steps only) the newest one of this baseline."""
        if self.reference is None:
            mine = self.baseline_references()
            self.reference = mine[-1] if mine else None
        return self.reference

    def baseline_references(self) -> list[Path]:
        """The references cache's files made from this model's baseline, oldest first."""
        from quantlab.artifact import load_artifact

        if not (self.artifact("none") / "quantlab.json").is_file():
            return []
        digest = load_artifact(self.artifact("none")).digest
        found = sorted((self.work.parent / "references").glob("reference-*.safetensors"), key=os.path.getmtime)
        return [p for p in found if _baseline_digest(p) == digest]

    def score_baseline(self) -> None:
        out = ["--results", str(self.work / "bench.jsonl")]
        self.step("score-baseline", "none", [*cli(), "bench", str(self.artifact("none")), "--no-speed", *STREAM, *out])

    def load(self, cell: str) -> None:
        code = [sys.executable, "-m", BENCHMARK, "--load-only", str(self.artifact(cell))]
        run = self.step("load", cell, code)
        if run.returncode == 0:
            self.load_bytes[cell] = run.peak_rss

    def bench(self, cell: str) -> None:
        reference = self.find_reference()
        if reference is None:
            log(f"{self.name}: bench {cell} skipped: no reference of the baseline (run the reference step)")
            return
        out = ["--results", str(self.work / "bench.jsonl")]
        command = [*cli(), "bench", str(self.artifact(cell)), "--baseline", str(reference), *STREAM, *SPEED, *out]
        self.step("bench", cell, command)


def _baseline_digest(path: Path) -> str | None:
    from quantlab.errors import ReferenceFileError
    from quantlab.reference import Reference

    try:
        return Reference.open(path).header.baseline_digest
    except ReferenceFileError:
        return None


def run_model(probe: Probe, steps: list[str], cells: list[str]) -> None:
    for cell in QUANTIZE:
        if cell in steps:
            probe.quantize(cell)
    if "reference" in steps:
        probe.make_reference()
    if "score-baseline" in steps:
        probe.score_baseline()
    present = [c for c in QUANTIZE if c in cells and (probe.artifact(c) / "quantlab.json").is_file()]
    if "load" in steps or "bench" in steps:
        for cell in present:
            probe.load(cell)
    for cell in present if "bench" in steps else []:
        if cell != "none":
            probe.bench(cell)


def load_only(path: str) -> None:
    """The `load` step's child: open one artifact through quantlab's runtime as a bench's quality pass does (the
    transformers runtime's first forward included), then close it."""
    from quantlab.artifact import load_artifact
    from quantlab.runtimes import LoadRequest, select_runtime

    artifact = load_artifact(path)
    runtime = select_runtime(artifact)
    session = runtime.load_as(artifact, LoadRequest("cpu"))
    print(f"loaded {artifact.path.name} with {runtime.name}: kernel {session.describe().kernel}", flush=True)
    session.close()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m {BENCHMARK}",
        description="How quantlab's own peak memory and wall time grow with the model: a Llama-3.2-1B-shaped "
        "random model and the default model through quantize (none bf16, rtn/gptq/awq w4, gguf Q4_K_M + imatrix, "
        "bnb nf4), reference, scoring the baseline once, load and bench, each a fresh CLI process.",
    )
    parser.add_argument("--model", choices=("1b", "default", "both"), default="both")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {','.join(STEPS)}")
    parser.add_argument("--cells", default=",".join(QUANTIZE), help="the artifacts the load and bench steps take")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/quantlab-scale-probe"))
    parser.add_argument("--results", type=Path, default=REPO / "results" / "scale-probe.ndjson")
    parser.add_argument("--tolerance", type=float, default=0.1, help="noise allowed on the reference's cost")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the records")
    parser.add_argument("--reason", default="", help="why steps are absent from the records, said in the .md")
    parser.add_argument("--load-only", metavar="ARTIFACT", help="internal: the load step's child process")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.load_only:
        load_only(args.load_only)
        return
    md = args.results.with_suffix(".md")
    if not args.render:
        steps = [s.strip() for s in args.steps.split(",") if s.strip()]
        unknown = set(steps) - set(STEPS)
        if unknown:
            raise SystemExit(f"unknown steps: {', '.join(sorted(unknown))}; choose from {', '.join(STEPS)}")
        probe_models(args, steps)
    newest = latest(read_records(args.results))
    md.write_text(render(newest, args.tolerance, args.reason), encoding="utf-8")
    for record, target, ok in verdicts(newest, args.tolerance):
        if target:
            m = record.measurement
            said = f"peak {gb(m['peak_rss_bytes'])} GB, {m['wall_s']} s; {target}"
            check(ok, f"{m['step']} {m['cell']} ({m['model']}): {said}")
    print("\n".join(table(verdicts(newest, args.tolerance))))
    log(f"wrote {md}")


def probe_models(args: argparse.Namespace, steps: list[str]) -> None:
    from quantlab.env import library_versions

    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    settings = {
        "command": " ".join(["python -m", BENCHMARK, *(sys.argv[1:] if __name__ == "__main__" else [])]),
        "cpu_model": cpu_model(),
        "steps": {"calibration": " ".join(CALIBRATION), "stream": " ".join(STREAM), "speed": " ".join(SPEED)},
        "asked": steps,
    }
    run = start_run(BENCHMARK, settings, tools=library_versions())
    models = {"default": ("default", 64), "1b": (None, 128)}
    for name in ("default", "1b") if args.model == "both" else (args.model,):
        model, group = models[name]
        model = model or str(build_model(work))
        cells = [c.strip() for c in args.cells.split(",") if c.strip()]
        run_model(Probe(name, model, group, work, args.results, run), steps, cells)


if __name__ == "__main__":
    main()
