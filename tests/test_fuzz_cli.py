"""The fuzz properties end to end, through real `quantlab` processes: a few malformed inputs per family (drawn by
the same strategies, derandomized, kept to those the library refuses) exit 1 with the library's one error line and
write nothing; a torn results line is a warning; option values click cannot parse are its usage error (exit 2).
Each process costs a second or more, so the many-example properties run in-process (test_fuzz_inputs.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests import fuzz_gguf as fg
from tests import fuzz_properties as fp
from tests.fuzz_commands import USAGE, quantlab, run_checked
from tests.fuzz_strategies import fuzz_settings, json_documents, yaml_documents

FEW = fuzz_settings(fixed=2)  # processes per family and command


def _message(call) -> str:
    try:
        call()
    except fp.QuantlabError as exc:
        return str(exc)
    raise AssertionError("the library accepted it")


def _plain(message: str) -> bool:
    """Rich reads `[...]` in a message as markup (test_markup_in_a_message_is_printed_as_text): kept apart."""
    return "[" not in message and "]" not in message


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A valid artifact without weights: bench gets past every check of options and inputs, then fails at the model."""
    path = tmp_path_factory.mktemp("cli-artifact") / "art"
    return path, fp.make_artifact(path)


@FEW
@given(data=yaml_documents(fp.VALID_RECIPE, keys=fp.RECIPE_KEYS))
def test_recipes_dry_run(tmp_path_factory, data):
    from quantlab.sweep.recipe import load_recipe

    folder = fp.recipe_folder(tmp_path_factory.mktemp("cli-recipe"))
    assume(fp.recipe_outcome(folder, data) == fp.ERROR)
    message = _message(lambda: load_recipe(folder / "recipe.yaml"))
    assume(_plain(message))
    args = ["run", str(folder / "recipe.yaml"), "--dry-run", "--results", "out/r.jsonl", "--work-dir", "work"]
    run_checked(args, folder, library=fp.ERROR, message=message)


@FEW
@given(data=st.data(), command=st.sampled_from(["bench", "fit", "serve"]))
def test_manifests(artifact, tmp_path_factory, data, command):
    from quantlab.artifact import load_artifact

    _, manifest = artifact
    folder = tmp_path_factory.mktemp("cli-manifest")
    broken = folder / "art"
    fp.make_artifact(broken)
    assume(fp.manifest_outcome(broken, data.draw(json_documents(manifest, keys=fp.MANIFEST_KEYS))) == fp.ERROR)
    message = _message(lambda: load_artifact(broken))
    assume(_plain(message))
    args = {"bench": ["bench", str(broken), "--results", "r.jsonl"], "fit": ["fit", str(broken), "--rig", "h100"]}
    args["serve"] = ["serve", str(broken), "--port", "1"]
    run_checked(args[command], folder, library=fp.ERROR, message=message)


@FEW
@given(data=fp.results_files(), command=st.sampled_from(["report", "recommend"]))
def test_results_files(tmp_path_factory, data, command):
    from quantlab.results import read_results

    folder = tmp_path_factory.mktemp("cli-results")
    assume(fp.results_outcome(folder, data)[0] == fp.ERROR)
    message = _message(lambda: read_results(folder / "results.jsonl", warn=lambda _: None))
    assume(_plain(message))
    file = str(folder / "results.jsonl")
    args = ["report", file, "--out", "report.md"] if command == "report" else ["recommend", file, "--rig", "cpu"]
    run_checked(args, folder, library=fp.ERROR, message=message)


def test_a_torn_last_line_is_a_warning_for_recommend(tmp_path):
    lines = [json.dumps(r) for r in fp.seed_records()[:1]]
    (tmp_path / "r.jsonl").write_text(lines[0] + "\n" + lines[0][:100], encoding="utf-8")
    proc = quantlab("recommend", "r.jsonl", "--rig", "cpu", cwd=tmp_path)
    warnings = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 0 and len(warnings) == 1 and warnings[0].startswith("warning: "), proc.stderr
    assert "line 2: skipped, cut short" in warnings[0]


