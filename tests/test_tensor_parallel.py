"""Cells that span several GPUs (`tensor_parallel: N`): planned against N GPUs' memory, measured only on a rig of
exactly N GPUs, handed to the engine that splits a model (vLLM), refused in one line everywhere else. Nothing
here has a GPU: what runs on one is the engine's own code, given the flags these tests check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from quantlab import memfit
from quantlab.errors import BenchError, RigError, ServeError
from quantlab.rigs import BUILTIN_RIGS
from quantlab.sweep.recipe import RecipeError, cells, load_recipe

from .conftest import REPO, error_lines, run_cli

ARCH = memfit.Architecture(
    model_type="llama",
    n_layers=80,
    n_kv_heads=8,
    head_dim=128,
    n_params=70_000_000_000,
    linear_params=68_000_000_000,
    vocab_size=128_256,
    dtype="bf16",
)


def _recipe(tmp_path: Path, methods: str, rigs: str = "[cpu]", model: str = "default") -> Path:
    path = tmp_path / "tp.yaml"
    path.write_text(
        f"name: tp\nmodels: [{{id: {json.dumps(model)}}}]\nbaseline: {{name: fp32, method: none, dtype: fp32}}\n"
        f"methods:\n{methods}rigs: {rigs}\n"
    )
    return path


def test_a_cell_is_planned_against_the_memory_of_the_gpus_it_spans():
    two = BUILTIN_RIGS["2xh100"]
    one_gpu = memfit.footprint(ARCH, rig=two, gpus=1)
    both = memfit.footprint(ARCH, rig=two, gpus=2)
    whole_rig = memfit.footprint(ARCH, rig=two)  # `quantlab fit`'s question: the whole rig
    assert one_gpu.capacity_bytes == int(80e9 * 0.9) and both.capacity_bytes == whole_rig.capacity_bytes
    assert not one_gpu.fits and both.fits  # 140 GB of 16-bit weights: two H100s, not one
    short = memfit.footprint(ARCH, weight_bits=4, rig=BUILTIN_RIGS["h100"], gpus=2)
    assert short.needed_bytes < short.capacity_bytes and not short.fits  # the memory would do; the GPUs are missing
    assert short.verdict() == "does NOT fit: spans 2 GPUs, h100 has 1"
    assert not memfit.footprint(ARCH, weight_bits=4, rig=BUILTIN_RIGS["cpu"], gpus=2).fits
    on_cpu = memfit.footprint(ARCH, weight_bits=1, rig=BUILTIN_RIGS["cpu"], gpus=1)  # a one-device cell on a CPU
    assert not on_cpu.short_of_gpus() and on_cpu.verdict().startswith(("fits: needs", "does NOT fit: needs"))


def test_the_guide_dry_run_says_on_which_rigs_each_cell_fits():
    proc = run_cli("run", str(REPO / "recipes" / "guide-llama-3.1-70b.yaml"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    serving = proc.stdout.split("quality measurement: ", 1)[0]  # the memory-fit table, not the quality one
    rows = {line.split("│")[1].strip(): line.split("│") for line in serving.splitlines() if line.startswith("│")}
    h100, two_h100, two_4090 = 5, 6, 7
    assert "tensor_parallel 2" in rows["bf16 (baseline)"][2]
    assert "does NOT fit (spans 2 GPUs, h100 has 1)" in rows["bf16 (baseline)"][h100]
    assert rows["bf16 (baseline)"][two_h100].strip() == "fits (142.4 / 144.0 GB)"  # 70B bf16 on 2×H100
    assert rows["awq-w4-g128"][h100].strip().startswith("fits")  # AWQ on 1×H100
    assert "does NOT fit" in rows["awq-w4-g128"][two_4090] and rows["awq-w4-g128-tp2"][two_4090].strip().startswith(
        "fits"
    )
    assert "across GPUs: bf16 (2 GPUs), awq-w4-g128-tp2 (2 GPUs)" in proc.stdout


def test_tensor_parallel_is_part_of_a_cell_and_not_of_its_spec(tmp_path):
    path = _recipe(
        tmp_path,
        "  - {name: w8, method: rtn, bits: 8}\n  - {name: w8-tp2, method: rtn, bits: 8, tensor_parallel: 2}\n",
    )
    by = {c.name: c for c in cells(load_recipe(path), path)}
    assert by["w8"].spec == by["w8-tp2"].spec and by["w8-tp2"].tensor_parallel == 2
    assert by["w8"].key() != by["w8-tp2"].key()  # its own records, never adopted by the single-GPU cell
    # Single-GPU keys are what they were before the field existed: demo-cpu's committed records still match.
    demo = REPO / "recipes" / "demo-cpu.yaml"
    lines = (REPO / "results" / "demo-cpu.jsonl").read_text().splitlines()
    committed = {json.loads(line)["cell"]["key"] for line in lines}
    assert {c.key() for c in cells(load_recipe(demo), demo)} <= committed


def test_two_cells_asking_for_the_same_thing_are_refused(tmp_path):
    path = _recipe(tmp_path, "  - {name: a, method: rtn, bits: 8}\n  - {name: b, method: rtn, bits: 8}\n")
    with pytest.raises(RecipeError, match="cells a and b ask for the same thing"):
        load_recipe(path)
    bench_key = _recipe(tmp_path, "  - {name: a, method: rtn, bits: 8}\nbench: {tensor_parallel: 2}\n")
    with pytest.raises(RecipeError, match="tensor_parallel"):  # a cell's key, not a recipe-wide bench setting
        load_recipe(bench_key)


def test_a_measurement_is_labelled_with_a_rig_of_exactly_its_gpus():
    from quantlab.bench.prepare import check_span

    check_span(BUILTIN_RIGS["2xh100"], 2)
    check_span(BUILTIN_RIGS["cpu"], 1)
    with pytest.raises(RigError, match="rig '2xh100' has 2 GPU"):
        check_span(BUILTIN_RIGS["2xh100"], 1)  # one GPU's speed priced as two
    with pytest.raises(RigError, match="rig 'h100' has 1 GPU"):
        check_span(BUILTIN_RIGS["h100"], 2)


def test_only_vllm_splits_a_served_model(q8):
    from quantlab.results.serving import ServingOptions
    from quantlab.serve.engines import ENGINES

    options = ServingOptions(tensor_parallel=2)
    assert options.label() == "tensor parallel 2" and ServingOptions().label() == "plain"
    plan = ENGINES["vllm"].plan(q8, port=8000, device="cuda:0", threads=4, ctx=512, options=options)
    i = plan.flags.index("--tensor-parallel-size")
    assert plan.flags[i + 1] == "2"
    assert (
        "--tensor-parallel-size" not in ENGINES["vllm"].plan(q8, port=8000, device="cuda:0", threads=4, ctx=512).flags
    )
    for name in ("llamacpp", "transformers"):
        with pytest.raises(ServeError, match="needs --engine vllm"):
            ENGINES[name].check_options(options)


def test_the_transformers_runtime_places_a_model_on_the_gpus_asked_for_only():
    from types import SimpleNamespace

    from quantlab.runtimes.placement import check_placed, placement

    assert placement("cuda:1", 1) == {"device_map": "cuda:1"}
    assert check_placed(SimpleNamespace(), "cuda:0", 1) is None
    spread = check_placed(SimpleNamespace(hf_device_map={"embed": 2, "layers.0": 2, "head": "cuda:3"}), "cuda:2", 2)
    assert spread.startswith("layers over cuda:2, cuda:3") and "not tensor parallelism" in spread
    offloaded = SimpleNamespace(hf_device_map={"embed": 0, "layers.0": 1, "head": "cpu"})
    with pytest.raises(BenchError, match=r"does not fit on GPUs \[0, 1\].*cpu"):
        check_placed(offloaded, "cuda:0", 2)


def test_bench_refuses_a_span_it_cannot_measure_in_one_line(tiny_model, tmp_path):
    from quantlab.quantizer import quantize
    from quantlab.spec import MethodSpec

    made = quantize(str(tiny_model), MethodSpec(method="rtn", bits=8, group_size=128), tmp_path / "w8")
    proc = run_cli("bench", str(made.path), "--tensor-parallel", "2", "--no-quality")
    assert proc.returncode == 1 and error_lines(proc.stderr) == [
        "error: --tensor-parallel 2 spans GPUs; this bench runs on the CPU"
    ], proc.stderr
    proc = run_cli("run", str(_recipe(tmp_path, "  - {name: a, method: rtn, bits: 8}\n")), "--tensor-parallel", "2")
    assert proc.returncode == 2 and "No such option: --tensor-parallel" in proc.stderr  # cells declare it


def test_a_run_measures_what_this_host_can_and_fails_the_cells_it_cannot(serial_run, tmp_path):
    """On this CPU host the single-device cells are benched (reusing copies of the shared run's artifacts) and
    the cell spanning 2 GPUs is made but not measured: one `error:` line per stage it skipped, exit 1."""
    recipe = serial_run.recipe.read_text().replace(
        "  - {name: w4, method: rtn, bits: 4, group_size: 64}\n",
        "  - {name: w8-tp2, method: rtn, bits: 8, group_size: 128, tensor_parallel: 2}\n",
    )
    path = tmp_path / "tp.yaml"
    path.write_text(recipe)
    results, work = tmp_path / "r.jsonl", tmp_path / "work"
    shutil.copytree(serial_run.work, work)  # a copy: the shared run's work dir is checked by other tests
    proc = run_cli("run", str(path), "--results", str(results), "--work-dir", str(work), "--no-speed", timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in error_lines(proc.stderr) if line.startswith("error: ")]
    assert len(errors) == 2 and errors[0].endswith(
        " w8-tp2 bench: --tensor-parallel 2 spans GPUs; this bench runs on the CPU"
    )
    assert errors[1].startswith("error: 1 cell stage(s) failed")
    from quantlab.results import read_results

    assert sorted(r.cell.name for r in read_results(results)) == ["fp32", "w8"]
    assert len(list(work.glob("*/w8-tp2-*/quantlab.json"))) == 1  # made: it runs elsewhere


def test_a_ray_run_reserves_each_cell_the_gpus_it_spans(tmp_path):
    from quantlab.bench.config import BenchConfig
    from quantlab.sweep import cluster
    from quantlab.sweep.ray_executor import cluster_rigs

    methods = "  - {name: a, method: rtn, bits: 8}\n  - {name: b, method: rtn, bits: 8, tensor_parallel: 2}\n"
    path = _recipe(tmp_path, methods, rigs="[h100, 2xh100]")
    recipe = load_recipe(path)
    plan = cells(recipe, path)

    def on(gpus: int) -> tuple[dict, dict]:
        nodes = [cluster.Node(node_id="n", host="h", ip="10.0.0.1", cpus=16, gpus=gpus)]
        return cluster_rigs(recipe, path, BenchConfig(), plan, nodes, cluster.RaySettings())

    usable, refused = on(2)
    assert {n: (c.rig, c.tensor_parallel, r.num_gpus) for n, (c, r) in usable.items()} == {
        1: ("h100", 1, 1.0),
        2: ("2xh100", 2, 2.0),
    }
    assert not refused
    usable, refused = on(1)
    assert list(usable) == [1] and "rig 2xh100 needs 2 GPU(s) on one node" in refused[2]
    with pytest.raises(cluster.ClusterError, match="needs 1 GPU"):
        on(0)
