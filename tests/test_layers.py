"""Layering: reading results must not need the measuring stack, and the CLI must start without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ("torch", "transformers", "quantlab.runtimes", "quantlab.bench")


def _imports(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return [m for m in proc.stdout.strip().split(",") if m]


@pytest.mark.parametrize("module", ["quantlab.results", "quantlab.report", "quantlab.fsutil"])
def test_reading_results_imports_no_measuring_code(module):
    assert _imports(f"import {module}") == []


def test_results_read_a_committed_file_without_torch():
    path = REPO / "results" / "demo-cpu.jsonl"
    loaded = _imports(f"from quantlab.results import read_results\nassert read_results({str(path)!r})")
    assert loaded == []
