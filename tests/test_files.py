"""`write_atomic`: the old content or the new one, never a mix, and no temporary file left behind."""

from __future__ import annotations

import os

import pytest

from quantlab.util import files
from quantlab.util.files import write_atomic


def test_writes_text_and_bytes_creating_parents(tmp_path):
    target = tmp_path / "a" / "b" / "report.md"
    write_atomic(target, "quality % — ±\n")
    assert target.read_bytes() == "quality % — ±\n".encode()
    write_atomic(target, b"\x89PNG")
    assert target.read_bytes() == b"\x89PNG"
    assert os.listdir(target.parent) == ["report.md"]


def test_the_file_gets_the_mode_a_plain_write_gives(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "x.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, failing):
    target = tmp_path / "manifest.json"
    target.write_text("old")

    def boom(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, failing, boom)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["manifest.json"]


def test_exclusive_or_fail_names_the_holder_and_frees_on_exit(tmp_path):
    import subprocess
    import sys

    from quantlab.util.files import Held, exclusive_or_fail

    lock = tmp_path / "run.lock"
    child = f"import pathlib, quantlab.util.files as f\nwith f.exclusive_or_fail(pathlib.Path({str(lock)!r})): pass"
    with exclusive_or_fail(lock):
        proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=False)
        assert proc.returncode != 0 and f"held by process {os.getpid()}" in proc.stderr
        with pytest.raises(Held), exclusive_or_fail(lock):  # another open of it, even in this process, is refused
            pass
    with exclusive_or_fail(lock):  # released
        pass
