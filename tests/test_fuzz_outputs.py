"""Property-based fuzzing of what quantlab parses that is not a file it wrote: llama.cpp's tool outputs (KLD
summary, llama-bench JSON, batched-bench rows, the KV-cache log line, the KLD base file), the values of the bench
and method options, and GGUF files with damaged headers (read by gguf-py and opened by llama.cpp). Each returns what
it documents or raises one QuantlabError line, never another exception."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import fuzz_gguf as fg
from tests import fuzz_properties as fp
from tests.fuzz_outputs import (
    TOOL_OUTPUTS,
    kld_base_files,
    kld_base_outcome,
    kld_base_whole_files,
    kld_rows_outcome,
    option_values,
    options_outcome,
    reference_outcome,
    tool_output,
)
from tests.fuzz_strategies import fuzz_settings


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-outputs")


def test_the_real_outputs_parse():
    assert all(reference_outcome(text) == fp.ACCEPTED for text in TOOL_OUTPUTS)


@fuzz_settings(3)
@given(text=tool_output())
def test_tool_outputs(text):
    reference_outcome(text)


@fuzz_settings()
@given(data=kld_base_files())
def test_kld_base_files(scratch, data):
    kld_base_outcome(scratch, data)


@fuzz_settings()
@given(data=kld_base_whole_files())
def test_kld_base_rows(scratch, data):
    kld_rows_outcome(scratch, data)


def _bench_fields() -> list[str]:
    from quantlab.bench.config import BenchConfig

    return list(BenchConfig.model_fields)


@fuzz_settings(2)
@given(values=option_values(_bench_fields()))
def test_bench_option_values(values):
    from quantlab.bench.config import BenchConfig
    from quantlab.errors import BenchError

    options_outcome(BenchConfig, values, BenchError)


METHODS = ["none", "rtn", "gptq", "awq", "gguf", "fp8", "fp4", "bnb", "torchao", "magic", ""]


METHOD_FIELDS = ["bits", "group_size", "scheme", "dtype", "damp", "backend", "act_order", "n_grid", "imatrix"]


@fuzz_settings(2)
@given(method=st.sampled_from(METHODS), values=option_values([*METHOD_FIELDS, "double_quant", "compute_dtype"]))
def test_method_option_values(method, values):
    from quantlab.errors import SpecError
    from quantlab.spec import MethodSpec

    options_outcome(MethodSpec, {"method": method, **values}, SpecError)


needs_gguf = pytest.mark.skipif(fg.tools_tree() is None, reason="llama.cpp's tree (gguf-py) is not extracted here")
needs_llama = pytest.mark.skipif(not fg.llama_built(), reason="quantlab's llama.cpp build is not there")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """The one valid GGUF of the session, and where its header ends; every example mutates a copy."""
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    header = fg.write_tiny_gguf(path)
    return path.read_bytes(), header


@pytest.fixture(scope="module")
def tool_oracle():
    oracle = fg.ToolOracle()
    yield oracle
    oracle.close()


@needs_gguf
@fuzz_settings(2)
@given(data=st.data())
def test_gguf_headers_read_by_gguf_py(tiny_gguf, tool_oracle, scratch, data):
    valid, header = tiny_gguf
    fg.inspect_outcome(tool_oracle, scratch, data.draw(fg.gguf_mutations(valid, header)))


@pytest.fixture(scope="module")
def load_oracle(tmp_path_factory):
    manifest = fp.make_artifact(tmp_path_factory.mktemp("gguf-artifact") / "a")
    oracle = fg.LoadOracle(manifest)
    yield oracle, manifest["gguf"]["file"]
    oracle.close()


@needs_gguf
@needs_llama
@fuzz_settings(0.5)
@given(data=st.data())
def test_gguf_headers_opened_by_llama_cpp(tiny_gguf, load_oracle, scratch, data):
    """llama.cpp opens the file or the runtime raises one BenchError line, never killing the process (llama.cpp
    aborts on some damaged headers: the runtime opens each file in a child first)."""
    valid, header = tiny_gguf
    oracle, file = load_oracle
    fg.load_outcome(oracle, scratch, data.draw(fg.gguf_mutations(valid, header)), file)


@needs_gguf
@needs_llama
@pytest.mark.parametrize("damage", [fg.duplicated_token, fg.no_layers])
def test_headers_on_which_llama_cpp_aborts_are_one_line(tiny_gguf, load_oracle, tmp_path, damage):
    """A vocabulary with a repeated token, a block count of 0: llama.cpp GGML_ASSERTs and abort()s the process
    that opens such a file; the runtime's child process takes that instead, and the bench gets one line."""
    valid, _ = tiny_gguf
    oracle, file = load_oracle
    assert fg.load_outcome(oracle, tmp_path, damage(valid), file) == fp.ERROR


@needs_gguf
def test_the_tiny_gguf_is_read_and_a_bad_magic_is_one_line(tiny_gguf, tool_oracle, tmp_path):
    valid, header = tiny_gguf
    assert fg.inspect_outcome(tool_oracle, tmp_path, valid) == fp.ACCEPTED
    assert header < len(valid) and struct.unpack_from("<I", valid, 4)[0] == 3
    assert fg.inspect_outcome(tool_oracle, tmp_path, b"GGUX" + valid[4:]) == fp.ERROR
