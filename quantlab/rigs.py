"""Named rigs: the hardware a measurement was made on, with the price used to turn speed into cost.

Prices are inputs, not measurements: the built-in ones are indicative on-demand list prices and every cost
table prints the price it used. Override them per command (`--price-per-hour`) or with a YAML rigs file.
A result can only carry a rig that matches the hardware it was measured on: a CPU timing priced as an
H100 would be a number from one machine labelled as another.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from quantlab.errors import RigError
from quantlab.yamlfile import load_yaml_model

COST_FORMULA = "$/1M tokens = price_per_hour / (tokens_per_second × 3600) × 1e6"


class Rig(BaseModel):
    # A price or size of .inf or .nan (YAML spells both) would reach every cost table as a number.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    description: str
    device: Literal["cpu", "cuda"]
    gpu_match: str | None = Field(None, description="substring of the CUDA device name that identifies it")
    n_gpus: int = Field(0, ge=0)
    price_per_hour: float = Field(gt=0)
    price_note: str
    memory_gb: float | None = Field(None, gt=0)  # per rig (all GPUs together); None = measured on the host
    bandwidth_gb_s: float | None = Field(None, gt=0)  # per GPU, vendor peak


_INDICATIVE = "indicative on-demand cloud price, not a quote; override with --price-per-hour or --rigs-file"

BUILTIN_RIGS: dict[str, Rig] = {
    rig.name: rig
    for rig in [
        Rig(
            name="cpu",
            description="the CPU of the host that ran the bench",
            device="cpu",
            price_per_hour=0.0893,
            price_note="AWS c7i.large (2 vCPU Sapphire Rapids) on-demand us-east-1 list price; "
            "override for other CPU hosts",
        ),
        Rig(
            name="rtx4090",
            description="1× NVIDIA RTX 4090 24 GB",
            device="cuda",
            gpu_match="4090",
            n_gpus=1,
            price_per_hour=0.69,
            price_note=_INDICATIVE,
            memory_gb=24,
            bandwidth_gb_s=1008,
        ),
        Rig(
            name="2xrtx4090",
            description="2× NVIDIA RTX 4090 24 GB",
            device="cuda",
            gpu_match="4090",
            n_gpus=2,
            price_per_hour=1.38,
            price_note=_INDICATIVE,
            memory_gb=48,
            bandwidth_gb_s=1008,
        ),
        Rig(
            name="h100",
            description="1× NVIDIA H100 80 GB SXM",
            device="cuda",
            gpu_match="H100",
            n_gpus=1,
            price_per_hour=2.99,
            price_note=_INDICATIVE,
            memory_gb=80,
            bandwidth_gb_s=3350,
        ),
        Rig(
            name="2xh100",
            description="2× NVIDIA H100 80 GB SXM",
            device="cuda",
            gpu_match="H100",
            n_gpus=2,
            price_per_hour=5.98,
            price_note=_INDICATIVE,
            memory_gb=160,
            bandwidth_gb_s=3350,
        ),
        Rig(
            name="h200",
            description="1× NVIDIA H200 141 GB",
            device="cuda",
            gpu_match="H200",
            n_gpus=1,
            price_per_hour=3.79,
            price_note=_INDICATIVE,
            memory_gb=141,
            bandwidth_gb_s=4800,
        ),
        Rig(
            name="b200",
            description="1× NVIDIA B200 180 GB",
            device="cuda",
            gpu_match="B200",
            n_gpus=1,
            price_per_hour=5.99,
            price_note=_INDICATIVE,
            memory_gb=180,
            bandwidth_gb_s=8000,
        ),
    ]
}


class RigsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rigs: list[Rig]


def load_rigs(rigs_file: str | Path | None = None) -> dict[str, Rig]:
    """Built-in rigs, overridden or extended by a YAML file `rigs: [{name: ..., ...}, ...]`."""
    rigs = dict(BUILTIN_RIGS)
    if rigs_file is None:
        return rigs
    parsed = load_yaml_model(rigs_file, RigsFile, RigError, "rigs file")
    rigs.update({rig.name: rig for rig in parsed.rigs})
    return rigs


def get_rig(name: str, *, rigs_file: str | Path | None = None, price_per_hour: float | None = None) -> Rig:
    rigs = load_rigs(rigs_file)
    rig = rigs.get(name)
    if rig is None:
        raise RigError(f"unknown rig {name!r}; known rigs: {', '.join(rigs)} (add one with --rigs-file)")
    if price_per_hour is not None:
        if not 0 < price_per_hour < math.inf:  # NaN fails both comparisons
            raise RigError(f"--price-per-hour must be a positive number, not {price_per_hour}")
        rig = rig.model_copy(update={"price_per_hour": price_per_hour, "price_note": "given on the command line"})
    return rig


def check_matches(rig: Rig, device: str, device_name: str) -> None:
    """Refuse to label a measurement with a rig it was not made on."""
    if rig.device == "cpu" and device != "cpu":
        raise RigError(f"rig {rig.name!r} is a CPU rig but the bench runs on {device} ({device_name})")
    if rig.device == "cuda":
        if not device.startswith("cuda"):
            raise RigError(
                f"rig {rig.name!r} is a GPU rig ({rig.description}) but this bench runs on the CPU; "
                "measure on that rig, or use --rig cpu"
            )
        if rig.gpu_match and rig.gpu_match.lower() not in device_name.lower():
            raise RigError(
                f"rig {rig.name!r} expects a GPU named like {rig.gpu_match!r}, this one is "
                f"{device_name!r}; pick the matching rig or define one with --rigs-file"
            )


def usd_per_million(price_per_hour: float, tokens_per_second: float) -> float:
    return price_per_hour / (tokens_per_second * 3600) * 1e6
