"""Fuzzing GGUF headers: a tiny valid GGUF (written by llama.cpp's own gguf-py: one Llama layer, 1024 tokens,
F32, ≈0.7 MB, loadable by llama.cpp), corrupted or cut short, read the two ways quantlab reads one.

- `quantlab.llamacpp.ops.inspect` (quantize's read-back, the roofline's tensor census): gguf_tool.py under the
  tree's gguf-py in a subprocess. One long-lived process answers every example (`ToolOracle`), and `ops.inspect`
  runs unchanged around it, so an example costs milliseconds, not a Python start.
- llama.cpp itself, as `quantlab bench` opens the file (the `llamacpp` runtime, in-process): in a long-lived child
  (`LoadOracle`) restarted whenever llama.cpp kills it, so an abort is seen as such.

Shared by the tests and benchmarks/crosschecks/fuzz_inputs.py; imports no pytest.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

from hypothesis import strategies as st

from tests.fuzz_properties import ACCEPTED, Violation, guarded

WRITER = """
import sys, numpy as np, gguf
V, H, F, NH = 1024, 64, 128, 4
w = gguf.GGUFWriter(sys.argv[1], "llama")
w.add_name("quantlab-fuzz-tiny"); w.add_context_length(256); w.add_embedding_length(H); w.add_block_count(1)
w.add_feed_forward_length(F); w.add_head_count(NH); w.add_head_count_kv(NH); w.add_rope_dimension_count(H // NH)
w.add_layer_norm_rms_eps(1e-5); w.add_file_type(gguf.LlamaFileType.ALL_F32); w.add_tokenizer_model("llama")
w.add_token_list([f"<t{i}>".encode() for i in range(V)]); w.add_token_scores([0.0] * V)
w.add_token_types([gguf.TokenType.NORMAL] * V); w.add_bos_token_id(1); w.add_eos_token_id(2)
rng = np.random.default_rng(0)
shapes = {"token_embd": (V, H), "output_norm": (H,), "output": (V, H), "blk.0.attn_norm": (H,), "blk.0.attn_q": (H, H),
          "blk.0.attn_k": (H, H), "blk.0.attn_v": (H, H), "blk.0.attn_output": (H, H), "blk.0.ffn_norm": (H,),
          "blk.0.ffn_gate": (F, H), "blk.0.ffn_up": (F, H), "blk.0.ffn_down": (H, F)}
for name, shape in shapes.items():
    w.add_tensor(name + ".weight", (rng.standard_normal(shape) * 0.05).astype(np.float32))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
print(gguf.GGUFReader(sys.argv[1]).data_offset)
"""


def tools_tree() -> Path | None:
    """The llama.cpp tree quantlab extracted, if it did (never downloaded here: a fuzz test is skipped without)."""
    from quantlab.llamacpp import source

    explicit = os.environ.get("QUANTLAB_LLAMACPP_DIR")
    try:
        root = Path(explicit) if explicit else source.cache_root(source.runtime_version()) / "tree"
    except Exception:  # llama-cpp-python not installed
        return None
    return root if (root / "gguf-py").is_dir() else None


def llama_built() -> bool:
    """Whether quantlab's llama.cpp build is there already (opening a GGUF never starts a 12-minute build here)."""
    from quantlab.llamacpp import build

    try:
        return build.find() is not None or bool(os.environ.get("LLAMA_CPP_LIB_PATH"))
    except Exception:  # llama-cpp-python not installed
        return False


def write_tiny_gguf(path: Path) -> int:
    """Write the tiny GGUF; the offset where its tensor data starts (everything before it is header)."""
    from quantlab.llamacpp.source import tools_env

    env = tools_env(tools_tree())
    proc = subprocess.run(
        [sys.executable, "-c", WRITER, str(path)], capture_output=True, text=True, env=env, check=True
    )
    return int(proc.stdout.split()[-1])


def tokenizer_files(vocab: int = 1024) -> dict[str, bytes]:
    """An HF tokenizer of `vocab` word-level tokens (every word of the evaluation text is unknown, id 0): what a GGUF
    artifact carries beside its file, so `quantlab bench` gets as far as opening the GGUF."""
    import tempfile

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"<t{i}>": i for i in range(vocab)}, unk_token="<t0>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    with tempfile.TemporaryDirectory() as tmp:
        PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<t2>", bos_token="<t1>").save_pretrained(tmp)
        return {f.name: f.read_bytes() for f in Path(tmp).iterdir()}


