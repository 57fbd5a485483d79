"""Layering: the package's modules form one order, each importing only what lies below it; reading results needs
none of the measuring stack; the CLI starts without torch.

The order is read from the source (every `import`, at module level or inside a function, is an arrow), so a new
upward arrow or an import cycle fails here, naming the modules, before it fails anyone at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import REPO

# Bottom to top. A unit (a top-level module, or a subpackage with everything in it) may import itself and the units
# before it, nothing after it. The results schema sits just above the one error family: every layer writes or
# reads records, and the schema needs nothing of theirs.
ORDER = (
    "quantlab.errors",  # the failure families the CLI reports as one line; imports nothing
    "quantlab.results",  # the schema: records, their files
    "quantlab.util",  # files written whole, locks, pip download, signals (standard library only)
    "quantlab.paths",
    "quantlab.env",  # library versions, host facts
    "quantlab.yamlfile",
    "quantlab.spec",  # what to quantize to
    "quantlab.corpus",  # text and token streams
    "quantlab.reference",  # the baseline's log-probabilities on a stream, as a file
    "quantlab.rigs",
    "quantlab.default_model",
    "quantlab.models",  # source models
    "quantlab.artifact",  # the manifest, all-or-nothing artifact directories
    "quantlab.calibration",
    "quantlab.compat",
    "quantlab.llamacpp",  # llama.cpp's tree, tools and their outputs
    "quantlab.methods",  # backends and what they declare
    "quantlab.quantizer",
    "quantlab.memfit",
    "quantlab.roofline",
    "quantlab.runtimes",  # artifacts loaded in-process for measurement
    "quantlab.serve",  # artifacts behind real servers
    "quantlab.bench",  # what is measured
    "quantlab.tune",  # the best GGUF under a budget, found by measuring candidates
    "quantlab.report",  # derived from results only
    "quantlab.sweep",  # recipes and their executors
    "quantlab.cli",
    "quantlab",  # the package's own lazy entry points (quantize, MethodSpec)
)
HEAVY = ("torch", "transformers", "quantlab.runtimes", "quantlab.bench")


def _modules() -> dict[str, Path]:
    found = {}
    for path in (REPO / "quantlab").rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


@cache
def _graph() -> dict[str, set[str]]:
    """Module → the quantlab modules it imports (a name imported from a package that is a submodule counts as
    that submodule; anything else as the package)."""
    modules = _modules()
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                }
        resolved = set()
        for target in (t for t in targets if t == "quantlab" or t.startswith("quantlab.")):
            while target not in modules:
                target = target.rpartition(".")[0]
            resolved.add(target)
        edges[name] = resolved - {name}
    return edges


def _unit(module: str) -> str:
    return next(u for u in sorted(ORDER, key=len, reverse=True) if module == u or module.startswith(u + "."))


def test_every_module_has_a_place_in_the_order():
    assert {m for m in _modules() if _unit(m) == "quantlab" and m != "quantlab"} == set()


def test_no_module_imports_a_layer_above_its_own():
    rank = {unit: i for i, unit in enumerate(ORDER)}
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if rank[_unit(target)] > rank[_unit(module)]
    )
    assert upward == []


def test_results_imports_nothing_of_quantlab_but_itself_and_the_error_family():
    outside = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        if _unit(module) == "quantlab.results"
        for target in targets
        if _unit(target) not in ("quantlab.results", "quantlab.errors")
    )
    assert outside == []


def test_no_import_cycle():
    """Between any modules, packages' own __init__ included: each module can be understood before what uses it."""
    graph, state, cycles = _graph(), {}, []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_checks_see_an_arrow_upward(tmp_path):
    """The graph reads function-level imports too (most heavy imports are lazy)."""
    assert "quantlab.bench.run" in _graph()["quantlab.sweep.serial"]
    assert _unit("quantlab.results.io") == "quantlab.results" and _unit("quantlab.sweep.stages") == "quantlab.sweep"


def _imports(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return [m for m in proc.stdout.strip().split(",") if m]


@pytest.mark.parametrize("module", ["quantlab.results", "quantlab.report", "quantlab.util.files"])
def test_reading_results_imports_no_measuring_code(module):
    assert _imports(f"import {module}") == []


def test_results_read_a_committed_file_without_torch():
    path = REPO / "results" / "demo-cpu.jsonl"
    loaded = _imports(f"from quantlab.results import read_results\nassert read_results({str(path)!r})")
    assert loaded == []
