"""The Ray cluster a recipe fans out over (`quantlab run --ray`): connecting, the checks every run passes before
any cell starts, and the resources a cell asks for.

Checked before the first cell, each failure one line:
- `work_dir` is visible from every node that could run a cell. A probe file the driver writes there is read back
  by a task pinned to each node: a node on its own disk would quantize into a folder nobody else sees, and the
  bench of that artifact would fail hours later on another node.
- the rig the run measures as is one the cluster can host: a CUDA rig needs its GPU count on one node.

A cell's resources: on the `cpu` rig it reserves a whole node's CPUs by default, because a timing taken beside
another cell measures both (and torch sizes its thread pool from the reservation, as in a serial run); on a
CUDA rig it reserves the rig's GPUs and one CPU. On the cpu rig a cell also reserves its memory-fit estimate
(the dry-run's arithmetic, when the model's config can be read), so Ray never packs cells a node cannot hold.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from quantlab.errors import QuantlabError, exception_line

PROBE_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 10.0
# Handed to every task so a worker resolves the same cache (converted default model, llama.cpp build) and the
# same quiet library output as the driver.
FORWARDED_ENV = (
    "QUANTLAB_CACHE",
    "XDG_CACHE_HOME",
    "GLIBC_TUNABLES",
    "TQDM_DISABLE",
    "TRANSFORMERS_VERBOSITY",
    "HF_HUB_OFFLINE",
)


class ClusterError(QuantlabError):
    """The cluster cannot run this recipe as asked; raised before any cell starts."""


class RaySettings(BaseModel):
    """A recipe's `ray:` section; `quantlab run --ray [ADDRESS]` overrides the address."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        None,
        description="a running cluster (`auto`: the one on this machine, or the head's `HOST:PORT`); "
        "unset: RAY_ADDRESS, else a local cluster started for this run",
    )
    retries: int = Field(2, ge=0, description="retries of a cell whose worker process or node died mid-cell")
    cpus_per_cell: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="CPUs a cell reserves; default: a whole node on the cpu rig, 1 on a CUDA rig",
    )


@dataclass(frozen=True)
class Node:
    node_id: str
    host: str
    ip: str
    cpus: float
    gpus: float


@dataclass(frozen=True)
class Resources:
    num_cpus: float
    num_gpus: float

    def describe(self) -> str:
        return f"{self.num_cpus:g} CPU, {self.num_gpus:g} GPU"


def _reachable(address: str) -> None:
    """A HOST:PORT that does not answer fails now: ray.init retries an unreachable head for minutes."""
    host, _, port = address.rpartition(":")
    if not (host and port.isdigit()):
        return
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterError(f"ray: no cluster answers at {address} ({exc.strerror or exc})") from None


def connect(address: str | None) -> str:
    """Join the cluster at `address` (else RAY_ADDRESS's), or start a local one for this run; returns how it is
    described in progress lines. A local one is started explicitly (`local`): Ray's own default would join
    whatever cluster this machine ran last, even one that has since stopped."""
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs Ray: pip install 'quantlab[ray]'") from None
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address != "local":
        _reachable(address)
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            runtime_env={"env_vars": env} if env else None,
            logging_level="warning",
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"ray: cannot join {address}: {exception_line(exc)}") from None
    return "a local Ray cluster started for this run" if address == "local" else f"the Ray cluster at {address}"


def nodes() -> list[Node]:
    import ray

    return [
        Node(
            node_id=n["NodeID"],
            host=n.get("NodeManagerHostname", "?"),
            ip=n.get("NodeManagerAddress", "?"),
            cpus=n["Resources"].get("CPU", 0.0),
            gpus=n["Resources"].get("GPU", 0.0),
        )
        for n in ray.nodes()
        if n.get("Alive")
    ]


def cell_resources(rig, settings: RaySettings, cluster: list[Node]) -> Resources:
    """What one cell reserves on the rig the run measures as; refuses a rig no node can host."""
    if rig.device == "cuda":
        most = max((n.gpus for n in cluster), default=0.0)
        if most < rig.n_gpus:
            raise ClusterError(
                f"rig {rig.name} needs {rig.n_gpus} GPU(s) on one node; this cluster's nodes have at most {most:g}"
            )
        return Resources(num_cpus=settings.cpus_per_cell or 1.0, num_gpus=float(rig.n_gpus))
    with_cpus = [n.cpus for n in cluster if n.cpus > 0]
    if not with_cpus:
        raise ClusterError("this cluster has no node with CPUs to run a cell on")
    cpus = settings.cpus_per_cell or min(with_cpus)
    if cpus > max(with_cpus):
        raise ClusterError(f"ray.cpus_per_cell {cpus:g} is more than any node has (at most {max(with_cpus):g})")
    return Resources(num_cpus=cpus, num_gpus=0.0)


def _probe(path: str, token: str) -> tuple[str, bool]:
    try:
        seen = Path(path).read_text(encoding="utf-8") == token
    except OSError:
        seen = False
    return socket.gethostname(), seen


def check_work_dir(work_dir: Path, cluster: list[Node], need: Resources) -> None:
    """Every node that could run a cell reads back a file the driver just wrote into `work_dir`."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = work_dir / f".quantlab-probe-{secrets.token_hex(6)}"
    token = secrets.token_hex(16)
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text(token, encoding="utf-8")
    except OSError as exc:
        raise ClusterError(f"work_dir {work_dir}: the driver cannot write there ({exc.strerror or exc})") from None
    try:
        able = [n for n in cluster if n.cpus >= need.num_cpus and n.gpus >= need.num_gpus]
        task = ray.remote(_probe)
        refs = {
            n: task.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)
            ).remote(str(probe), token)
            for n in able
        }
        try:
            answers = dict(zip(refs, ray.get(list(refs.values()), timeout=PROBE_TIMEOUT_S), strict=True))
        except ray.exceptions.GetTimeoutError:
            raise ClusterError(
                f"ray: a node did not answer the work_dir check within {PROBE_TIMEOUT_S:.0f} s"
            ) from None
    finally:
        probe.unlink(missing_ok=True)
    blind = [f"{n.host} ({n.ip})" for n, (_, seen) in answers.items() if not seen]
    if blind:
        raise ClusterError(
            f"work_dir {work_dir} is not visible from node(s) {', '.join(blind)}: every node must see the same "
            "storage (a shared mount), or the artifacts one node makes are missing on the others"
        )