EDGE_U64 = [0, 1, 3, 2**31 - 1, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**64 - 1]


@st.composite
def gguf_mutations(draw, valid: bytes, header: int) -> bytes:
    """`valid` with its header corrupted (bytes flipped, a count or length overwritten with an edge value, bytes
    inserted or dropped, the magic or version changed), cut short anywhere, or random bytes behind a magic."""
    data = bytearray(valid)
    op = draw(st.sampled_from(["flip", "flip", "u64", "u32", "cut", "cut_header", "splice", "magic", "random"]))
    if op == "flip":
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, header - 1))] = draw(st.integers(0, 255))
    elif op in ("u64", "u32"):
        at = draw(st.one_of(st.sampled_from([4, 8, 16, 24]), st.integers(0, header - 8)))
        fmt, edge = ("<Q", draw(st.sampled_from(EDGE_U64))) if op == "u64" else ("<I", draw(st.integers(0, 2**32 - 1)))
        struct.pack_into(fmt, data, at, edge)
    elif op == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif op == "cut_header":
        data = data[: draw(st.integers(0, header))]
    elif op == "splice":
        at = draw(st.integers(0, header))
        data = data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at + draw(st.integers(0, 16)) :]
    elif op == "magic":
        data[:8] = draw(st.sampled_from([b"GGUF\x01\x00\x00\x00", b"GGUF\x02\x00\x00\x00", b"GGUF\xff\xff\xff\xff",
                                         b"FUGG\x03\x00\x00\x00", b"ggjt\x03\x00\x00\x00", bytes(8)]))  # fmt: skip
    else:
        data = bytearray(b"GGUF" * draw(st.booleans()) + draw(st.binary(max_size=200)))
    return bytes(data)


def duplicated_token(valid: bytes) -> bytes:
    """The tiny GGUF with token 823 spelt as token 822: the same size, one byte changed in its vocabulary."""
    at = valid.index(b"<t823>")
    return valid[:at] + b"<t822>" + valid[at + 6 :]


def no_layers(valid: bytes) -> bytes:
    """The tiny GGUF with `llama.block_count` 0 (after the key: its u32 type, then the value)."""
    at = valid.index(b"llama.block_count") + len(b"llama.block_count") + 4
    return valid[:at] + struct.pack("<I", 0) + valid[at + 4 :]


class _Oracle:
    """A child Python answering one JSON request per line; restarted after it dies or stalls."""

    timeout_s = 60.0

    def __init__(self, script: str, env: dict[str, str]) -> None:
        self.script, self.env, self.proc = script, env, None

    def ask(self, request) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", self.script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, env=self.env,
            )  # fmt: skip
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            return {"died": self.proc.wait(timeout=self.timeout_s)}
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=self.timeout_s)


