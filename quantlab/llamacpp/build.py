"""llama.cpp's own tools, and the library llama-cpp-python runs, built once from one llama.cpp tree.

The tree is `vendor/llama.cpp` of the sdist of the *installed* llama-cpp-python (`source.tree_dir`), so
`llama-server`, `llama-bench`, `llama-batched-bench`, `llama-perplexity`, `llama-imatrix`, `llama-quantize` and
the in-process runtime are one llama.cpp commit. One CMake build makes all of them, `libllama` included, and
quantlab points llama-cpp-python at that library (`LLAMA_CPP_LIB_PATH`, llama-cpp-python's own switch): the
runtime and the server then run the very same machine code, and llama-cpp-python need not compile llama.cpp a
second time (the Makefile installs it with `-DLLAMA_BUILD=OFF`, which saves that build's ≈4 min at set-up).

Backends: CPU by default; CUDA when `nvcc` is found and `nvidia-smi` lists a GPU (`-DGGML_CUDA=ON`, the
architecture of that GPU).
`QUANTLAB_LLAMACPP_BACKEND=cpu|cuda` overrides. On x86_64 the CPU build compiles AMX out: hosts that advertise
AMX without enabling it (the Firecracker VMs this project is built on) die with SIGILL on the first quantized
matmul, and AMX only speeds up some prefill on Sapphire Rapids and newer.

A build lives under `<quantlab cache>/llama.cpp/<version>/build-<backend>-<key>/`, where the key hashes the
CMake arguments, flags and this CPU's feature flags (`GGML_NATIVE` compiles for this CPU). It is made in a
temporary folder and renamed into place with `build.json` written first inside it, so a failed or interrupted
build never looks finished. Binaries find their libraries through `$ORIGIN`, so the folder can move.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from quantlab.errors import BackendUnavailableError
from quantlab.llamacpp import source
from quantlab.util.files import exclusive

# llama-batched-bench: the engine's own batching ceiling on a workload
# (benchmarks/crosschecks/served_batching_vs_batched_bench.py)
TOOLS = (
    "llama-server",
    "llama-bench",
    "llama-batched-bench",
    "llama-perplexity",
    "llama-imatrix",
    "llama-quantize",
)
LIBRARY = "libllama.so"
STAMP = "build.json"
AMX_OFF = ("-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16")
BUILD_MINUTES = {"cpu": 5, "cuda": 10}  # what the log announces: 2 cores (cpu, measured 4.8 min), 16 cores (cuda)
# Everything a build needs and nothing that reaches the network: no curl/OpenSSL, no prebuilt web UI download.
BASE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DCMAKE_BUILD_RPATH=$ORIGIN",
)


class ToolsBuild(BaseModel):
    """What `build.json` says about one finished build: the doctor's and every result's source of truth."""

    model_config = ConfigDict(extra="forbid")

    version: str  # llama-cpp-python's, whose sdist gave the tree
    commit: str  # llama.cpp commit of that tree (llama-cpp-python's changelog for the version)
    backend: str  # cpu | cuda
    cuda_arch: str | None = None
    cmake_args: list[str]
    cflags: str
    tools: list[str]
    seconds: float
    built_at: str
    folder: str = ""  # filled in when read back: where it lives now

    def tool(self, name: str) -> Path:
        return Path(self.folder) / name

    @property
    def label(self) -> str:
        return f"llama.cpp {self.commit} ({self.backend}{f' sm_{self.cuda_arch}' if self.cuda_arch else ''})"


def backend() -> str:
    chosen = os.environ.get("QUANTLAB_LLAMACPP_BACKEND", "").strip().lower()
    if chosen and chosen not in ("cpu", "cuda"):
        raise BackendUnavailableError(f"QUANTLAB_LLAMACPP_BACKEND must be cpu or cuda, not {chosen!r}")
    return chosen or ("cuda" if _nvcc() and _gpu_present() else "cpu")


def _gpu_present() -> bool:
    """An NVIDIA GPU this process can use: nvcc alone (a toolkit on a CPU-only host) does not make one."""
    try:
        proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and "GPU" in proc.stdout


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found is None and Path("/usr/local/cuda/bin/nvcc").is_file():
        found = "/usr/local/cuda/bin/nvcc"
    return found


def _cuda_arch() -> str:
    """The compute capability of the GPU present (`nvidia-smi`), e.g. 90; `native` lets CMake ask the driver."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split()
        return out[0].replace(".", "") if out else "native"
    except (OSError, subprocess.SubprocessError):
        return "native"


