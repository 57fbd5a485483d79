"""`--vllm-python` / $QUANTLAB_VLLM_PYTHON: vLLM is probed and started by the interpreter the setting names, never
imported into quantlab's process, and the served record says which interpreter ran it and its vLLM version.

No GPU and no vLLM here: the interpreter is a fake, a shell script that answers the version probe and, started as
vLLM's server, writes down its arguments and exits (a server that never came up)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from quantlab.bench.config import BenchConfig
from quantlab.errors import BackendUnavailableError, BenchError, ServeError
from quantlab.report import select
from quantlab.results import EnginePython, LoadSweep, read_results
from quantlab.serve import vllm
from quantlab.serve.engines import ENGINES, select_engine
from quantlab.serve.process import ServerProcess, free_port

from .conftest import REPO, error_lines, run_cli

SERVER = "vllm.entrypoints.openai.api_server"


def fake_python(folder: Path, version: str = "0.33.0", name: str = "python") -> Path:
    """Answers `-c <the probe>` with `version`; as `-m <vLLM's server>` records its arguments and exits 1."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-c" ] && [ "$2" = "{vllm.PROBE}" ]; then echo "{version}"; exit 0; fi\n'
        f'if [ "$1" = "-m" ] && [ "$2" = "{SERVER}" ]; then printf "%s\\n" "$@" > "{folder}/argv"; exit 1; fi\n'
        'echo "unexpected: $*" >&2; exit 2\n'
    )
    path.chmod(0o755)
    return path


