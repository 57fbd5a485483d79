"""What `quantlab tune` costs on the default model at one budget, from nothing (a fresh work folder; llama.cpp's
tools already built), and whether a killed tune resumes: the command is run as a user runs it, killed (SIGKILL)
once a given number of sensitivity measurements are logged, started again, and timed to the end.

    python -m benchmarks.sweeps.tune_cost [--budget 92MB] [--kill-after 40] [--out results/tune-cost-smollm2.md]

Prints and writes each step's time from the tune's own log (conversion, importance matrix, sensitivity, artifact,
held-out check) and PASS/FAIL lines: the whole tune (both runs, the check included) within 30 minutes on this
machine; the second run measured only what the first had not (no measurement repeated, none lost but the one
cut by the kill).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.lib.console import check, log

LIMIT_S = 30 * 60
MEASURED = re.compile(r"sensitivity (\d+)/(\d+): (.+) at (\S+): KLD")


def _run(args: list[str], env: dict, kill_after: int | None) -> tuple[float, list[str]]:
    """Run the CLI; with `kill_after`, SIGKILL it once that many measurements are logged. Wall seconds, lines."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantlab.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env, start_new_session=True,
    )  # fmt: skip
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        print("   ", line.rstrip(), flush=True)
        if kill_after is not None and len([x for x in lines if MEASURED.search(x)]) >= kill_after:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    return time.monotonic() - started, lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="92MB")
    parser.add_argument("--kill-after", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("results/tune-cost-smollm2.md"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quantlab-tune-cost-") as tmp:
        work, out = Path(tmp) / "work", Path(tmp) / "artifact"
        command = ["tune", "default", "--out", str(out), "--budget", args.budget, "--calib-dataset", "embedded",
                   "--work-dir", str(work), "--results", str(Path(tmp) / "tune.jsonl")]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log(f"run 1, killed after {args.kill_after} measurements: quantlab {' '.join(command)}")
        first_s, first = _run(command, env, args.kill_after)
        log("run 2, to the end")
        second_s, second = _run(command, env, None)
        tune_log = next(work.glob("*/tune.log")).read_text().splitlines()
        stored = next(work.glob("*/sensitivity.ndjson")).read_text().splitlines()[1:]
    _report(args, first_s, second_s, first, second, tune_log, stored)


def _report(args, first_s, second_s, first, second, tune_log, stored) -> None:
    done_first = {m.group(3, 4) for m in map(MEASURED.search, first) if m}
    done_second = [m.group(3, 4) for m in map(MEASURED.search, second) if m]
    total = first_s + second_s
    lines = [
        "# What `quantlab tune` costs on the default model",
        "",
        f"`python -m benchmarks.sweeps.tune_cost --budget {args.budget} --kill-after {args.kill_after}` on "
        f"{os.cpu_count()} cores: `quantlab tune default --budget {args.budget}` from an empty work folder, killed "
        f"(SIGKILL) after {args.kill_after} sensitivity measurements, then run again to the end.",
        "",
        f"- run 1 (killed): {first_s / 60:.1f} min; run 2: {second_s / 60:.1f} min; together {total / 60:.1f} min",
        f"- measurements: {len(done_first)} in run 1, {len(done_second)} in run 2, {len(stored)} stored in all",
        "",
        "The tune's own log (both runs):",
        "",
        "```",
        *tune_log,
        "```",
    ]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text, encoding="utf-8")
    print(text)
    check(total <= LIMIT_S, f"the whole tune, held-out check included, took {total / 60:.1f} min (≤ 30)")
    check(
        not done_first & set(done_second) and len(stored) == len(done_first) + len(done_second),
        f"run 2 measured only what run 1 had not: {len(done_first & set(done_second))} repeated, "
        f"{len(stored)} stored = {len(done_first)} + {len(done_second)}",
    )


if __name__ == "__main__":
    main()