def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    found = re.search(r"^(flags|Features)\s*:(.*)$", text, re.M)
    return found.group(2).strip() if found else ""


def _user_tree() -> str:
    """A tree named by QUANTLAB_LLAMACPP_DIR builds apart from quantlab's own (its path is part of the key)."""
    explicit = os.environ.get("QUANTLAB_LLAMACPP_DIR")
    return str(Path(explicit).expanduser().resolve()) if explicit else ""


def plan(chosen: str | None = None) -> tuple[list[str], str, str | None]:
    """The CMake arguments, the C/C++ flags and the CUDA architecture of a build for this host."""
    chosen = chosen or backend()
    args = list(BASE_ARGS)
    cflags = " ".join(AMX_OFF) if platform.machine() in ("x86_64", "AMD64") else ""
    arch = None
    if chosen == "cuda":
        nvcc = _nvcc()
        if nvcc is None:
            raise BackendUnavailableError("a CUDA build of llama.cpp needs nvcc (not found on PATH or /usr/local/cuda)")
        arch = _cuda_arch()
        args += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DCMAKE_CUDA_ARCHITECTURES={arch}"]
    return args, cflags, arch


def build_folder(version: str, chosen: str, args: list[str], cflags: str) -> Path:
    user_tree = _user_tree()
    parts = [version, chosen, args, cflags, platform.machine(), _cpu_flags()] + ([user_tree] if user_tree else [])
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:10]
    return source.cache_root(version) / f"build-{chosen}-{key}"


def find(chosen: str | None = None) -> ToolsBuild | None:
    """The finished build for the installed version and this host, or None; builds nothing."""
    version = source.runtime_version()
    chosen = chosen or backend()
    args, cflags, _ = plan(chosen)
    return _read(build_folder(version, chosen, args, cflags))


def _read(folder: Path) -> ToolsBuild | None:
    try:
        build = ToolsBuild.model_validate_json((folder / STAMP).read_text())
    except (OSError, ValueError):
        return None
    build.folder = str(folder)
    if not all(build.tool(t).is_file() for t in TOOLS) or not build.tool(LIBRARY).is_file():
        return None
    return build