def without_vllm(folder: Path) -> Path:
    """An interpreter whose import of vllm fails, with a traceback several lines long."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "python"
    path.write_text(
        "#!/bin/sh\necho 'Traceback (most recent call last):' >&2\necho '  File \"<string>\", line 1' >&2\n"
        "echo \"ModuleNotFoundError: No module named 'vllm'\" >&2\nexit 1\n"
    )
    path.chmod(0o755)
    return path


@pytest.fixture(autouse=True)
def _no_inherited_setting(monkeypatch):
    monkeypatch.delenv(vllm.ENV_VAR, raising=False)


def _artifact(tmp_path: Path):
    return SimpleNamespace(path=tmp_path / "model")  # the plan only names the folder; vLLM would load it


def test_the_plan_starts_vllm_with_the_named_python(tmp_path):
    python = fake_python(tmp_path / "venv" / "bin")
    engine = vllm.VllmServer(str(python))
    port = free_port()
    plan = engine.plan(_artifact(tmp_path), port=port, device="cuda:0", threads=4, ctx=512)
    assert plan.command[:3] == [str(python), "-m", SERVER]
    assert str(python) not in plan.flags  # the recorded flags carry no paths
    with pytest.raises(ServeError, match="exited with code 1"), ServerProcess(plan, name="vllm server") as server:
        server.wait_ready(30)
    argv = (tmp_path / "venv" / "bin" / "argv").read_text().splitlines()
    assert argv[:4] == ["-m", SERVER, "--model", str(tmp_path / "model")]
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", str(port)]


def test_the_default_is_quantlabs_own_python():
    interpreter = vllm.vllm_python()
    assert interpreter.path == sys.executable and interpreter.own
    assert ENGINES["vllm"].engine_python() == EnginePython(path=sys.executable, own=True)


def test_the_variable_names_the_python_and_the_flag_wins(tmp_path, monkeypatch):
    from_env, from_flag = fake_python(tmp_path / "env", "0.33.0"), fake_python(tmp_path / "flag", "0.33.1")
    monkeypatch.setenv(vllm.ENV_VAR, str(from_env))
    assert vllm.vllm_python() == vllm.Interpreter(str(from_env), vllm.ENV_VAR)
    assert vllm.vllm_python(str(from_flag)) == vllm.Interpreter(str(from_flag), "--vllm-python")
    assert not vllm.vllm_python().own
    assert ENGINES["vllm"].version() == "0.33.0" and ENGINES["vllm"].missing() is None
    assert vllm.VllmServer(str(from_flag)).version() == "0.33.1"


def test_a_relative_path_is_made_absolute_without_resolving_links(tmp_path, monkeypatch):
    real = fake_python(tmp_path / "base")
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "python").symlink_to(real)  # a virtualenv's bin/python is a link like this one
    monkeypatch.chdir(tmp_path)
    assert vllm.vllm_python("venv/python").path == str(tmp_path / "venv" / "python")


def test_select_engine_hands_the_setting_to_vllm(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm.VllmServer, "supports", lambda self, artifact: True)
    monkeypatch.setenv(vllm.ENV_VAR, str(fake_python(tmp_path / "env", "0.33.0")))
    named = fake_python(tmp_path / "flag", "0.33.1")
    artifact = _artifact(tmp_path)
    engine = select_engine(artifact, "vllm", device="cuda", vllm_python=str(named))
    assert engine.interpreter.path == str(named) and engine.version() == "0.33.1"
    assert select_engine(artifact, "vllm", device="cuda").version() == "0.33.0"  # the variable, without the flag
    with pytest.raises(BackendUnavailableError, match="does not exist"):
        select_engine(artifact, "vllm", device="cuda", vllm_python=str(tmp_path / "nowhere" / "python"))


@pytest.mark.parametrize("case", ["absent", "a folder", "not executable", "without vllm", "silent"])
def test_an_unusable_python_is_one_line_naming_it(tmp_path, case):
    path = tmp_path / "bin" / "python"
    if case == "a folder":
        path.mkdir(parents=True)
    elif case == "not executable":
        fake_python(path.parent).chmod(0o644)
    elif case == "without vllm":
        without_vllm(path.parent)
    elif case == "silent":
        fake_python(path.parent, version="")
    reason = vllm.VllmServer(str(path)).missing()
    expected = {
        "absent": "does not exist",
        "a folder": "is not an executable file",
        "not executable": "is not an executable file",
        "without vllm": "cannot import vllm (ModuleNotFoundError: No module named 'vllm'); install vLLM there",
        "silent": "imported vllm but printed no version",
    }[case]
    assert reason is not None and "\n" not in reason
    assert reason.startswith(f"engine 'vllm': its Python {path} (--vllm-python) {expected}")
    assert vllm.VllmServer(str(path)).version() == "unknown"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed in quantlab's Python")
def test_quantlabs_own_python_without_vllm_says_how_to_name_another():
    reason = ENGINES["vllm"].missing()
    assert reason is not None and "\n" not in reason
    assert f"{sys.executable} (quantlab's own Python) cannot import vllm" in reason
    assert "--vllm-python or QUANTLAB_VLLM_PYTHON" in reason
    assert "vllm" not in sys.modules  # probed in a subprocess, never imported here


def test_the_setting_for_another_engine_is_refused(tmp_path, monkeypatch):
    from quantlab.bench import served_plan

    monkeypatch.setattr(served_plan, "select_engine", lambda *a, **k: ENGINES["llamacpp"])
    config = BenchConfig(vllm_python=str(fake_python(tmp_path)))
    with pytest.raises(BenchError, match="served by 'llamacpp' \\(add --engine vllm, or drop --vllm-python\\)"):
        served_plan.engine_and_options(_artifact(tmp_path), config, "cpu")


def test_the_flag_is_a_served_setting():
    proc = run_cli("bench", str(REPO), "--vllm-python", sys.executable, timeout=120)
    assert proc.returncode == 1 and error_lines(proc.stderr) == ["error: --vllm-python only apply with --load"]


def test_a_record_says_which_python_ran_vllm_and_its_version(tmp_path):
    from quantlab.bench.served_record import engine_fields

    python = fake_python(tmp_path / "venv" / "bin", "0.33.1")
    fields = engine_fields(vllm.VllmServer(str(python)))
    assert fields["engine"] == "vllm" and fields["engine_version"] == "0.33.1"
    assert fields["engine_python"] == EnginePython(path=str(python), own=False)
    served = next(r for r in select(read_results(REPO / "results" / "served-smollm2.jsonl")) if r.load)
    sweep = served.load.model_copy(update=fields)
    again = LoadSweep.model_validate_json(sweep.model_dump_json())
    assert again.engine_python == EnginePython(path=str(python), own=False) and again.engine_version == "0.33.1"


def test_the_report_names_the_python_only_when_it_is_not_quantlabs_own():
    from quantlab.report.notes import load_notes

    records = select(read_results(REPO / "results" / "served-smollm2.jsonl"))
    served = [r for r in records if r.load]
    assert served and all(r.load.engine_python is None for r in served)  # a record made before the field
    before = load_notes(records)

    def ran_by(python: EnginePython) -> list[str]:
        changed = [r.model_copy(update={"load": r.load.model_copy(update={"engine_python": python})}) for r in served]
        return load_notes(changed)

    assert ran_by(EnginePython(path=sys.executable, own=True)) == before
    other = ran_by(EnginePython(path="/opt/vllm-venv/bin/python", own=False))
    named = [n for n in other if "(run by /opt/vllm-venv/bin/python, not quantlab's own Python)" in n]
    assert named and all(n.startswith("Engine ") for n in named)
