"""The properties every input quantlab parses must keep, as functions of one input that return what happened
(`ACCEPTED`, `ERROR`, `WARNING`) or raise `Violation`: a malformed input is one `QuantlabError` whose message is a
single line naming the file, never another exception, never a multi-line message; what is accepted can be written
back and read again. Shared by the tests (which assert no Violation) and benchmarks/crosschecks/fuzz_inputs.py
(which counts outcomes); imports no pytest.
"""

from __future__ import annotations

import functools
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import yaml
from hypothesis import strategies as st

from quantlab.errors import QuantlabError
from tests.fuzz_strategies import damaged_text, json_documents

REPO = Path(__file__).resolve().parents[1]
ACCEPTED, ERROR, WARNING = "accepted", "one-line error", "warning + skip"


class Violation(AssertionError):
    """A broken property: a traceback, a non-quantlab exception, a multi-line message, or data that does not
    survive being written back."""


def one_line(exc: BaseException, *needles: str) -> None:
    """The contract of every user-facing error: one non-empty line, saying the things in `needles`."""
    message = str(exc)
    if len(message.splitlines()) != 1 or not message.strip():
        raise Violation(f"{type(exc).__name__} is not one line: {message[:500]!r}") from exc
    missing = [n for n in needles if n not in message]
    if missing:
        raise Violation(f"{type(exc).__name__} does not name {missing}: {message[:300]!r}") from exc


def guarded(call, *needles: str, expected: type[QuantlabError] = QuantlabError):
    """(ACCEPTED, value) or (ERROR, exception); any other exception is a Violation."""
    try:
        return ACCEPTED, call()
    except expected as exc:
        one_line(exc, *needles)
        return ERROR, exc
    except Exception as exc:
        raise Violation(f"{type(exc).__name__} escaped: {str(exc)[:300]!r}") from exc


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- recipes and rigs files (YAML) -----------------------------------------------------------------------------

VALID_RIGS = {
    "rigs": [
        {"name": "box", "description": "my box", "device": "cpu", "price_per_hour": 0.5, "price_note": "my bill"},
        {
            "name": "l4",
            "description": "1× L4",
            "device": "cuda",
            "gpu_match": "L4",
            "n_gpus": 1,
            "price_per_hour": 0.8,
            "price_note": "quote",
            "memory_gb": 24,
            "bandwidth_gb_s": 300,
        },
    ]
}
VALID_RECIPE = {
    "name": "fuzz",
    "description": "every section of a recipe",
    "models": [{"id": "default"}],
    "baseline": {"name": "fp32", "method": "none", "dtype": "fp32"},
    "methods": [
        {"name": "w4", "method": "rtn", "bits": 4, "group_size": 64, "symmetric": False},
        {"name": "gptq", "method": "gptq", "bits": 4, "group_size": 128, "act_order": "static", "damp": 0.01},
        {"name": "q4", "method": "gguf", "scheme": "Q4_K_M"},
        {"name": "nf4", "method": "bnb", "scheme": "nf4", "double_quant": True},
    ],
    "calibration": {"dataset": "embedded", "n_samples": 8, "seq_len": 128, "seed": 1},
    "bench": {
        "dataset": "embedded",
        "ctx": 256,
        "max_tokens": 1024,
        "batch_sizes": [1, 8],
        "load_cells": ["w4"],
        "concurrency": [1, 4],
        "slo": {"ttft_ms": 500, "tpot_ms": 50},
        "kv_cache_dtype": "q8_0",
    },
    "memory_fit": {"batch": 2, "ctx": 4096, "kv_dtype": "fp8", "utilization": 0.9},
    "rigs": ["cpu", {"name": "box", "price_per_hour": 0.3}],
    "rigs_file": "rigs.yaml",
}
RECIPE_KEYS = (
    "name", "models", "methods", "baseline", "bench", "rigs", "rigs_file", "memory_fit", "calibration", "ray",
    "method", "bits", "group_size", "scheme", "ctx", "max_tokens", "load_cells", "slo", "price_per_hour", "fit",
    "tensor_parallel", "dataset", "id", "config",
)  # fmt: skip


