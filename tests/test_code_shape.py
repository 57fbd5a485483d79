"""The code stays small enough to read: no module in quantlab/ over 350 lines, no function over 60 lines (a
typer command's signature, one line per option, does not count; its body does)."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO

MAX_FILE_LINES = 350
MAX_FUNCTION_LINES = 60
SOURCES = sorted((REPO / "quantlab").rglob("*.py"))


def _is_command(node: ast.FunctionDef) -> bool:
    return any("command" in ast.unparse(d) or "options" in ast.unparse(d) for d in node.decorator_list)


def _function_lengths(path) -> dict[str, int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lengths = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = node.body[0].lineno if _is_command(node) else node.lineno
            lengths[f"{node.name}:{node.lineno}"] = node.end_lineno - start + 1
    return lengths


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_module_and_function_sizes(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_FILE_LINES, f"{lines} lines"
    long = {name: n for name, n in _function_lengths(path).items() if n > MAX_FUNCTION_LINES}
    assert not long, long
