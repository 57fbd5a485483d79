"""What a backend refuses follows from what it declares: every registered backend, every option field.

The cases are derived from the declarations (`options`, `schemes`), not listed by hand, so a new backend or
option is covered the moment it is registered; only a plausible value per option field is chosen here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from quantlab.errors import SpecError
from quantlab.llamacpp.types import lookup
from quantlab.methods import all_backends, option_takers, schemes
from quantlab.methods.presets import PresetBackend
from quantlab.spec import OPTION_FIELDS, Calibration, MethodSpec, option_flag

# A value each backend that takes the option accepts alongside its own defaults (e.g. bits 4 is valid for every
# integer backend, group size 128 for GPTQModel's powers of two, bf16 for fp4's bf16-only tensors).
VALID = {
    "bits": 4,
    "group_size": 128,
    "symmetric": False,
    "dtype": "bf16",
    "act_order": "group",
    "damp": 0.05,
    "n_grid": 10,
    "imatrix": True,
    "pure": True,
    "tensor_types": ["token_embd.weight=Q8_0"],
    "imatrix_exclude": ["blk.0.ffn_down.weight"],
    "double_quant": True,
    "compute_dtype": "bf16",
    "iters": 10,
    "batch_size": 4,
    "lr": 0.01,
    "rotation": "spinquant",
    "calibration": Calibration(n_samples=8, seq_len=32),
}
# What an option cannot be taken without (a tensor rounded without the importance matrix implies there is one).
REQUIRES = {"imatrix_exclude": {"imatrix": True}}
PLAUSIBLE_SCHEME = "Q4_K_M"  # a real scheme name, of gguf: what a user might carry over to another method


def _value(backend, option: str):
    if option == "scheme":
        return backend.default_scheme or PLAUSIBLE_SCHEME
    return VALID[option]


def _cases(declared: bool) -> list:
    return [
        pytest.param(backend, option, id=f"{backend.method}/{backend.name}-{option}")
        for backend in all_backends()
        for option in OPTION_FIELDS
        if (option in backend.options) == declared
    ]


def _spec(backend, **options) -> MethodSpec:
    return MethodSpec(method=backend.method, backend=backend.name, **options)


def test_every_option_field_is_taken_by_some_backend_and_declared_options_are_fields():
    assert set(option_takers()) == set(OPTION_FIELDS)
    assert all(option_takers().values()), option_takers()
    for backend in all_backends():
        assert backend.options <= set(OPTION_FIELDS) and backend.refusal, backend


@pytest.mark.parametrize(("backend", "option"), _cases(declared=False))
def test_an_undeclared_option_is_refused_naming_its_flag(backend, option):
    with pytest.raises(SpecError) as refused:
        backend.normalize(_spec(backend, **{option: _value(backend, option)}))
    message = str(refused.value)
    assert f"{backend.method}/{backend.name} takes no {option_flag(option)}: {backend.refusal}" == message


@pytest.mark.parametrize(("backend", "option"), _cases(declared=True))
def test_a_declared_option_with_a_valid_value_is_taken(backend, option):
    value = _value(backend, option)
    resolved = backend.normalize(_spec(backend, **{option: value}, **REQUIRES.get(option, {})))
    assert getattr(resolved, option) == value, resolved


def _needs(backend, scheme: str) -> dict:
    """What a scheme cannot go without: an IQ GGUF type requires an importance matrix."""
    return {"imatrix": True} if backend.method == "gguf" and lookup(scheme).imatrix == "required" else {}


@pytest.mark.parametrize("backend", [b for b in all_backends() if b.schemes], ids=lambda b: b.method)
def test_every_listed_scheme_normalizes_and_an_unknown_one_is_refused_naming_the_choices(backend):
    for scheme in backend.schemes:
        assert backend.normalize(_spec(backend, scheme=scheme, **_needs(backend, scheme))).scheme == scheme
    assert backend.normalize(_spec(backend)).scheme == backend.default_scheme
    with pytest.raises(SpecError) as refused:
        backend.normalize(_spec(backend, scheme="NO_SUCH_SCHEME"))
    assert "NO_SUCH_SCHEME" in str(refused.value)
    assert all(scheme in str(refused.value) for scheme in backend.schemes), str(refused.value)


def test_the_registry_lists_each_methods_schemes_default_first():
    listed = schemes()
    by_method = {b.method: b for b in all_backends() if b.schemes}
    assert set(listed) == set(by_method)
    for method, names in listed.items():
        assert names[0] == by_method[method].default_scheme
        assert sorted(names) == sorted(by_method[method].schemes)


def test_a_preset_method_takes_calibration_exactly_when_one_of_its_schemes_is_calibrated():
    for backend in all_backends():
        if isinstance(backend, PresetBackend):
            calibrated = any(preset.calibrated for preset in backend.presets.values())
            assert ("calibration" in backend.options) == calibrated, backend.method


def test_option_takers_say_which_backends_take_an_option():
    takers = option_takers()
    assert takers["n_grid"] == ["awq/llmcompressor"]
    assert takers["imatrix"] == ["gguf/llamacpp"]
    assert "none/transformers" in takers["dtype"] and "gguf/llamacpp" not in takers["dtype"]


def test_the_help_functions_import_no_torch():
    code = (
        "import sys; from quantlab.methods.registry import option_takers, schemes; option_takers(); schemes(); "
        "heavy = [m for m in ('torch', 'transformers', 'llmcompressor') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
