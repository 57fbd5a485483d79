"""What the recipe-driven sweeps share: each is a recipe in benchmarks/sweeps/recipes/ run by quantlab's one runner
(`quantlab.sweep.runner.run_recipe`, the same as `quantlab run`: artifacts reused while their request matches,
resumable, the report written next to the results file), followed by the sweep's own checks printed as
PASS/FAIL/INFO lines. Options: --results, --work-dir, --recipe (another recipe with the same cell names) and
--set KEY=VALUE (a bench setting over the recipe's, as `quantlab run --KEY VALUE` would)."""

from __future__ import annotations

import argparse
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "sweeps" / "recipes"


def parser(recipe: str, results: str, doc: str) -> argparse.ArgumentParser:
    """The sweeps' common options, defaulting to `recipe` (a name in RECIPES) and the committed `results`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=RECIPES / f"{recipe}.yaml")
    parser.add_argument("--results", type=Path, default=Path(results))
    parser.add_argument("--work-dir", type=Path, default=None, help="default: <quantlab cache>/runs/<recipe name>")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a bench setting override")
    return parser


def overrides(items: list[str]) -> dict:
    """`--set KEY=VALUE` items as bench settings, each VALUE read as YAML (`[1,8]`, `false`, `4096`)."""
    import yaml

    settings = {}
    for item in items:
        key, _, value = item.partition("=")
        settings[key.replace("-", "_")] = yaml.safe_load(value)
    return settings


def run_sweep(recipe: str, results: str, doc: str, argv: list[str] | None = None) -> dict:
    """Parse the common options, run the recipe, print its report; cell name → this run's in-process record (and
    the served ones under `name@load`)."""
    args = parser(recipe, results, doc).parse_args(argv)
    from quantlab.sweep.runner import run_recipe

    done = run_recipe(
        args.recipe,
        results=args.results,
        work_dir=args.work_dir,
        overrides=overrides(args.set),
        progress=lambda msg: print(f"  {msg}", flush=True),
    )
    print(done.results.with_suffix(".md").read_text(encoding="utf-8"))
    return {name if stage == "bench" else f"{name}@{stage}": r for (_, name, stage), r in done.records.items()}
