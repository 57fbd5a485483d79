from __future__ import annotations

import pytest

from quantlab.errors import RigError
from quantlab.rigs import BUILTIN_RIGS, check_matches, get_rig, load_rigs, usd_per_million


def test_cost_formula():
    # $2/h at 1000 tok/s: 3.6M tokens per hour → $0.5556 per 1M
    assert usd_per_million(2.0, 1000) == pytest.approx(2.0 / 3.6)


def test_builtin_rigs_cover_the_guide():
    assert {"cpu", "rtx4090", "2xrtx4090", "h100", "2xh100", "h200", "b200"} <= set(BUILTIN_RIGS)
    assert all(r.price_note for r in BUILTIN_RIGS.values())


def test_unknown_rig_and_price_override():
    with pytest.raises(RigError, match="unknown rig 'tpu'"):
        get_rig("tpu")
    rig = get_rig("h100", price_per_hour=1.5)
    assert rig.price_per_hour == 1.5 and "command line" in rig.price_note
    with pytest.raises(RigError):
        get_rig("cpu", price_per_hour=0)


def test_rigs_file(tmp_path):
    path = tmp_path / "rigs.yaml"
    path.write_text(
        "rigs:\n  - {name: cpu, description: my box, device: cpu, price_per_hour: 0.5, "
        "price_note: my bill}\n  - {name: l4, description: L4, device: cuda, gpu_match: L4, "
        "n_gpus: 1, price_per_hour: 0.8, price_note: x}\n"
    )
    rigs = load_rigs(path)
    assert rigs["cpu"].price_per_hour == 0.5 and "l4" in rigs and "h100" in rigs
    path.write_text("rigs:\n  - {name: x, description: y, device: cpu, price_per_hour: 1, price_note: z, prise: 2}\n")
    with pytest.raises(RigError, match="prise"):
        load_rigs(path)


def test_a_measurement_keeps_its_rig_honest():
    check_matches(BUILTIN_RIGS["cpu"], "cpu", "Xeon")
    check_matches(BUILTIN_RIGS["h100"], "cuda:0", "NVIDIA H100 80GB HBM3")
    with pytest.raises(RigError, match="GPU rig"):
        check_matches(BUILTIN_RIGS["h100"], "cpu", "Xeon")
    with pytest.raises(RigError, match="H100"):
        check_matches(BUILTIN_RIGS["h100"], "cuda:0", "NVIDIA H200")
    with pytest.raises(RigError, match="CPU rig"):
        check_matches(BUILTIN_RIGS["cpu"], "cuda:0", "NVIDIA H200")
