"""The benchmarks stay a suite one can read and run: every script is in benchmarks/README.md, imports as a
module without running its benchmark, answers --help, imports no other script (shared code lives in
benchmarks/lib/), and keeps its functions short; the committed non-Result records match the declared schema."""

from __future__ import annotations

import ast
import contextlib
import importlib
import io

import pytest

from tests.conftest import REPO

BENCHMARKS = REPO / "benchmarks"
LIBRARY = BENCHMARKS / "lib"
SCRIPTS = sorted(p for p in BENCHMARKS.rglob("*.py") if p.name != "__init__.py" and LIBRARY not in p.parents)
MAX_FUNCTION_LINES = 60


def _module(path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def _ids(path) -> str:
    return str(path.relative_to(REPO))


def test_the_suite_has_its_scripts():
    assert {p.parent.name for p in SCRIPTS} == {"sweeps", "crosschecks", "gpu"}, [_ids(p) for p in SCRIPTS]


@pytest.mark.parametrize("path", SCRIPTS, ids=_ids)
def test_every_script_is_in_the_readme(path):
    readme = (BENCHMARKS / "README.md").read_text(encoding="utf-8")
    assert f"python -m {_module(path)}" in readme


@pytest.mark.parametrize("path", SCRIPTS, ids=_ids)
def test_every_script_imports_as_a_module_and_answers_help(path):
    """Importing runs nothing (the work is in main()), and main(["--help"]) prints the usage and exits 0 before
    any benchmark starts."""
    module = importlib.import_module(_module(path))
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_, contextlib.redirect_stdout(out):
        module.main(["--help"])
    assert exit_.value.code == 0
    assert out.getvalue().startswith("usage:")


@pytest.mark.parametrize("path", SCRIPTS, ids=_ids)
def test_no_script_imports_another(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    local = {p.stem for p in BENCHMARKS.rglob("*.py")} | {"common"}
    wrong = [m for m in imported if (m.startswith("benchmarks.") and not m.startswith("benchmarks.lib")) or m in local]
    assert not wrong, wrong


def test_no_function_over_60_lines():
    long = {}
    for path in sorted(BENCHMARKS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{_ids(path)}:{node.name}:{node.lineno}"] = lines
    assert not long, long


@pytest.mark.parametrize("path", sorted((REPO / "results").rglob("*.ndjson")), ids=_ids)
def test_committed_benchmark_records_match_the_declared_schema(path):
    from benchmarks.lib.records import read_records

    records = read_records(path)
    assert records and all(r.benchmark.startswith("benchmarks.") for r in records)