def recipe_folder(folder: Path) -> Path:
    """A folder holding the valid rigs file the recipe names (`rigs_file: rigs.yaml`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rigs.yaml").write_text(yaml.safe_dump(VALID_RIGS), encoding="utf-8")
    return folder


def recipe_outcome(folder: Path, data: bytes) -> str:
    from quantlab.sweep.recipe import RecipeError, load_recipe

    path = _write(folder / "recipe.yaml", data)
    return guarded(lambda: load_recipe(path), f"recipe {path}", expected=RecipeError)[0]


def rigs_outcome(folder: Path, data: bytes) -> str:
    from quantlab.errors import RigError
    from quantlab.rigs import load_rigs

    path = _write(folder / "rigs-fuzzed.yaml", data)
    outcome, rigs = guarded(lambda: load_rigs(path), f"rigs file {path}", expected=RigError)
    if outcome == ACCEPTED:
        for rig in rigs.values():  # a price a cost table can divide by, sizes that are sizes
            sane = 0 < rig.price_per_hour < float("inf") and rig.n_gpus >= 0
            if not sane or any(v is not None and not 0 < v < float("inf") for v in (rig.memory_gb, rig.bandwidth_gb_s)):
                raise Violation(f"rigs file accepted a rig no table can use: {rig!r}")
    return outcome


# --- artifact manifests (JSON) ---------------------------------------------------------------------------------


def make_artifact(folder: Path, gguf: bytes = b"GGUF" + bytes(60), extra: dict[str, bytes] | None = None) -> dict:
    """A small GGUF artifact directory: a config, the `gguf` bytes (by default no model at all: loading checks the
    manifest and the files' sizes, not the weights), `extra` files, the manifest. Its manifest as JSON."""
    from quantlab.artifact import Manifest, list_files, weight_bytes, write_manifest
    from quantlab.models import SourceModel
    from quantlab.results.gguf import GGUFRecord
    from quantlab.results.provenance import HostInfo
    from quantlab.spec import MethodSpec

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}\n')
    (folder / "model-Q8_0.gguf").write_bytes(gguf)
    for name, data in (extra or {}).items():
        (folder / name).write_bytes(data)
    files = list_files(folder)
    manifest = Manifest(
        spec=MethodSpec(method="gguf", backend="llamacpp", scheme="Q8_0", dtype="fp16"),
        format="gguf Q8_0",
        loads_in=["llama.cpp", "llama-cpp-python"],
        source=SourceModel(ref="default", kind="default", path=str(folder), content_sha256="0" * 64),
        libraries={"quantlab": "0.1.0"},
        files=files,
        weight_bytes=weight_bytes(files),
        n_params_source=1000,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        quantize_seconds=1.5,
        host=HostInfo(hostname="h", os="Linux", python="3.11", cpu="c", cpu_count=2, memory_bytes=2**30, gpus=[]),
        gguf=GGUFRecord(
            file="model-Q8_0.gguf",
            file_type="Q8_0",
            tensor_types={"Q8_0": 2, "F32": 1},
            type_bytes={"Q8_0": 60, "F32": 4},
            bits_per_weight=8.5,
            fallbacks=[],
        ),
        notes=["made by the fuzz tests"],
    )
    write_manifest(folder, manifest)
    return json.loads(manifest.model_dump_json())


MANIFEST_KEYS = ("spec", "files", "path", "bytes", "gguf", "file", "schema_version", "host", "source", "notes")


def manifest_outcome(folder: Path, data: bytes) -> str:
    """`folder` is a `make_artifact` directory; its manifest is replaced by `data`."""
    from quantlab.artifact import MANIFEST, ArtifactError, Manifest, load_artifact
    from quantlab.results.io import decode_json

    _write(folder / MANIFEST, data)
    outcome, artifact = guarded(lambda: load_artifact(folder), str(folder), expected=ArtifactError)
    if outcome == ACCEPTED:  # what quantlab accepted, quantlab can write and read back as the same artifact
        again = Manifest.model_validate(decode_json(artifact.manifest.model_dump_json()))
        if again.digest() != artifact.digest:
            raise Violation("an accepted manifest does not read back as itself once written")
    return outcome


