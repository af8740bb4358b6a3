"""SRVGGNetCompact (Real-ESRGAN's compact model), with Real-ESRGAN parameter names."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
