"""SRVGGNetCompact (Real-ESRGAN's compact model), with Real-ESRGAN parameter names.

The file is the architecture's whole description (:data:`ARCHITECTURE`). Its state dicts have ``body.N``
keys only: convolutions at even indices, PReLU weights at odd ones.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from certsr_rt.errors import ModelLoadError
from certsr_rt.models.arch.base import Architecture, StateDict, TileLimits, indices

__all__ = ["ARCHITECTURE", "SRVGGNetCompact"]

log = logging.getLogger(__name__)


class SRVGGNetCompact(nn.Module):
    """A plain VGG-style stack at LR resolution, a pixel shuffle, and a nearest-upsampled input skip.

    ``body`` alternates conv and activation: ``body.0`` is the first conv, ``body.2k`` the k-th conv,
    ``body.{2*num_conv+2}`` the last conv (features -> out_ch * upscale**2).

    Args:
        num_in_ch: input channels.
        num_out_ch: output channels.
        num_feat: channels of the hidden convolutions.
        num_conv: hidden convolutions after the first one (16 for animevideov3, 32 for general-x4v3).
        upscale: upscaling factor.
        act_type: ``"prelu"``, ``"relu"`` or ``"leakyrelu"``.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        act_type: str = "prelu",
    ) -> None:
        super().__init__()
        self.upscale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), self._act(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), self._act(act_type, num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.Sequential(*layers)
        self.upsampler = nn.PixelShuffle(upscale)

    @staticmethod
    def _act(act_type: str, num_feat: int) -> nn.Module:
        if act_type == "prelu":
            return nn.PReLU(num_parameters=num_feat)
        if act_type == "relu":
            return nn.ReLU(inplace=True)
        if act_type == "leakyrelu":
            return nn.LeakyReLU(negative_slope=0.1, inplace=True)
        raise ValueError(f"act_type must be prelu, relu or leakyrelu, got {act_type!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block (N x C x H x W in, same layout out)."""
        out = self.upsampler(self.body(x))
        return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


# -------------------------------------------------------------------------------------- state-dict detection


def _detect(sd: StateDict) -> tuple[dict[str, Any], StateDict] | None:
    if "body.0.weight" in sd and all(re.fullmatch(r"body\.\d+\.(weight|bias)", k) for k in sd):
        return _hyperparameters(sd), sd
    return None


def _hyperparameters(sd: StateDict) -> dict[str, Any]:
    last = max(indices(sd, r"body\.(\d+)\.weight"))
    first = sd["body.0.weight"]
    if first.dim() != 4 or last < 2 or last % 2 or sd[f"body.{last}.weight"].dim() != 4:
        raise ModelLoadError(
            f"SRVGGNetCompact-like keys (body.N) but an unexpected structure: last conv body.{last}, "
            f"body.0.weight shape {tuple(first.shape)}"
        )
    num_feat, num_in = int(first.shape[0]), int(first.shape[1])
    prelu = sd.get("body.1.weight")
    if prelu is not None and tuple(prelu.shape) == (num_feat,):
        act_type = "prelu"
    elif prelu is None:
        # ReLU and LeakyReLU have no weights: the file cannot tell them apart.
        act_type = "relu"
        log.warning("SRVGGNetCompact without PReLU weights: assuming ReLU activations")
    else:
        raise ModelLoadError(
            f"SRVGGNetCompact body.1.weight: expected shape ({num_feat},), got {tuple(prelu.shape)}"
        )
    last_out = int(sd[f"body.{last}.weight"].shape[0])
    upscale = math.isqrt(last_out // num_in) if last_out % num_in == 0 else 0
    if upscale < 1 or upscale * upscale * num_in != last_out:
        raise ModelLoadError(
            f"SRVGGNetCompact last conv has {last_out} output channels; "
            f"expected in_channels ({num_in}) x scale^2"
        )
    return {
        "num_in_ch": num_in,
        "num_out_ch": num_in,
        "num_feat": num_feat,
        "num_conv": (last - 2) // 2,
        "upscale": upscale,
        "act_type": act_type,
    }


def _scale(hyperparameters: Mapping[str, Any]) -> int:
    return int(hyperparameters.get("upscale", 4))


ARCHITECTURE = Architecture(
    name="SRVGGNetCompact",
    module=SRVGGNetCompact,
    detect=_detect,
    scale=_scale,
    bytes_per_lr_pixel=3_000,
    label="SRVGGNetCompact",
    supports_half=True,
    depth_key="num_conv",
    tile_limits=(
        TileLimits(min_tile=8, min_overlap=4, depth=2, measured_on="tiny-srvgg"),
        TileLimits(min_tile=24, min_overlap=8, depth=16, measured_on="realesr-animevideov3-x4"),
    ),
)