class ToolOracle(_Oracle):
    """gguf_tool.py's `main(["inspect", PATH])` in one process under the tree's gguf-py: its exit code, stdout and
    stderr as a subprocess of its own would give them (a traceback where an exception escapes `main`)."""

    def __init__(self) -> None:
        from quantlab.llamacpp.ops import GGUF_TOOL
        from quantlab.llamacpp.source import tools_env

        script = (
            "import contextlib, importlib.util, io, json, sys, traceback\n"
            f"spec = importlib.util.spec_from_file_location('gguf_tool', {str(GGUF_TOOL)!r})\n"
            "tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)\n"
            "for line in sys.stdin:\n"
            "    out, err, escaped = io.StringIO(), io.StringIO(), None\n"
            "    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
            "        try:\n"
            "            rc = tool.main(json.loads(line))\n"
            "        except BaseException as exc:\n"
            "            rc, escaped = 1, type(exc).__name__\n"
            "            traceback.print_exc()\n"
            "    answer = {'rc': rc, 'stdout': out.getvalue(), 'stderr': err.getvalue(), 'escaped': escaped}\n"
            "    sys.__stdout__.write(json.dumps(answer) + '\\n'); sys.__stdout__.flush()\n"
        )
        super().__init__(script, tools_env(tools_tree()))

    def run(self, command, **_) -> subprocess.CompletedProcess:
        """Stands in for `subprocess.run` inside `quantlab.llamacpp.ops`."""
        answer = self.ask(command[2:])
        if "died" in answer or answer["escaped"]:
            raise Violation(f"gguf_tool.py {' '.join(command[2:3])} died: {answer}")
        return subprocess.CompletedProcess(command, answer["rc"], answer["stdout"], answer["stderr"])


def inspect_outcome(oracle: ToolOracle, folder: Path, data: bytes) -> str:
    """`ops.inspect` on `data`: the tensor census, or one ArtifactError line naming the file."""
    from quantlab.errors import ArtifactError
    from quantlab.llamacpp import ops

    path = folder / "model.gguf"
    path.write_bytes(data)
    with mock.patch.object(ops, "subprocess", SimpleNamespace(run=oracle.run)):
        outcome, value = guarded(lambda: ops.inspect(path), "model.gguf", expected=ArtifactError)
    if outcome == ACCEPTED and not (isinstance(value, dict) and isinstance(value.get("tensors"), list)):
        raise Violation(f"inspect returned {str(value)[:200]}")
    return outcome


class LoadOracle(_Oracle):
    """llama.cpp opening the file as `quantlab bench` does (the `llamacpp` runtime, CPU): ok, the one-line error
    it raises, or the signal that killed it (`died`, with GGML_NO_BACKTRACE so an abort does not wait on gdb)."""

    def __init__(self, manifest: dict) -> None:
        script = (
            "import json, sys\n"
            "from pathlib import Path\n"
            "from quantlab.artifact import Artifact, Manifest\n"
            "from quantlab.runtimes.llamacpp_rt import LlamaCppRuntime\n"
            f"manifest = Manifest.model_validate(json.loads({json.dumps(manifest)!r}))\n"
            "for line in sys.stdin:\n"
            "    try:\n"
            "        artifact = Artifact(path=Path(json.loads(line)), manifest=manifest)\n"
            "        LlamaCppRuntime().load(artifact, device='cpu').close()\n"
            "        answer = {'ok': True}\n"
            "    except Exception as exc:\n"
            "        answer = {'type': type(exc).__name__, 'message': str(exc)}\n"
            "    print(json.dumps(answer), flush=True)\n"
        )
        super().__init__(script, {**os.environ, "GGML_NO_BACKTRACE": "1"})


def load_outcome(oracle: LoadOracle, folder: Path, data: bytes, file: str) -> str:
    """llama.cpp on `data`: it loads, or a BenchError of one line; an exception of another type or a dead
    process (llama.cpp aborts on some damaged vocabularies) is a Violation."""
    (folder / file).write_bytes(data)
    answer = oracle.ask(str(folder))
    if "died" in answer:
        raise Violation(f"llama.cpp killed the process opening a damaged GGUF (exit {answer['died']})")
    if answer.get("ok"):
        return ACCEPTED
    if answer["type"] != "BenchError" or len(answer["message"].splitlines()) != 1:
        raise Violation(f"opening a damaged GGUF raised {answer['type']}: {answer['message'][:300]!r}")
    return "one-line error"
