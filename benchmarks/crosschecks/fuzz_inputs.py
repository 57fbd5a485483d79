"""The fuzz properties of tests/test_fuzz_*.py, long: many seeded examples per input family, counted.

    python -m benchmarks.crosschecks.fuzz_inputs [--examples 2000] [--seed 0] [--cli 12]
        [--results results/fuzz-inputs.ndjson]

Every family draws `--examples` inputs (some families more or fewer, see SHARE) from the strategies the tests
use (tests/fuzz_strategies.py and friends) under the `long` hypothesis profile with `--seed`, and runs the same
property on each: a malformed input is one QuantlabError line (or, for option values click cannot parse, click's
usage error), never another exception and never a dead process; a torn last results line is a warning and a skip;
what is accepted reads back the same once written. Where the tests stop at the first broken property, this counts
every outcome, so the table says how much of each family was accepted, refused in one line, or broke the property.
Then `--cli` malformed inputs per family run through real `quantlab` processes (exit code 1, one `error:` line,
nothing written). The table is printed, and written as one BenchRecord per family (settings: examples, seed,
profile; measurement: the family's counts, its seconds and what broke) to `--results`, replaced each run, with its
Markdown beside it.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

import hypothesis
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.lib.records import measured, start_run, write_records
from tests import fuzz_gguf as fg
from tests import fuzz_outputs as fo
from tests import fuzz_properties as fp
from tests.fuzz_commands import run_checked
from tests.fuzz_strategies import fuzz_settings, json_documents, nasty_text, yaml_documents

COLUMNS = [fp.ERROR, "usage error (exit 2)", fp.WARNING, fp.ACCEPTED, "traceback", "crash"]
SHARE = {"tool outputs": 3, "dataset names": 0.5, "GGUF: llama.cpp opens": 0.5}  # relative to --examples


class Family:
    """One input family: a strategy, the property that classifies each drawn input, and the tally."""

    def __init__(self, name: str, strategy, check) -> None:
        self.name, self.strategy, self.check = name, strategy, check
        self.tally: collections.Counter = collections.Counter()
        self.broken: list[dict] = []

    def run(self, examples: int, seed: int) -> None:
        @hypothesis.seed(seed)
        @fuzz_settings(fixed=examples, profile="long")
        @given(value=self.strategy)
        def each(value):
            try:
                self.tally[self.check(value)] += 1
            except fp.Violation as exc:
                kind = "crash" if "killed the process" in str(exc) else "traceback"
                self.tally[kind] += 1
                if len(self.broken) < 5:
                    self.broken.append({"kind": kind, "what": str(exc)[:300], "input": repr(value)[:300]})

        each()


def families(work: Path) -> list[Family]:
    folder = fp.recipe_folder(work / "files")
    artifact = work / "artifact"
    manifest = fp.make_artifact(artifact)
    records = fp.seed_records()
    from quantlab.bench.config import BenchConfig
    from quantlab.errors import BenchError, SpecError
    from quantlab.spec import MethodSpec

    methods = st.sampled_from(["none", "rtn", "gptq", "awq", "gguf", "fp8", "fp4", "bnb", "x"])
    method_fields = ["bits", "group_size", "scheme", "dtype", "damp", "backend", "imatrix"]
    made = [
        Family(
            "recipes (YAML)",
            yaml_documents(fp.VALID_RECIPE, fp.RECIPE_KEYS),
            lambda d: fp.recipe_outcome(folder, d),
        ),
        Family(
            "rigs files (YAML)", yaml_documents(fp.VALID_RIGS, ("rigs", "name")), lambda d: fp.rigs_outcome(folder, d)
        ),
        Family(
            "manifests (JSON)",
            json_documents(manifest, fp.MANIFEST_KEYS),
            lambda d: fp.manifest_outcome(artifact, d),
        ),
        Family("results files (JSONL)", fp.results_files(), lambda d: fp.results_outcome(folder, d)[0]),
        Family(
            "dataset files",
            st.tuples(json_documents({"text": "t"}), st.sampled_from([".jsonl", ".txt"])),
            lambda d: fp.dataset_outcome(folder, *d),
        ),
        Family("dataset names", nasty_text(), fp.dataset_name_outcome),
        Family("tool outputs", fo.tool_output(), fo.reference_outcome),
        Family("KLD base files", fo.kld_base_files(), lambda d: fo.kld_base_outcome(folder, d)),
        Family("KLD base rows", fo.kld_base_whole_files(), lambda d: fo.kld_rows_outcome(folder, d)),
        Family(
            "bench options",
            fo.option_values(list(BenchConfig.model_fields)),
            lambda v: fo.options_outcome(BenchConfig, v, BenchError),
        ),
        Family(
            "method options",
            st.tuples(methods, fo.option_values(method_fields)),
            lambda v: fo.options_outcome(MethodSpec, {"method": v[0], **v[1]}, SpecError),
        ),
    ]
    if fg.tools_tree() is not None:
        header = fg.write_tiny_gguf(work / "tiny.gguf")
        valid = (work / "tiny.gguf").read_bytes()
        tool = fg.ToolOracle()
        mutations = fg.gguf_mutations(valid, header)
        made.append(Family("GGUF: gguf-py reads", mutations, lambda d: fg.inspect_outcome(tool, folder, d)))
        if fg.llama_built():
            load = fg.LoadOracle(manifest)
            file = manifest["gguf"]["file"]
            made.append(Family("GGUF: llama.cpp opens", mutations, lambda d: fg.load_outcome(load, artifact, d, file)))
    made.append(cli_family(work, manifest, records))
    return made


def cli_family(work: Path, manifest: dict, records: list) -> Family:
    """Malformed inputs of each file family through a real `quantlab` process (the library refused each first)."""
    from quantlab.artifact import load_artifact
    from quantlab.results import read_results
    from quantlab.sweep.recipe import load_recipe

    def case(kind: str, data: bytes) -> str:
        folder = Path(tempfile.mkdtemp(dir=work))
        fp.recipe_folder(folder)
        if kind == "recipe" and fp.recipe_outcome(folder, data) == fp.ERROR:
            load, args = lambda: load_recipe(folder / "recipe.yaml"), ["run", "recipe.yaml", "--dry-run"]
        elif kind == "manifest" and fp.manifest_outcome(_fresh(folder / "art"), data) == fp.ERROR:
            load, args = lambda: load_artifact(folder / "art"), ["bench", "art", "--results", "r.jsonl"]
        elif kind == "results" and fp.results_outcome(folder, data)[0] == fp.ERROR:
            load = lambda: read_results(folder / "results.jsonl", warn=lambda _: None)  # noqa: E731
            args = ["report", "results.jsonl", "--out", "report.md"]
        else:
            hypothesis.assume(False)  # the library accepted it: a dry run or a bench would do real work
        try:
            load()
        except fp.QuantlabError as exc:
            message = str(exc).replace(str(folder) + "/", "")
        hypothesis.assume("[" not in message and "]" not in message)  # rich markup: the known console bug
        return run_checked(args, folder, library=fp.ERROR, message=message)

    kinds = st.one_of(
        st.tuples(st.just("recipe"), yaml_documents(fp.VALID_RECIPE, fp.RECIPE_KEYS)),
        st.tuples(st.just("manifest"), json_documents(manifest, fp.MANIFEST_KEYS)),
        st.tuples(st.just("results"), fp.results_files()),
    )
    return Family("quantlab CLI", kinds, lambda v: case(*v))


def _fresh(path: Path) -> Path:
    fp.make_artifact(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000, help="inputs per family (some families take more)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cli", type=int, default=12, help="malformed inputs run through real quantlab processes")
    parser.add_argument("--results", type=Path, default=Path("results/fuzz-inputs.ndjson"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here reaches for a hub: fail fast, the same everywhere
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="quantlab-fuzz-") as tmp:
        for family in families(Path(tmp)):
            count = args.cli if family.name == "quantlab CLI" else round(args.examples * SHARE.get(family.name, 1))
            began = time.perf_counter()
            family.run(count, args.seed)
            row = {"family": family.name, "inputs": sum(family.tally.values())}
            row |= {c: family.tally[c] for c in COLUMNS}
            rows.append(row | {"seconds": round(time.perf_counter() - began, 1), "broken": family.broken})
            print(f"{family.name}: {dict(family.tally)} in {rows[-1]['seconds']} s", flush=True)
    text = table(rows)
    print(text)
    write(args, rows, text, sys.argv[1:] if argv is None else argv)


def table(rows: list[dict]) -> str:
    head = ["family", "inputs", *COLUMNS, "s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[k]) for k in ["family", "inputs", *COLUMNS, "seconds"]) + " |")
    total = {c: sum(r[c] for r in rows) for c in ["inputs", *COLUMNS]}
    lines.append("| **all** | " + " | ".join(str(total[c]) for c in ["inputs", *COLUMNS]) + " | |")
    return "\n".join(lines)


def write(args, rows: list[dict], text: str, argv: list[str]) -> None:
    settings = {"examples_per_family": args.examples, "seed": args.seed, "cli": args.cli, "profile": "long"}
    run = start_run("benchmarks.crosschecks.fuzz_inputs", settings, tools={"hypothesis": hypothesis.__version__})
    write_records(args.results, [measured(run, row) for row in rows])
    command = " ".join(["python -m benchmarks.crosschecks.fuzz_inputs", *argv])
    markdown = (
        "# Fuzzing every input quantlab reads\n\n"
        f"Generated by `{command}` into `{args.results.name}`; never typed in. "
        f"{run.timestamp} on {run.host.cpu} ({run.host.cpu_count} cores), hypothesis {hypothesis.__version__}, "
        f"profile long, seed {args.seed}.\n\n{text}\n"
    )
    args.results.with_suffix(".md").write_text(markdown, encoding="utf-8")
    print(f"wrote {args.results} and {args.results.with_suffix('.md')}")


if __name__ == "__main__":
    main()
