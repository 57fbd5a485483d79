"""The llama.cpp tree of the *installed* llama-cpp-python: its converter (`convert_hf_to_gguf.py`, `conversion/`,
`gguf-py`) and the sources `build.py` compiles the tools and the runtime library from, so converter, gguf reader,
tools and runtime are one llama.cpp commit.

Why this route: PyPI's `gguf` package lags llama.cpp (0.19.0 fails on the current converter), llama.cpp's
own requirements pin old torch/transformers, and only PyPI is reachable. The llama-cpp-python sdist on PyPI
vendors the exact llama.cpp tree its runtime is built from, so `pip download --no-binary :all:
llama-cpp-python==<installed version>` gives the matching tools. They are extracted once into the user cache
(`~/.cache/quantlab/llama.cpp/<version>/tree/`, without llama.cpp's tests, examples, docs and vocab
files: 53 of 176 MB) and the Python tools run in a subprocess with that `gguf-py` first on the path, so
they never mix with the `gguf` package transformers imports. Nothing of llama.cpp is copied into this repo.

`QUANTLAB_LLAMACPP_SDIST` may name a local sdist file (air-gapped machines); `QUANTLAB_LLAMACPP_DIR` may name a
llama.cpp checkout to use as is (the user then answers for it matching the runtime).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

from quantlab.errors import BackendUnavailableError
from quantlab.paths import cache_dir
from quantlab.util.files import exclusive
from quantlab.util.files import file_sha256 as sha256_file
from quantlab.util.pip import pip_download

DISTRIBUTION = "llama-cpp-python"
# sdists whose content quantlab has checked; another version is used too, but is not hash-checked.
KNOWN_SDIST_SHA256 = {
    "0.3.36": "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
}
# What is left out of `vendor/llama.cpp/` of the sdist: nothing the converter or the tools build reads.
SKIPPED = ("models/", "docs/", "examples/", "tests/", "media/", ".github/", "benches/", "pocs/", "skills/")
STAMP = ".quantlab-tree.json"


def runtime_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise BackendUnavailableError(
            "llama-cpp-python is not installed (pip install 'quantlab[gguf]'; it builds llama.cpp from source, "
            "≈12 min on 2 cores)"
        ) from exc


def cache_root(version: str) -> Path:
    return cache_dir() / "llama.cpp" / version


def tools_dir(log=print) -> Path:
    """The llama.cpp tree (converter, `gguf-py/`, CMake sources) of the installed runtime."""
    return tree_dir(log)


def tree_commit(version: str) -> str:
    """The llama.cpp commit of the tree, as llama-cpp-python's changelog for that version names it."""
    explicit = os.environ.get("QUANTLAB_LLAMACPP_DIR")
    root = Path(explicit).expanduser() if explicit else cache_root(version) / "tree"
    try:
        stamp = json.loads((root / STAMP).read_text())  # a copy of quantlab's tree keeps its stamp
    except (OSError, ValueError):
        return "user-tree" if explicit else "unknown"
    return stamp.get("commit", "unknown")


def tree_dir(log=print) -> Path:
    explicit = os.environ.get("QUANTLAB_LLAMACPP_DIR")
    if explicit:
        root = Path(explicit).expanduser()
        if not (root / "convert_hf_to_gguf.py").is_file():
            raise BackendUnavailableError(f"QUANTLAB_LLAMACPP_DIR={root} holds no convert_hf_to_gguf.py")
        return root
    version = runtime_version()
    target = cache_root(version) / "tree"
    if (target / STAMP).is_file():
        return target
    with exclusive(target.parent / ".tree.lock"):
        if (target / STAMP).is_file():
            return target
        with tempfile.TemporaryDirectory(prefix="quantlab-llamacpp-") as tmp:
            sdist = _sdist(version, Path(tmp), log)
            _extract(sdist, target, version)
    return target


def _sdist(version: str, tmp: Path, log) -> Path:
    local = os.environ.get("QUANTLAB_LLAMACPP_SDIST")
    if local:
        path = Path(local).expanduser()
    else:
        log(f"downloading the llama-cpp-python {version} sdist from PyPI for its llama.cpp tree (77 MB, once)")
        failed = pip_download(f"{DISTRIBUTION}=={version}", tmp, source=True)
        found = sorted(tmp.glob("llama_cpp_python-*.tar.gz"))
        if failed or not found:
            last = failed or "no sdist in its output"
            raise BackendUnavailableError(
                f"could not fetch llama.cpp's converter: 'pip download {DISTRIBUTION}=={version}' failed ({last}); "
                "set QUANTLAB_LLAMACPP_SDIST to a local copy of that sdist"
            )
        path = found[0]
    if not path.is_file():
        raise BackendUnavailableError(f"QUANTLAB_LLAMACPP_SDIST={path} does not exist")
    expected = KNOWN_SDIST_SHA256.get(version)
    if expected and sha256_file(path) != expected:
        raise BackendUnavailableError(f"{path.name} has an unexpected sha256 (expected {expected[:12]}…)")
    return path


def _extract(sdist: Path, target: Path, version: str) -> None:
    root = f"llama_cpp_python-{version}/"
    prefix = f"{root}vendor/llama.cpp/"
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(sdist, "r:gz") as tar:
        chosen = []
        changelog = ""
        for member in tar.getmembers():
            if member.name == f"{root}CHANGELOG.md":
                changelog = tar.extractfile(member).read().decode(errors="replace")
            if not member.name.startswith(prefix):
                continue
            rel = member.name[len(prefix) :]
            if rel and not any(rel.startswith(skip) for skip in SKIPPED):
                member.name = rel
                chosen.append(member)
        if not any(m.name == "convert_hf_to_gguf.py" for m in chosen):
            raise BackendUnavailableError(f"{sdist.name} has no vendor/llama.cpp/convert_hf_to_gguf.py")
        tar.extractall(tmp, members=chosen, filter="data")
    stamp = {"sdist": sdist.name, "sha256": sha256_file(sdist), "commit": _changelog_commit(changelog, version)}
    (tmp / STAMP).write_text(json.dumps(stamp, indent=2))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def _changelog_commit(changelog: str, version: str) -> str:
    """llama-cpp-python's changelog names, under each release, the llama.cpp commit it vendors."""
    section = re.search(rf"^## \[{re.escape(version)}\](.*?)(?=^## \[|\Z)", changelog, re.M | re.S)
    found = re.search(r"llama\.cpp@([0-9a-f]{7,40})", section.group(1)) if section else None
    return found.group(1)[:9] if found else "unknown"


def tools_env(root: Path) -> dict[str, str]:
    """Environment for a subprocess that must import llama.cpp's `gguf-py`, not the PyPI `gguf`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root / "gguf-py"), str(root), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return env
