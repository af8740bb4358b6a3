"""RRDBNet, the ESRGAN generator (Wang et al. 2018), with BasicSR / Real-ESRGAN parameter names.

The file is the architecture's whole description (:data:`ARCHITECTURE`): the module, and the detection of
its state dicts in three key layouts, converted to the BasicSR / Real-ESRGAN "new-arch" names:

- new-arch: ``conv_first, body.N.rdbK.convJ, conv_body, conv_up1, conv_up2, conv_hr, conv_last``;
- the ESRGAN repository's: ``conv_first, RRDB_trunk.N.RDBK.convJ, trunk_conv, upconv1, upconv2, HRconv,
  conv_last``;
- the 2018 "old-arch": ``model.0, model.1.sub.N.RDBK.convJ.0, model.1.sub.<num_block>`` (trunk conv),
  ``model.3, model.6, model.8, model.10``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from certsr_rt.errors import ModelLoadError
from certsr_rt.models.arch.base import Architecture, StateDict, TileLimits, indices, preview

__all__ = ["ARCHITECTURE", "RRDB", "RRDBNet", "ResidualDenseBlock"]


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions with a residual scaled by 0.2.

    Args:
        num_feat: channels in and out.
        num_grow_ch: channels added by each of the first four convolutions.
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block (N x C x H x W in, same layout out)."""
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks and an outer residual scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block (N x C x H x W in, same layout out)."""
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN generator: ``num_block`` RRDBs at LR resolution, then nearest x2 upsampling + conv, twice.

    Only scale 4 is built natively (the paper's and Real-ESRGAN x4plus' setting); scales 1 and 2 use
    BasicSR's pixel-unshuffle front end so that x2/x1 checkpoints load too.

    Args:
        num_in_ch: input channels.
        num_out_ch: output channels.
        scale: 1, 2 or 4.
        num_feat: trunk channels (64 in ESRGAN).
        num_block: number of RRDB blocks (23 in ESRGAN).
        num_grow_ch: growth channels of the dense blocks (32 in ESRGAN).
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet supports scale 1, 2 or 4, got {scale}")
        self.scale = scale
        first_in = num_in_ch * {4: 1, 2: 4, 1: 16}[scale]
        self.conv_first = nn.Conv2d(first_in, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block (N x C x H x W in, same layout out)."""
        if self.scale == 2:
            x = F.pixel_unshuffle(x, 2)
        elif self.scale == 1:
            x = F.pixel_unshuffle(x, 4)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


# -------------------------------------------------------------------------------------- state-dict detection


def _detect(sd: StateDict) -> tuple[dict[str, Any], StateDict] | None:
    if "conv_first.weight" in sd and "body.0.rdb1.conv1.weight" in sd:
        return _hyperparameters(sd), sd
    if "RRDB_trunk.0.RDB1.conv1.weight" in sd:
        sd = _convert_esrgan_repo(sd)
        return _hyperparameters(sd), sd
    if "model.0.weight" in sd and "model.1.sub.0.RDB1.conv1.0.weight" in sd:
        sd = _convert_old_arch(sd)
        return _hyperparameters(sd), sd
    return None