def ensure(log=print, chosen: str | None = None) -> ToolsBuild:
    """The tools for the installed llama-cpp-python and this host, built first if the cache lacks them."""
    version = source.runtime_version()
    chosen = chosen or backend()
    args, cflags, arch = plan(chosen)
    folder = build_folder(version, chosen, args, cflags)
    found = _read(folder)
    if found is not None:
        return found
    with exclusive(folder.with_name(f".{folder.name}.lock")):
        found = _read(folder)
        if found is not None:
            return found
        tree = source.tree_dir(log)
        commit = source.tree_commit(version)
        log(
            f"building llama.cpp {commit} tools ({chosen}) from the llama-cpp-python {version} tree, once: "
            f"≈{BUILD_MINUTES[chosen]} min; log in {folder}.log"
        )
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="quantlab-llamacpp-build-", dir=folder.parent) as tmp:
            bin_dir = _cmake(tree, Path(tmp) / "build", args, cflags, commit, folder.with_suffix(".log"), log)
            staged = Path(tmp) / "staged"
            staged.mkdir()
            for item in bin_dir.iterdir():
                if item.name in TOOLS or ".so" in item.name:
                    shutil.copy2(item, staged / item.name, follow_symlinks=False)
            build = ToolsBuild(
                version=version,
                commit=commit,
                backend=chosen,
                cuda_arch=arch,
                cmake_args=args,
                cflags=cflags,
                tools=list(TOOLS),
                seconds=round(time.monotonic() - start, 1),
                built_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            (staged / STAMP).write_text(build.model_dump_json(indent=2, exclude={"folder"}))
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(staged, folder)
        log(f"built llama.cpp tools in {build.seconds / 60:.1f} min: {folder}")
    built = _read(folder)
    if built is None:
        raise BackendUnavailableError(f"the llama.cpp build in {folder} is incomplete; delete it and rerun")
    return built


def _cmake(tree: Path, build_dir: Path, args, cflags, commit, log_path: Path, log) -> Path:
    # The cmake and ninja of quantlab's own environment (the gguf extra pins them) before any on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    for tool in ("cmake", "ninja"):
        if shutil.which(tool, path=path) is None:
            raise BackendUnavailableError(f"building llama.cpp's tools needs {tool} (pip install {tool}, or apt)")
    env = {**os.environ, "PATH": path, "CFLAGS": f"{cflags} {os.environ.get('CFLAGS', '')}".strip()}
    env["CXXFLAGS"] = f"{cflags} {os.environ.get('CXXFLAGS', '')}".strip()
    configure = ["cmake", "-S", str(tree), "-B", str(build_dir), "-G", "Ninja", *args]
    configure.append(f"-DLLAMA_BUILD_COMMIT={commit}")
    jobs = str(os.cpu_count() or 1)
    compile_ = ["cmake", "--build", str(build_dir), "-j", jobs, "--target", *TOOLS, "llama"]
    with open(log_path, "w") as sink:
        steps = (("configure", configure), ("compile", compile_))
        failed = next((step for step, command in steps if not _logged(command, env, sink, log)), None)
    if failed is None:
        return build_dir / "bin"
    raise BackendUnavailableError(  # read once the log is closed (flushed)
        f"building llama.cpp's tools failed at {failed}: {_first_error(log_path)} (full log: {log_path})"
    )


def _logged(command: list[str], env: dict, sink, log) -> bool:
    """Run one build step into the log file; say every tenth of ninja's steps. Whether it succeeded."""
    sink.write(f"$ {' '.join(command)}\n")
    sink.flush()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    shown = -1
    for line in proc.stdout:
        sink.write(line)
        done = re.match(r"\[(\d+)/(\d+)\]", line)
        if done and int(done[1]) * 10 // int(done[2]) > shown:
            shown = int(done[1]) * 10 // int(done[2])
            log(f"llama.cpp build: {done[1]}/{done[2]} steps")
    return proc.wait() == 0


def _first_error(log_path: Path) -> str:
    """The first error the compiler or CMake reported (CMake puts the reason on the next line)."""
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if not line.startswith("$ ") and re.search(r"(error:|CMake Error|FAILED:)", line):
            return (f"{line} {lines[i + 1]}" if line.startswith("CMake Error") and i + 1 < len(lines) else line)[:300]
    return (lines[-1:] or ["no output"])[0][:300]


def runtime_library(log=print) -> Path:
    """Point llama-cpp-python at the library of the tools build (before it is first imported); the folder.

    A `LLAMA_CPP_LIB_PATH` the user set is kept: they answer for it matching the tools."""
    explicit = os.environ.get("LLAMA_CPP_LIB_PATH")
    if explicit:
        return Path(explicit)
    folder = Path(ensure(log).folder)
    os.environ["LLAMA_CPP_LIB_PATH"] = str(folder)
    return folder


def llama_cpp(log=print):
    """llama-cpp-python, imported with the tools build's library: the one way quantlab imports it."""
    runtime_library(log)
    import llama_cpp as module

    return module
