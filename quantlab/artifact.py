"""An artifact is a directory of engine-native files plus `quantlab.json`, the manifest.

The directory is built under a hidden temporary name next to `--out` and renamed into place only after the
manifest is written, so a crash, an exception or a SIGKILL never leaves something at `--out` that looks like
a finished artifact. Stale temporary directories of dead processes are swept on the next build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from quantlab.errors import ArtifactError, describe_validation_error
from quantlab.models import WEIGHT_SUFFIXES, SourceModel
from quantlab.results.gguf import GGUFRecord
from quantlab.results.io import decode_json
from quantlab.results.provenance import HostInfo
from quantlab.spec import MethodSpec
from quantlab.util.files import file_sha256, write_atomic

MANIFEST = "quantlab.json"
SCHEMA_VERSION = 1
TMP_MARK = ".quantlab-tmp-"


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    bytes: int = Field(ge=0)
    sha256: str

    @field_validator("path")
    @classmethod
    def _inside(cls, value: str) -> str:
        """A relative path below the artifact, as `list_files` writes it: a manifest naming a file elsewhere would
        have the loader check, and a runtime read, a file that is not the artifact's."""
        parts = PurePosixPath(value).parts
        if not parts or PurePosixPath(value).is_absolute() or ".." in parts:
            raise ValueError(f"{value[:100]!r} is not a path inside the artifact")
        return value


class CalibrationRecord(BaseModel):
    """What a calibrated method actually saw: enough to tell whether two artifacts used the same data."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    description: str
    n_samples: int
    seq_len: int
    seed: int
    token_fingerprint: str


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    spec: MethodSpec
    format: str  # what the files are, e.g. "compressed-tensors pack-quantized" or "safetensors bf16"
    loads_in: list[str]  # where the artifact loads unmodified
    source: SourceModel
    calibration: CalibrationRecord | None = None
    libraries: dict[str, str]
    files: list[FileEntry]
    weight_bytes: int  # bytes of weight files (safetensors/gguf/...), i.e. what a runtime reads
    n_params_source: int | None = None
    created_at: datetime
    quantize_seconds: float
    host: HostInfo
    gguf: GGUFRecord | None = None
    notes: list[str] = []

    def digest(self) -> str:
        """Identity of the artifact: sha256 (16 hex) of the canonical manifest JSON.

        Unset (None) fields are left out, so adding an optional field to the schema later (as `gguf` was)
        does not change the identity of artifacts made before it, and their results keep matching.
        """
        canonical = json.dumps(self.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: Manifest

    @property
    def digest(self) -> str:
        return self.manifest.digest()

    @property
    def disk_bytes(self) -> int:
        return sum(entry.bytes for entry in self.manifest.files)


def list_files(root: Path) -> list[FileEntry]:
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        entries.append(
            FileEntry(path=path.relative_to(root).as_posix(), bytes=path.stat().st_size, sha256=file_sha256(path))
        )
    return entries


def weight_bytes(files: list[FileEntry]) -> int:
    return sum(f.bytes for f in files if f.path.endswith(WEIGHT_SUFFIXES))


def write_manifest(root: Path, manifest: Manifest) -> None:
    write_atomic(root / MANIFEST, manifest.model_dump_json(indent=2) + "\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(parent: Path, name: str) -> None:
    """Remove `.NAME.quantlab-tmp-PID` siblings whose process is gone (a previous run was killed)."""
    if not parent.is_dir():
        return
    prefix = f".{name}{TMP_MARK}"
    for entry in parent.iterdir():
        if entry.name.startswith(prefix):
            pid_text = entry.name[len(prefix) :]
            if pid_text.isdigit() and not _pid_alive(int(pid_text)):
                shutil.rmtree(entry, ignore_errors=True)


def check_out_free(out: Path, *, force: bool) -> None:
    """Fail early (before any work) when `out` is taken."""
    if out.exists() and not force:
        raise ArtifactError(f"output {out} already exists; choose another --out or pass --force to replace it")


@contextmanager
def building(out: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temp directory; on success it becomes `out` atomically, on failure it is removed.

    The caller writes the manifest into the temp directory as the last step; `out` appears only after.
    """
    out = out.expanduser().absolute()
    check_out_free(out, force=force)
    created_parent = not out.parent.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out.parent, out.name)
    tmp = out.parent / f".{out.name}{TMP_MARK}{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if not (tmp / MANIFEST).is_file():
            raise ArtifactError("internal error: artifact finished without a manifest")
        if out.exists():  # --force: move the old one aside first so `out` is never half-replaced
            old = out.parent / f".{out.name}{TMP_MARK}old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_parent:
            with suppress(OSError):  # only if still empty
                out.parent.rmdir()
        raise


def _expanded(path: str | Path) -> Path:
    try:
        return Path(path).expanduser()
    except RuntimeError:  # `~user` of a user this host does not have: the path as typed, which does not exist
        return Path(path)


def load_artifact(path: str | Path, *, check_files: bool = True) -> Artifact:
    """Read and validate an artifact directory; every failure is one line naming the directory."""
    root = _expanded(path)
    manifest_path = root / MANIFEST
    try:
        if not root.exists():
            raise ArtifactError(f"artifact {path} does not exist")
        if not root.is_dir():
            raise ArtifactError(f"artifact {path} is not a directory")
        if not manifest_path.is_file():
            raise ArtifactError(
                f"{path} has no {MANIFEST}: not a quantlab artifact (make one with "
                "'quantlab quantize MODEL --method none --out DIR')"
            )
    except OSError as exc:  # a name the file system refuses (too long, ...)
        raise ArtifactError(f"artifact {path}: cannot look it up ({exc.strerror})") from exc
    try:
        data = decode_json(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, not JSON (decode_json)
        raise ArtifactError(f"corrupted manifest {manifest_path}: {exc}") from exc
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ArtifactError(f"corrupted manifest {manifest_path}: {describe_validation_error(exc)}") from exc
    if manifest.schema_version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{manifest_path}: schema version {manifest.schema_version} is not supported "
            f"(this quantlab reads {SCHEMA_VERSION})"
        )
    if check_files:
        _check_files(root, path, manifest)
    return Artifact(path=root.absolute(), manifest=manifest)


def _check_files(root: Path, path: str | Path, manifest: Manifest) -> None:
    """Every listed file is there with its size, and the GGUF files the manifest names are listed ones."""
    listed = {entry.path for entry in manifest.files}
    named = [manifest.gguf.file] if manifest.gguf else []
    named += [manifest.gguf.imatrix.file] if manifest.gguf and manifest.gguf.imatrix else []
    for name in named:
        if name not in listed:
            raise ArtifactError(f"corrupted manifest in {path}: the GGUF file {name!r} is not one of its files")
    for entry in manifest.files:
        file = root / entry.path
        try:
            size = file.stat().st_size if file.is_file() else None
        except OSError as exc:  # a name the file system refuses (too long, ...)
            raise ArtifactError(f"artifact {path}: cannot check {entry.path!r} ({exc.strerror})") from exc
        if size is None:
            raise ArtifactError(f"artifact {path} is incomplete: {entry.path!r} is missing")
        if size != entry.bytes:
            raise ArtifactError(f"artifact {path}: {entry.path!r} has {size} bytes, the manifest says {entry.bytes}")


def verify_hashes(artifact: Artifact) -> list[str]:
    """Files whose sha256 differs from the manifest (slow on big artifacts, hence not done on every load)."""
    return [e.path for e in artifact.manifest.files if file_sha256(artifact.path / e.path) != e.sha256]
