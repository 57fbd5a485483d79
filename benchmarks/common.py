"""What the sweeping benchmarks share: each is a recipe in benchmarks/recipes/ run by quantlab's one runner
(`quantlab.sweep.runner.run_recipe`, the same as `quantlab run`), followed by the benchmark's own checks printed
as PASS/FAIL/INFO lines. Options: --results, --work-dir, --recipe (another recipe with the same cell names) and
--set KEY=VALUE (a bench setting over the recipe's, as `quantlab run --KEY VALUE` would)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def run(recipe: str, results: str, doc: str):
    """Parse the common options, run the recipe, print its report; cell name → this run's in-process record (and
    the served ones under `name@load`)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=HERE / "recipes" / f"{recipe}.yaml")
    parser.add_argument("--results", type=Path, default=Path(results))
    parser.add_argument("--work-dir", type=Path, default=None, help="default: <quantlab cache>/runs/<recipe name>")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a bench setting override")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.replace("-", "_")] = yaml.safe_load(value)

    from quantlab.sweep.runner import run_recipe

    done = run_recipe(
        args.recipe,
        results=args.results,
        work_dir=args.work_dir,
        overrides=overrides,
        progress=lambda msg: print(f"  {msg}", flush=True),
    )
    print(done.results.with_suffix(".md").read_text(encoding="utf-8"))
    return {name if stage == "bench" else f"{name}@{stage}": r for (_, name, stage), r in done.records.items()}


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def none_artifact(model: str, dtype: str):
    """The unquantized `model` in `dtype`, made once under <quantlab cache>/benchmarks and reused."""
    from quantlab.artifact import load_artifact
    from quantlab.errors import ArtifactError
    from quantlab.paths import cache_dir
    from quantlab.quantizer import quantize
    from quantlab.spec import MethodSpec

    out = cache_dir() / "benchmarks" / f"{model.replace('/', '_')}-{dtype}"
    try:
        return load_artifact(out)
    except ArtifactError:
        return quantize(model, MethodSpec(method="none", dtype=dtype), out, force=True)


def check(ok: bool | None, text: str) -> None:
    print(f"{'INFO' if ok is None else 'PASS' if ok else 'FAIL'} {text}")


def runs_newest_first(records: list[dict]) -> list[list[dict]]:
    """The records of a benchmark's own .ndjson file grouped by run (`run_id`), the newest run first."""
    runs: dict[str, list[dict]] = {}
    for record in records:
        runs.setdefault(record["run_id"], []).append(record)
    return sorted(runs.values(), key=lambda rs: rs[0]["timestamp"], reverse=True)
