"""What `python -m benchmarks.gpu.llamacpp_cuda` needs on a GPU machine that reaches no network, made here:

    python -m benchmarks.gpu.llamacpp_cuda_prepare .gpu      # .gpu/llama.cpp-tree and .gpu/tokenizer

- `llama.cpp-tree`: the llama.cpp tree quantlab extracted from the llama-cpp-python sdist
  (`quantlab.llamacpp.source.tree_dir`, stamp file with the commit included) without the ggml backends other than
  CPU and CUDA (ggml/src/CMakeLists.txt adds `ggml-<x>` only when its `GGML_<X>` option is on), the web UI's
  sources (the UI is built off: no npm), the server's and mtmd's tests and media, `.devops` and `ci`. The copy is
  configured once with CMake (CPU backend) to show that nothing the build reads is missing.
- `tokenizer`: the embedded default model's tokenizer (the 8B shape extends its vocab to 128256 itself).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

KEPT_BACKENDS = {"ggml-cpu", "ggml-cuda"}
DROPPED = {  # folder of the tree → entries no build step reads
    "": {".devops", "ci"},
    "tools/ui": {"src", "tests", "static", "package-lock.json"},
    "tools/server": {"tests", "bench"},
    "tools/mtmd": {"tests", "test-1.jpeg", "test-2.mp3", "test-3.mp4"},
}


def mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def copy_tree(src: Path, tree: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(src).as_posix().removeprefix(".")
        dropped = {"__pycache__"} | DROPPED.get(rel, set())
        if rel == "ggml/src":
            dropped |= {n for n in names if n.startswith("ggml-") and (src / rel / n).is_dir()} - KEPT_BACKENDS
        return dropped & set(names)

    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(src, tree, ignore=ignore, symlinks=True)


def configure(tree: Path) -> str:
    """CMake configure of the copy with quantlab's CPU arguments: a missing folder fails here in seconds."""
    from quantlab.llamacpp import build

    args, _, _ = build.plan("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            ["cmake", "-S", str(tree), "-B", tmp, "-G", "Ninja", *args], capture_output=True, text=True, check=False
        )
    lines = (proc.stdout + proc.stderr).strip().splitlines() or ["no output"]
    return "configures (CPU)" if proc.returncode == 0 else f"FAILS to configure: {lines[-1]}"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, nargs="?", default=Path(".gpu"), help="the folder to fill (default .gpu)")
    return parser


def main(argv: list[str] | None = None) -> None:
    dest = parser().parse_args(argv).dest
    from transformers import AutoTokenizer

    from quantlab.default_model import ensure_default_model
    from quantlab.llamacpp import source

    os.environ.pop("QUANTLAB_LLAMACPP_DIR", None)
    src = source.tree_dir(print)
    tree, tok = dest / "llama.cpp-tree", dest / "tokenizer"
    copy_tree(src, tree)
    AutoTokenizer.from_pretrained(ensure_default_model(print)).save_pretrained(tok)
    commit = json.loads((tree / source.STAMP).read_text()).get("commit")
    print(f"{src}: llama.cpp {commit}, {mib(src):.1f} MiB")
    print(f"{tree}: {mib(tree):.1f} MiB, {configure(tree)}")
    print(f"{tok}: {mib(tok):.1f} MiB; together {mib(tree) + mib(tok):.1f} MiB")


if __name__ == "__main__":
    main()