# --- results files (JSONL) --------------------------------------------------------------------------------------

SEED_RESULTS = [("demo.jsonl", 1), ("gguf-smollm2.jsonl", 1), ("served-smollm2.jsonl", 1)]
RESULT_KEYS = ("artifact", "settings", "quality", "speed", "load", "rig", "runtime", "ppl", "digest", "levels")


@functools.cache
def seed_records() -> list[dict]:
    """Committed records of each kind (in-process, GGUF, served), as JSON objects."""
    records = []
    for name, index in SEED_RESULTS:
        lines = (REPO / "results" / name).read_text(encoding="utf-8").splitlines()
        records.append(json.loads(lines[index]))
    return records


@st.composite
def results_files(draw) -> bytes:
    """Records (each maybe mutated), joined as a results file, then maybe cut short or otherwise damaged."""
    lines = [
        draw(st.one_of(st.just(json.dumps(r).encode()), json_documents(r, keys=RESULT_KEYS)))
        for r in draw(st.lists(st.sampled_from(seed_records()), min_size=1, max_size=3))
    ]
    data = b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n"
    how = draw(st.sampled_from(["whole", "whole", "cut", "damaged", "crlf", "blank lines"]))
    if how == "cut":
        return data[: draw(st.integers(0, len(data)))]
    if how == "damaged":
        return draw(damaged_text(data.decode("utf-8", "replace"))).encode()
    if how == "crlf":
        return data.replace(b"\n", b"\r\n")
    return data.replace(b"\n", b"\n\n \n") if how == "blank lines" else data


def results_outcome(folder: Path, data: bytes) -> tuple[str, list]:
    """(outcome, records) of reading `data` as a results file; a warning is allowed only for a torn last line."""
    from quantlab.errors import ResultsError
    from quantlab.results import Result, read_results
    from quantlab.results.io import decode_json

    path = _write(folder / "results.jsonl", data)
    warned: list[str] = []
    outcome, records = guarded(lambda: read_results(path, warn=warned.append), str(path), expected=ResultsError)
    if path.read_bytes() != data:
        raise Violation("reading a results file changed it")
    if outcome == ERROR:
        return outcome, []
    if warned:
        for message in warned:
            one_line(ValueError(message), str(path), "cut short")
        if len(warned) > 1 or data.endswith(b"\n"):
            raise Violation(f"warned about a line that is not a torn last one: {warned}")
    for record in records:  # the writer (append_result) must write what the reader accepted so it reads back
        line = record.model_dump_json()
        if Result.model_validate(decode_json(line)).model_dump_json() != line:
            raise Violation("an accepted record does not read back as itself once written")
    return (WARNING if warned else ACCEPTED), records


def render_outcome(records: list) -> str:
    """What `quantlab report` and `quantlab recommend --rig cpu` do with records the reader accepted."""
    from quantlab import report
    from quantlab.report.recommend import explain, recommend

    def render():
        chosen = report.select(records, latest_only=True)
        for fmt in ("md", "csv"):
            report.FORMATS[fmt](chosen)
        explain(recommend(report.select(records), rig="cpu", min_quality=0.0, max_memory_gb=None), rig="cpu",
                min_quality=0.0, max_memory_gb=None, at=1)  # fmt: skip

    return guarded(render)[0]


# --- dataset files (--dataset PATH) ----------------------------------------------------------------------------


def dataset_outcome(folder: Path, data: bytes, suffix: str) -> str:
    from quantlab.corpus import load_text
    from quantlab.errors import DatasetError

    path = _write(folder / f"data{suffix}", data)
    return guarded(lambda: load_text(str(path)), "dataset", expected=DatasetError)[0]


def dataset_name_outcome(name: str) -> str:
    """`--dataset NAME` where NAME is no file: a named corpus, or a one-line error."""
    from quantlab.corpus import load_text
    from quantlab.errors import DatasetError

    return guarded(lambda: load_text(name), expected=DatasetError)[0]
