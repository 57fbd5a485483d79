"""The reference shelf a Ray run's driver serves: machines with no common filesystem fetch a reference by its
content address instead of loading the baseline, publish one they made, and the driver never keeps a file that
is not whole or not what its name says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantlab.errors import BenchError
from quantlab.reference import reference_name
from quantlab.sweep.shelf import Shelf, ShelfServer
from tests.test_reference import CTX, VOCAB, FixedSession, _write


@pytest.fixture
def made(tmp_path):
    """A reference under its content-addressed name, in a directory of its own."""
    torch.manual_seed(0)
    base = FixedSession(torch.randn(VOCAB, VOCAB) * 3)
    ids = np.random.default_rng(0).integers(0, VOCAB, size=3 * CTX)
    (tmp_path / "maker").mkdir()
    ref = _write(tmp_path / "maker", base, ids)
    named = ref.path.with_name(reference_name(ref.header.key()))
    ref.path.rename(named)
    return named


def test_a_reference_is_fetched_whole_and_an_absent_one_is_not(tmp_path, made):
    (tmp_path / "driver").mkdir()
    (tmp_path / "driver" / made.name).write_bytes(made.read_bytes())
    with ShelfServer(tmp_path / "driver", "127.0.0.1") as server:
        dest = tmp_path / "worker" / made.name
        assert server.shelf.fetch(made.name, dest)
        assert dest.read_bytes() == made.read_bytes()
        assert not server.shelf.fetch(reference_name("0" * 16), tmp_path / "worker" / "other")
        assert not Shelf(server.shelf.url[:-1] + "x").fetch(made.name, tmp_path / "guess")  # another token
        assert not server.shelf.fetch("../driver", tmp_path / "up")  # only reference names are served
    assert sorted(p.name for p in (tmp_path / "worker").iterdir()) == [made.name]  # nothing half-written


def test_a_published_reference_is_checked_before_it_is_kept(tmp_path, made):
    root = tmp_path / "driver"
    with ShelfServer(root, "127.0.0.1") as server:
        assert server.shelf.publish(made) and (root / made.name).read_bytes() == made.read_bytes()
        assert not server.shelf.publish(made)  # the driver has it: not sent again
        damaged = tmp_path / "damaged" / reference_name("1" * 16)
        damaged.parent.mkdir()
        data = bytearray(made.read_bytes())
        data[-5] ^= 0xFF  # a byte of the last window's rows
        damaged.write_bytes(bytes(data))
        with pytest.raises(BenchError, match="refused"):
            server.shelf.publish(damaged)
        renamed = damaged.with_name(reference_name("2" * 16))
        renamed.write_bytes(made.read_bytes())
        with pytest.raises(BenchError, match="content address"):  # whole, but not what its name says
            server.shelf.publish(renamed)
    assert sorted(p.name for p in root.iterdir()) == [made.name]  # no partial upload left behind


def test_a_bench_fetches_the_reference_or_publishes_the_one_it_made(tiny_benched, tmp_path, monkeypatch):
    """Two machines as two references directories: the first bench makes the reference and publishes it to the
    driver; a bench on the second machine fetches it and loads no baseline."""
    from quantlab.bench import BenchConfig, bench

    made, _, _ = tiny_benched
    config = BenchConfig(dataset="embedded", ctx=128, max_tokens=384, speed=False)
    with ShelfServer(tmp_path / "driver", "127.0.0.1") as server:
        for machine, expect in (("first", "published"), ("second", "fetched")):
            monkeypatch.setenv("QUANTLAB_REFERENCES", str(tmp_path / machine))
            said: list[str] = []
            bench(
                [made["w4"].path], baseline=made["base"].path, config=config, progress=said.append, shelf=server.shelf
            )
            assert any(expect in line for line in said), said
            assert any("loading baseline" in line for line in said) == (machine == "first")
    (kept,) = (tmp_path / "driver").iterdir()
    assert (
        (tmp_path / "second" / kept.name).read_bytes()
        == kept.read_bytes()
        == (tmp_path / "first" / kept.name).read_bytes()
    )
