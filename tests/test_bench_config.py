"""One bench configuration: each default is written once (quantlab.bench.config.BenchConfig) and reaches the CLI's
help, a recipe that does not set the key, and the demo's recipe run (the last in tests/test_slow_default_model.py);
the layers merge CLI > recipe > defaults; a setting of the other bench mode is refused."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager

import pytest

from quantlab.bench.config import BenchConfig
from quantlab.sweep.recipe import load_recipe

from .conftest import REPO, run_cli

MINIMAL = """
name: t
models: [{id: default}]
methods:
  - {name: w4, method: rtn, bits: 4, group_size: 64}
"""

# Changes one default the way a developer would (the Field's default), then runs the CLI with the given arguments.
PATCHED_CLI = """
import sys
from quantlab.bench.config import BenchConfig
BenchConfig.model_fields[sys.argv[1]].default = int(sys.argv[2])
BenchConfig.model_rebuild(force=True)
sys.argv = ["quantlab", *sys.argv[3:]]
from quantlab.cli import main
main()
"""


def run_with_default(name: str, value: int, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PATCHED_CLI, name, str(value), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def bench_default(name: str, value):
    info = BenchConfig.model_fields[name]
    old, info.default = info.default, value
    BenchConfig.model_rebuild(force=True)
    try:
        yield
    finally:
        info.default = old
        BenchConfig.model_rebuild(force=True)


def test_a_changed_default_shows_in_bench_help():
    proc = run_with_default("prompt_tokens", 77, "bench", "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "Default: 77." in text and "Default: 128." not in text


def test_a_changed_default_reaches_a_recipe_without_the_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL + "bench: {ctx: 256}\n")
    with bench_default("prompt_tokens", 77):
        config = load_recipe(path).bench_config()
    assert config.prompt_tokens == 77 and config.ctx == 256
    assert load_recipe(path).bench_config().prompt_tokens == 128  # restored


def test_cli_over_recipe_over_defaults(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL + "bench: {ctx: 256, repeats: 5}\n")
    recipe = load_recipe(path)
    config = recipe.bench_config({"ctx": 128})
    assert (config.ctx, config.repeats, config.max_tokens) == (128, 5, BenchConfig().max_tokens)


def test_the_recipe_section_is_the_bench_config_less_the_rig_and_cell_keys():
    from quantlab.sweep.recipe import RecipeBench

    fields = set(RecipeBench.model_fields) - {"load_cells"}
    assert fields == set(BenchConfig.model_fields) - {"rig", "rigs_file", "price_per_hour", "tensor_parallel"}
    for name in fields:  # same type, bounds and help
        assert RecipeBench.model_fields[name].description == BenchConfig.model_fields[name].description
        assert RecipeBench.model_fields[name].metadata == BenchConfig.model_fields[name].metadata


def test_an_override_that_breaks_the_merged_settings_fails_before_any_work(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL + "bench: {max_tokens: 1024}\n")
    proc = run_cli("run", str(path), "--ctx", "2048", "--work-dir", str(tmp_path / "w"))
    assert proc.returncode == 1 and "--max-tokens 1024 is shorter than one window of --ctx 2048" in proc.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--load", "--ctx", "256"], "--ctx measure(s) in-process runs, not --load"),
        (["--concurrency", "1,2"], "--concurrency only apply with --load"),
        (["--batch-sizes", "1,x"], "--batch-sizes takes comma-separated values"),
        (["--repeats", "0"], "--repeats: Input should be greater than or equal to 1"),
    ],
)
def test_bench_refuses_settings_it_would_not_use(args, needle, tmp_path):
    proc = run_cli("bench", str(tmp_path / "nothing"), *args)
    assert proc.returncode != 0 and needle in " ".join(proc.stderr.split()), proc.stderr


def test_demo_recipe_is_shipped_and_valid():
    recipe = load_recipe(REPO / "recipes" / "demo.yaml")
    assert recipe.name == "demo" and len(recipe.methods) == 6 and recipe.baseline.name == "none-fp32"