def _convert_esrgan_repo(sd: StateDict) -> StateDict:
    renames = {
        "trunk_conv.": "conv_body.",
        "upconv1.": "conv_up1.",
        "upconv2.": "conv_up2.",
        "HRconv.": "conv_hr.",
    }
    out: StateDict = {}
    for key, v in sd.items():
        new = re.sub(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.", r"body.\1.rdb\2.", key)
        for old, repl in renames.items():
            if new.startswith(old):
                new = repl + new[len(old) :]
        out[new] = v
    return out


def _convert_old_arch(sd: StateDict) -> StateDict:
    blocks = indices(sd, r"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight")
    num_block = max(blocks) + 1
    if f"model.1.sub.{num_block}.weight" not in sd or "model.10.weight" not in sd:
        raise ModelLoadError(
            "old-arch ESRGAN layout (model.N keys) with an unsupported structure: expected "
            f"model.1.sub.{num_block} (trunk conv) and model.3/6/8/10 (x4 upsampler), found {preview(sd, 8)}"
        )
    fixed = {
        "model.0.": "conv_first.",
        f"model.1.sub.{num_block}.": "conv_body.",
        "model.3.": "conv_up1.",
        "model.6.": "conv_up2.",
        "model.8.": "conv_hr.",
        "model.10.": "conv_last.",
    }
    out: StateDict = {}
    for key, v in sd.items():
        new = re.sub(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.", r"body.\1.rdb\2.conv\3.", key)
        if new == key:
            for old, repl in fixed.items():
                if key.startswith(old):
                    new = repl + key[len(old) :]
                    break
        out[new] = v
    return out


def _hyperparameters(sd: StateDict) -> dict[str, Any]:
    if "conv_up3.weight" in sd:
        raise ModelLoadError(
            "RRDBNet x8 checkpoints (conv_up3) are not supported; expected an x4, x2 or x1 one"
        )
    for key in ("conv_first.weight", "conv_last.weight", "body.0.rdb1.conv1.weight"):
        if key not in sd or sd[key].dim() != 4:
            raise ModelLoadError(f"RRDBNet state dict without a 4-D {key} (found {preview(sd)})")
    blocks = indices(sd, r"body\.(\d+)\.rdb1\.conv1\.weight")
    if blocks != set(range(len(blocks))):
        raise ModelLoadError(f"RRDBNet blocks are not numbered 0..{len(blocks) - 1}: found {sorted(blocks)}")
    num_feat, first_in = sd["conv_first.weight"].shape[:2]
    num_out = sd["conv_last.weight"].shape[0]
    # BasicSR's x2 / x1 RRDBNet pixel-unshuffle the input by 2 / 4 before conv_first.
    if first_in == num_out:
        scale, num_in = 4, first_in
    elif first_in == 4 * num_out:
        scale, num_in = 2, num_out
    elif first_in == 16 * num_out:
        scale, num_in = 1, num_out
    else:
        scale, num_in = 4, first_in
    return {
        "num_in_ch": int(num_in),
        "num_out_ch": int(num_out),
        "scale": scale,
        "num_feat": int(num_feat),
        "num_block": len(blocks),
        "num_grow_ch": int(sd["body.0.rdb1.conv1.weight"].shape[0]),
    }


def _scale(hyperparameters: Mapping[str, Any]) -> int:
    return int(hyperparameters.get("scale", 4))


def _size_multiple(hyperparameters: Mapping[str, Any]) -> int:
    # BasicSR's x2 / x1 front end pixel-unshuffles the input by 2 / 4.
    return {4: 1, 2: 2, 1: 4}.get(_scale(hyperparameters), 1)


ARCHITECTURE = Architecture(
    name="RRDBNet",
    module=RRDBNet,
    detect=_detect,
    scale=_scale,
    # Measured order of magnitude: it keeps 64-channel maps at 16x the LR pixel count in its upsampling tail.
    bytes_per_lr_pixel=14_000,
    label="an RRDBNet (ESRGAN / Real-ESRGAN)",
    supports_half=True,
    size_multiple=_size_multiple,
    depth_key="num_block",
    # The bundled RRDBNet sees much further than any practical tile: its maximum stays above 10 levels even
    # at tile 192 with overlap 48 (29 levels), so its floor of 32 is the overlap that halves the worst seam
    # of the old default 16 (96 -> 46 levels at tile 192); only --tile 0 is exact for it.
    tile_limits=(
        TileLimits(min_tile=12, min_overlap=8, depth=1, measured_on="tiny-rrdbnet"),
        TileLimits(min_tile=96, min_overlap=32, depth=23, measured_on="realesrgan-x4plus"),
    ),
    # No skip from input to output: generated random weights give outputs around -0.06 (black once clamped).
    output_conv="conv_last",
)
