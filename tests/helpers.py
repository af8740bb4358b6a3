"""Test helpers shared by several test modules: SRModels around tiny modules built in the test."""

from __future__ import annotations

from typing import Any

import torch

from certsr_rt.models.descriptor import SRModel
from certsr_rt.models.rrdbnet import RRDBNet
from certsr_rt.models.srvgg import SRVGGNetCompact


def make_model(
    module: torch.nn.Module,
    name: str,
    architecture: str,
    hyperparameters: dict[str, Any] | None = None,
    *,
    default_sigma: float | None = 0.03,
    sha256: str = "0" * 64,
    supports_half: bool = True,
) -> SRModel:
    """An SRModel around a module built here (tiny random weights, or real weights loaded by hand)."""
    return SRModel(
        module=module,
        name=name,
        architecture=architecture,
        scale=4,
        in_channels=3,
        out_channels=3,
        hyperparameters=dict(hyperparameters or {}),
        default_sigma=default_sigma,
        sha256=sha256,
        source=f"generated:{name}",
        supports_half=supports_half,
    )


def tiny_rrdbnet(seed: int = 0) -> SRModel:
    torch.manual_seed(seed)
    hp = {"num_block": 1, "num_feat": 8, "num_grow_ch": 4}
    return make_model(RRDBNet(**hp).eval(), "tiny-rrdbnet", "RRDBNet", hp)


def tiny_srvgg(seed: int = 0, default_sigma: float | None = 0.03) -> SRModel:
    torch.manual_seed(seed)
    hp = {"num_feat": 8, "num_conv": 2}
    return make_model(
        SRVGGNetCompact(**hp).eval(), "tiny-srvgg", "SRVGGNetCompact", hp, default_sigma=default_sigma
    )