@pytest.fixture(scope="module")
def gguf_artifacts(tmp_path_factory):
    """The tiny GGUF as an artifact with a tokenizer (bench gets as far as llama.cpp opening it): a GGUF whose
    magic is damaged, and one whose vocabulary repeats a token (same size, one byte changed)."""
    if fg.tools_tree() is None or not fg.llama_built():
        pytest.skip("llama.cpp's tree or quantlab's build of it is not here")
    root = tmp_path_factory.mktemp("cli-gguf")
    fg.write_tiny_gguf(root / "tiny.gguf")
    valid = (root / "tiny.gguf").read_bytes()
    tokenizer = fg.tokenizer_files()
    made = {"magic": b"GGUX" + valid[4:], "token": fg.duplicated_token(valid)}
    for name, data in made.items():
        fp.make_artifact(root / name, data, tokenizer)
    return root


BENCH_SMALL = ["--dataset", "embedded", "--ctx", "64", "--max-tokens", "128", "--results", "r.jsonl"]


def test_a_gguf_with_a_damaged_header_is_one_line_at_bench(gguf_artifacts):
    run_checked(["bench", "magic", *BENCH_SMALL], gguf_artifacts, library=fp.ERROR)


def test_a_gguf_with_a_repeated_token_is_one_line_at_bench(gguf_artifacts):
    run_checked(["bench", "token", *BENCH_SMALL], gguf_artifacts, library=fp.ERROR)


BAD_OPTIONS = [
    (["bench", "ART", "--batch-sizes", "1,x"], fp.ERROR),
    (["bench", "ART", "--batch-sizes", ","], fp.ERROR),
    (["bench", "ART", "--price-per-hour", "nan"], fp.ERROR),
    (["bench", "ART", "--price-per-hour", "inf"], fp.ERROR),
    (["bench", "ART", "--load", "--slo", "ttft_ms=inf"], fp.ERROR),
    (["bench", "ART", "--load", "--concurrency", "0,4"], fp.ERROR),
    (["bench", "ART", "--max-tokens", "abc"], USAGE),
    (["bench", "ART", "--dataset", "data.jsonl"], fp.ERROR),
    (["bench", "ART", "--rig", "box", "--rigs-file", "rigs.yaml"], fp.ERROR),
    (["quantize", "default", "--method", "rtn", "--bits", "3", "--out", "q"], fp.ERROR),
    (["quantize", "default", "--method", "gguf", "--scheme", "Q9_Z", "--out", "q"], fp.ERROR),
    (["quantize", "default", "--method", "rtn", "--group-size", "abc", "--out", "q"], USAGE),
    (["fit", "default", "--rigs-file", "rigs.yaml"], fp.ERROR),
]


@pytest.mark.parametrize(("args", "expected"), BAD_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_option_values(artifact, tmp_path, args, expected):
    (tmp_path / "data.jsonl").write_text('{"text": "fine"}\n[1, 2]\n', encoding="utf-8")
    (tmp_path / "rigs.yaml").write_text("rigs: [{name: box, description: d, device: cpu, price_per_hour: .inf}]\n")
    args = [str(artifact[0]) if a == "ART" else a for a in args]
    assert run_checked([*args, "--results", "r.jsonl"] if args[0] == "bench" else args, tmp_path, library=fp.ERROR) == (
        expected
    )


def test_fit_weight_bits_nan(tmp_path):
    config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 256}  # fmt: skip
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    run_checked(["fit", "model", "--rig", "h100", "--weight-bits", "nan"], tmp_path, library=fp.ERROR)


def test_report_format_is_one_error_line(tmp_path):
    (tmp_path / "r.jsonl").write_text(json.dumps(fp.seed_records()[0]) + "\n", encoding="utf-8")
    assert run_checked(["report", "r.jsonl", "--format", "pdf"], tmp_path, library=fp.ERROR) == fp.ERROR


def test_markup_in_a_message_is_printed_as_text(tmp_path):
    assert run_checked(["report", "[/x].jsonl"], tmp_path, library=fp.ERROR) == fp.ERROR
