"""Recipes: the shipped ones validate and plan offline; every mistake fails before any work, naming the file,
the key and the reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from quantlab.methods import all_backends, backend_of
from quantlab.spec import MethodSpec
from quantlab.sweep.plan import memory_plan, quality_plan
from quantlab.sweep.recipe import RecipeError, cells, load_recipe

from .conftest import REPO, run_cli

RECIPES = REPO / "recipes"

MINIMAL = """
name: t
models: [{id: default}]
methods:
  - {name: w4, method: rtn, bits: 4, group_size: 64}
  - {name: gptq, method: gptq, bits: 4, group_size: 64}
  - {name: fp8, method: fp8}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["demo-cpu", "guide-llama-3.1-8b", "guide-llama-3.1-70b"])
def test_shipped_recipes_validate(name):
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    assert recipe.name == name and recipe.methods


def table_rows(text: str) -> dict[str, list[str]]:
    """A printed table's rows by their first cell (rich's `│` separators), its columns in order."""
    return {line.split("│")[1].strip(): line.split("│") for line in text.splitlines() if line.startswith("│")}


def test_guide_70b_dry_run_flags_fp16_on_one_h100():
    proc = run_cli("run", str(RECIPES / "guide-llama-3.1-70b.yaml"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    serving, quality = proc.stdout.split("quality measurement: ", 1)
    rows = table_rows(serving)
    assert "does NOT fit (142.4 / 72.0 GB)" in rows["fp16"][5]  # the h100 column
    assert rows["awq-w4-g128"][5].strip().startswith("fits")
    assert "70.55B parameters" in proc.stdout and "would run" in proc.stdout
    # its quality measurement: the AWQ cell alone on one H100, the baseline read from its reference file
    rows = table_rows(quality)
    assert rows["awq-w4-g128"][3].strip() == "42.0 = 39.8 + 0.67 + 1.58" and rows["awq-w4-g128"][4].strip() == "1.1"
    assert rows["awq-w4-g128"][5].strip() == "fits (42.0 / 72.0 GB)"
    # made once, alone, on the baseline's own 2×H100; one H100 could not hold it, and no cell asks it to
    assert rows["bf16 → reference, 2 GPUs"][6].strip() == "fits (143.4 / 144.0 GB)"
    assert not any(label.startswith("bf16 → reference, 1") for label in rows)
    assert "never loaded beside a cell: 16.8 GB on disk (16 windows × 2047 × 128256 × 4 B" in quality


def test_guide_70b_quality_plan_numbers():
    """The AWQ cell's quality measurement fits one H100: weights + the KV of one 2048-token window + that window's
    logits (bf16 from the head, and the float32 copy `logits()` returns), by hand from the published config."""
    path = RECIPES / "guide-llama-3.1-70b.yaml"
    recipe = load_recipe(path)
    ((_, arch, rows),) = memory_plan(recipe, path)
    config = recipe.bench_config()
    by = {(r.cell.name, r.gpus): r for r in quality_plan(recipe, path, arch, rows, config)}
    assert arch.vocab_size == 128_256 and arch.dtype == "bf16" and config.ctx == 2048
    awq = by["awq-w4-g128", None]
    h100 = awq.footprints[0]
    # int4 with a 16-bit scale and a 4-bit zero per 128 weights; embeddings, head and norms in bf16
    weights = round(68_451_041_280 * (4 + 20 / 128) / 8 + (arch.n_params - 68_451_041_280) * 2)
    kv = 80 * 8 * 128 * 2 * 2 * 2048  # layers × KV heads × head dim × (K, V) × bf16, one window
    logits = 2048 * 128_256 * (2 + 4)
    assert (awq.runtime, h100.memory.weight_bytes, h100.memory.kv_bytes) == ("transformers", weights, kv)
    assert h100.logits_bytes == logits and h100.needed_bytes == weights + kv + logits == 42_014_883_840
    assert h100.memory.capacity_bytes == 72_000_000_000 and h100.fits
    # on the host: the window's float32 log-probs (the reference's rows are read a few at a time)
    assert h100.host_bytes == 2047 * 128_256 * 4
    # GGUF is scored by llama.cpp: a context of the window, one 512-token batch of float32 logits on the device
    gguf = by["gguf-q4_k_m", None].footprints[0]
    assert gguf.logits_bytes == 512 * 128_256 * 4 and gguf.memory.kv_bytes == kv


def test_guide_70b_quality_that_does_not_fit():
    """The baseline's reference is made once, on its own 2 GPUs (70B in bf16 fits 2×H100, not one H100); the FP8
    cell with its logits does not fit one H100."""
    path = RECIPES / "guide-llama-3.1-70b.yaml"
    recipe = load_recipe(path)
    ((_, arch, rows),) = memory_plan(recipe, path)
    by = {(r.cell.name, r.gpus): r for r in quality_plan(recipe, path, arch, rows, recipe.bench_config())}
    assert [gpus for name, gpus in by if name == "bf16"] == [2]
    two = by["bf16", 2].footprints
    bf16 = 2 * arch.n_params + 80 * 8 * 128 * 2 * 2 * 2048 + 2048 * 128_256 * 6
    assert two[1].needed_bytes == bf16 and two[1].fits
    assert two[0].memory.short_of_gpus() and not two[0].fits  # h100 has one GPU
    fp8 = by["fp8-dynamic", None].footprints[0]
    assert not fp8.fits and fp8.needed_bytes > fp8.memory.capacity_bytes
    assert quality_plan(recipe, path, arch, rows, recipe.bench_config({"quality": False, "tasks": []})) == []


def test_guide_8b_plan_numbers():
    path = RECIPES / "guide-llama-3.1-8b.yaml"
    ((_, arch, rows),) = memory_plan(load_recipe(path), path)
    assert arch.n_params == 8_030_261_248  # the published architecture, as tests/test_memfit.py counts it
    by = {row.cell.name: row for row in rows}
    fp16 = by["fp16"].footprints[0]
    assert fp16.rig == "h100" and fp16.fits and fp16.weight_bytes == 2 * arch.n_params
    assert by["gptq-w4-g128"].bits == pytest.approx(4.125)
    # GGUF quantizes every tensor: nominal weights = all parameters at the block format's bits
    assert by["gguf-q4_k_m"].footprints[0].weight_bytes == round(arch.n_params * 4.5 / 8)


def test_recipe_calibration_reaches_calibrated_methods_only(tmp_path):
    path = _write(tmp_path, MINIMAL + "calibration: {n_samples: 8, seq_len: 128}\n")
    by = {c.name: c.spec for c in cells(load_recipe(path), path)}
    assert by["gptq"].calibration.n_samples == 8 and by["gptq"].calibration.seq_len == 128
    assert by["w4"].calibration is None and by["fp8"].calibration is None


def test_cell_keys_follow_the_request(tmp_path):
    a = _write(tmp_path, MINIMAL)
    keys_a = {c.name: c.key() for c in cells(load_recipe(a), a)}
    b = tmp_path / "b.yaml"
    b.write_text(MINIMAL + "calibration: {n_samples: 8}\n")
    keys_b = {c.name: c.key() for c in cells(load_recipe(b), b)}
    assert keys_a["w4"] == keys_b["w4"] and keys_a["gptq"] != keys_b["gptq"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL.replace("methods:", "methds:"), "methds: Extra inputs are not permitted"),
        (MINIMAL + "bench: {ctx: many}\n", "bench.ctx: Input should be a valid integer"),
        (MINIMAL + "bench: {batch_sizes: [1], tokens: 3}\n", "bench.tokens: Extra inputs"),
        (MINIMAL.replace("method: fp8", "method: fp9"), "methods.2 (fp8): unknown method 'fp9'"),
        (MINIMAL.replace("{name: fp8, method: fp8}", "{name: fp8, method: fp8, bits: 4}"), "methods.2 (fp8):"),
        (
            MINIMAL.replace("{name: fp8, method: fp8}", "{name: g, method: gguf, scheme: Q4_K_Z}"),
            "methods.2 (g): unknown GGUF type 'Q4_K_Z'",
        ),
        (MINIMAL.replace("name: fp8,", "name: w4,"), "method names must be unique; repeated: w4"),
        (MINIMAL + "rigs: [h100, a100]\n", "rigs.1: unknown rig 'a100'"),
        (MINIMAL + "bench: {concurrency: [1, 8], load_cells: [w4, gtpq]}\n", "bench.load_cells names no cell: gtpq"),
        (MINIMAL + "bench: {concurrency: [1, 8]}\n", "bench.concurrency is set but bench.load_cells is not"),
        (MINIMAL + "bench: {ctx: 8192}\n", "bench: --max-tokens 4096 is shorter than one window of --ctx 8192"),
        (MINIMAL + "bench: {rig: h100}\n", "bench.rig: Extra inputs are not permitted"),
        (MINIMAL + "memory_fit: {kv_dtype: int3}\n", "memory_fit.kv_dtype: one of fp32, bf16, fp16, fp8"),
        (MINIMAL + "fit: {batch: 2}\n", "`fit:` is now `memory_fit:`"),
        ("name: t\nmodels: [{id: default}\n", "not valid YAML"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_mistakes_name_file_key_and_reason(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(f"recipe {path}: ") and "\n" not in message
    if expected:
        assert expected in message, message


def test_the_cli_fails_in_one_line_before_any_work(tmp_path):
    path = _write(tmp_path, MINIMAL.replace("method: fp8", "method: fp9"))
    proc = run_cli("run", str(path), "--dry-run")
    assert proc.returncode == 1 and proc.stderr.count("error:") == 1 and "unknown method 'fp9'" in proc.stderr
    proc = run_cli("run", str(_write(tmp_path, MINIMAL + "rigs: [h100]\n")))  # a GPU rig, on this CPU host
    assert proc.returncode == 1 and "none of h100 is this host" in proc.stderr and "--dry-run" in proc.stderr


def test_nominal_bits_per_format():
    """Each backend declares its bits per weight; the plan asks it, never the method's name."""
    cases = {
        MethodSpec(method="none", dtype="fp32"): (32, 32),
        MethodSpec(method="none", dtype="bf16"): (16, 16),
        MethodSpec(method="rtn", bits=4, group_size=128, symmetric=True): (4.125, 16),
        MethodSpec(method="awq", bits=4, group_size=128, symmetric=False): (4 + 20 / 128, 16),
        MethodSpec(method="gptq", bits=4, group_size=-1, symmetric=True, dtype="fp32"): (4, 32),
        MethodSpec(method="fp4", scheme="NVFP4"): (4.5, 16),
        MethodSpec(method="fp4", scheme="MXFP4A16"): (4.25, 16),
        MethodSpec(method="fp8", scheme="FP8_W8A16"): (8, 16),
        MethodSpec(method="gguf", scheme="Q8_0"): (8.5, 8.5),
        MethodSpec(method="gguf", scheme="Q6_K"): (6.5625, 6.5625),
        MethodSpec(method="bnb", scheme="nf4"): (4.5, 16),
        MethodSpec(method="bnb", scheme="int8"): (8, 16),
        MethodSpec(method="torchao", scheme="int8wo"): (8, 16),
        MethodSpec(method="torchao", scheme="int8wo", group_size=64): (8.25, 16),
        MethodSpec(method="torchao", scheme="int4wo"): (4.25, 16),
        MethodSpec(method="torchao", scheme="float8dq"): (8, 16),
    }
    for spec, (linear, other) in cases.items():
        normalized = backend_of(spec).normalize(spec)
        bits = backend_of(normalized).weight_bits(normalized)
        assert (bits.linear, bits.other) == pytest.approx((linear, other)), spec
        assert bits.counted


@pytest.mark.parametrize("backend", all_backends(), ids=lambda b: f"{b.method}/{b.name}")
def test_every_backend_declares_what_planning_needs(backend):
    """Every scheme of every backend (its default request otherwise) has bits, a device need and where it loads,
    so no format can reach the plan undeclared (the torchao recipe's dry-run once crashed on one)."""
    for scheme in backend.schemes or (None,):
        imatrix = True if backend.method == "gguf" and scheme not in ("F32", "F16", "BF16", "Q8_0") else None
        spec = backend.normalize(
            MethodSpec(method=backend.method, backend=backend.name, scheme=scheme, imatrix=imatrix)
        )
        bits = backend.weight_bits(spec)
        gguf = "llama.cpp" in backend.loads_in  # GGUF files quantize the embeddings and head too
        assert (2 <= bits.linear <= 32 and bits.other in (16, 32)) or gguf, (spec, bits)
        assert backend.device_need(spec).needs in ("any", "cuda", "fp8")
        assert backend.loads_in


COMMITTED = sorted([*RECIPES.glob("*.yaml"), *(REPO / "benchmarks" / "sweeps" / "recipes").glob("*.yaml")])


@pytest.mark.parametrize("ray", [False, True], ids=["serial", "ray"])
@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_committed_recipe_dry_runs(path, ray):
    """The dry-run of every recipe in the repository, as `quantlab run RECIPE --dry-run [--ray]` builds it (in
    this process, printed to a recording console): the plan of every cell on every rig and, with --ray, what each
    cell would reserve on a cluster."""
    from rich.console import Console

    from quantlab.sweep.runner import dry_run

    console = Console(record=True, width=200, file=open(os.devnull, "w"))  # noqa: SIM115
    for renderable in dry_run(path, ray=ray):
        console.print(renderable)
    text = console.export_text()
    assert "would run:" in text and "bits per weight:" in text
    assert ("on Ray (" in text) == ray


def test_the_torchao_recipe_dry_runs_on_ray_from_the_cli():
    """The committed recipe whose dry-run once crashed (a method the plan did not know) runs through the CLI."""
    proc = run_cli("run", str(REPO / "benchmarks/sweeps/recipes/torchao-smollm2.yaml"), "--dry-run", "--ray")
    assert proc.returncode == 0, proc.stderr
    assert "torchao-int8wo" in proc.stdout and "on Ray (" in proc.stdout
