"""The llama.cpp steps quantlab runs, each in a subprocess: convert (llama.cpp's converter), inspect and
imatrix reading (llama.cpp's gguf-py), quantize (`llama-quantize`, built by `build.py`).

Each failure becomes one line naming the step and the tool's own last words (its last line that mentions an
error). The rest of the tool's output is not kept: rerun the step by hand to see it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

from quantlab.errors import ArtifactError, QuantizationError
from quantlab.llamacpp import build
from quantlab.llamacpp.source import tools_dir, tools_env
from quantlab.paths import cache_dir
from quantlab.util.files import write_atomic

GGUF_TOOL = Path(__file__).with_name("gguf_tool.py")


def _last_words(proc: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in (proc.stderr or "").splitlines() + (proc.stdout or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "not supported" in ln.lower()]
    return (errors or lines or ["no output"])[-1][:300]


def _gguf_tool(*args: str, error=ArtifactError) -> dict | list:
    root = tools_dir()
    proc = subprocess.run(
        [sys.executable, str(GGUF_TOOL), *args], capture_output=True, text=True, env=tools_env(root), check=False
    )
    if proc.returncode != 0:
        raise error(f"gguf-py {args[0]} failed: {_last_words(proc)}")
    return json.loads(proc.stdout)


@cache
def supported_architectures() -> frozenset[str]:
    """HF architectures this llama.cpp's converter knows. Asking imports torch (≈5 s), so the answer is kept
    beside the tools quantlab extracted (never written into a user's own checkout)."""
    root = tools_dir()
    stored = root / "architectures.json"
    ours = root.is_relative_to(cache_dir())
    if ours and stored.is_file():
        return frozenset(json.loads(stored.read_text()))
    names = _gguf_tool("architectures", error=QuantizationError)
    if ours:
        write_atomic(stored, json.dumps(names))
    return frozenset(names)


def inspect(path: Path) -> dict:
    """Metadata and every tensor's type/shape/bytes, read back with gguf-py; a corrupt file → ArtifactError."""
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    try:
        return _gguf_tool("inspect", str(path))
    except ArtifactError as exc:
        raise ArtifactError(f"{path.name} is not a readable GGUF file ({exc})") from exc


def convert(model_dir: str, outfile: Path, outtype: str, log) -> None:
    root = tools_dir(log)
    log(f"converting to GGUF {outtype.upper()} with llama.cpp's convert_hf_to_gguf.py")
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "convert_hf_to_gguf.py"),
            model_dir,
            "--outfile",
            str(outfile),
            "--outtype",
            outtype.lower(),
        ],
        capture_output=True,
        text=True,
        env=tools_env(root),
        check=False,
    )
    if proc.returncode != 0 or not outfile.is_file():
        raise QuantizationError(f"llama.cpp's converter failed: {_last_words(proc)}")


_F16: dict[tuple, Path] = {}  # the last source converted in this process → its F16 GGUF


def converted_f16(model_dir: str, log) -> Path:
    """The source model as an F16 GGUF, converted once per process and source: every quantized type of a ladder
    or a recipe starts from it (the importance matrices computed from it sit beside it). One source's files are
    kept at a time (the newest's, in a temporary folder removed at exit), so a sweep holds no more disk than a
    single quantization did."""
    folder = Path(model_dir)
    key = (str(folder.resolve()), *sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir()))
    kept = _F16.get(key)
    if kept is not None and kept.is_file():
        log("reusing this process's F16 conversion of the source")
        return kept
    for old in _scratch().iterdir():  # the previous source's F16 and what was made from it (importance matrices)
        old.unlink(missing_ok=True)
    _F16.clear()
    out = _scratch() / "model-F16.gguf"
    convert(model_dir, out, "F16", log)
    _F16[key] = out
    return out


@cache
def _scratch() -> Path:
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="quantlab-gguf-f16-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def read_imatrix(imatrix_gguf: Path) -> dict:
    return _gguf_tool("read-imatrix", str(imatrix_gguf), error=QuantizationError)


def quantize(
    src: Path,
    dst: Path,
    type_name: str,
    log,
    *,
    imatrix: Path | None = None,
    pure: bool = False,
    tensor_types: list[tuple[str, str]] | None = None,
    imatrix_exclude: list[str] | None = None,
) -> str:
    """Run llama.cpp's `llama-quantize`; return its log (per-tensor decisions, fallbacks). `tensor_types` (exact
    tensor name, ggml type) go in a `--tensor-type-file` beside `dst`, removed afterwards; `imatrix_exclude` (exact
    tensor names) are rounded without the importance matrix (`--exclude-weights`, which drops every matrix entry
    whose name *contains* the string: `methods.gguf.check_imatrix_exclude` refuses names inside other names)."""
    from quantlab.llamacpp.types import tensor_type_pattern

    tools = build.ensure(log)
    log(f"quantizing with llama-quantize ({type_name}{', pure' if pure else ''})")
    args = [str(tools.tool("llama-quantize"))]
    if imatrix is not None:
        args += ["--imatrix", str(imatrix)]
        for name in imatrix_exclude or []:
            args += ["--exclude-weights", name]
    if pure:
        args.append("--pure")
    listing = dst.with_name(dst.name + ".tensor-types")
    if tensor_types:
        listing.write_text("".join(tensor_type_pattern(name, kind) + "\n" for name, kind in tensor_types))
        args += ["--tensor-type-file", str(listing)]
    args += [str(src), str(dst), type_name, str(os.cpu_count() or 1)]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
    finally:
        listing.unlink(missing_ok=True)
    if proc.returncode != 0 or not dst.is_file():
        dst.unlink(missing_ok=True)
        raise QuantizationError(f"llama-quantize failed ({type_name}): {_last_words(proc)}")
    return proc.stdout + proc.stderr
