"""ESRGAN's VGG-style discriminator (BasicSR ``VGGStyleDiscriminator``), for 128 or 256 pixel HR crops."""

from __future__ import annotations

import torch
from torch import nn

from certsr_rt.errors import InputError

__all__ = ["VGGStyleDiscriminator"]


class VGGStyleDiscriminator(nn.Module):
    """The discriminator of ESRGAN: strided conv + BatchNorm stages down to 4 x 4, then two linear layers.

    Each stage is a 3x3 stride-1 convolution followed by a 4x4 stride-2 convolution (halving the size), with
    BatchNorm (except on the very first convolution) and LeakyReLU(0.2). Five stages take a 128 x 128 crop
    to 4 x 4 ("VGG-128"); ``input_size=256`` adds a sixth. Parameter names are BasicSR's (``conv0_0``,
    ``bn0_1``, ..., ``linear2``), so a BasicSR ``net_d`` checkpoint of the same size loads.

    The flatten + linear head fixes the input size: an HR crop of another size is refused rather than
    silently resized. Train with HR crops of exactly ``input_size`` (the paper's 480-pixel crops need a
    random 128- or 256-pixel sub-crop for the discriminator, or a different discriminator).

    Args:
        num_in_ch: image channels.
        num_feat: channels of the first stage (doubled up to ``8 * num_feat``).
        input_size: HR crop size, 128 or 256.

    Raises:
        InputError: an ``input_size`` other than 128 or 256.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, input_size: int = 128) -> None:
        super().__init__()
        if input_size not in (128, 256):
            raise InputError(f"VGGStyleDiscriminator input_size must be 128 or 256, got {input_size}")
        if num_in_ch < 1 or num_feat < 1:
            raise InputError(f"num_in_ch and num_feat must be >= 1, got {num_in_ch} and {num_feat}")
        self.input_size = input_size
        self.num_in_ch = num_in_ch
        nf = num_feat

        self.conv0_0 = nn.Conv2d(num_in_ch, nf, 3, 1, 1, bias=True)
        self.conv0_1 = nn.Conv2d(nf, nf, 4, 2, 1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(nf, affine=True)

        self.conv1_0 = nn.Conv2d(nf, nf * 2, 3, 1, 1, bias=False)
        self.bn1_0 = nn.BatchNorm2d(nf * 2, affine=True)
        self.conv1_1 = nn.Conv2d(nf * 2, nf * 2, 4, 2, 1, bias=False)
        self.bn1_1 = nn.BatchNorm2d(nf * 2, affine=True)

        self.conv2_0 = nn.Conv2d(nf * 2, nf * 4, 3, 1, 1, bias=False)
        self.bn2_0 = nn.BatchNorm2d(nf * 4, affine=True)
        self.conv2_1 = nn.Conv2d(nf * 4, nf * 4, 4, 2, 1, bias=False)
        self.bn2_1 = nn.BatchNorm2d(nf * 4, affine=True)

        self.conv3_0 = nn.Conv2d(nf * 4, nf * 8, 3, 1, 1, bias=False)
        self.bn3_0 = nn.BatchNorm2d(nf * 8, affine=True)
        self.conv3_1 = nn.Conv2d(nf * 8, nf * 8, 4, 2, 1, bias=False)
        self.bn3_1 = nn.BatchNorm2d(nf * 8, affine=True)

        self.conv4_0 = nn.Conv2d(nf * 8, nf * 8, 3, 1, 1, bias=False)
        self.bn4_0 = nn.BatchNorm2d(nf * 8, affine=True)
        self.conv4_1 = nn.Conv2d(nf * 8, nf * 8, 4, 2, 1, bias=False)
        self.bn4_1 = nn.BatchNorm2d(nf * 8, affine=True)

        if input_size == 256:
            self.conv5_0 = nn.Conv2d(nf * 8, nf * 8, 3, 1, 1, bias=False)
            self.bn5_0 = nn.BatchNorm2d(nf * 8, affine=True)
            self.conv5_1 = nn.Conv2d(nf * 8, nf * 8, 4, 2, 1, bias=False)
            self.bn5_1 = nn.BatchNorm2d(nf * 8, affine=True)

        self.linear1 = nn.Linear(nf * 8 * 4 * 4, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (real vs fake) of a batch of HR crops.

        Args:
            x: ``N x num_in_ch x input_size x input_size`` float tensor.

        Returns:
            ``N x 1`` raw logits (no sigmoid).

        Raises:
            InputError: the crop is not ``input_size`` square or has the wrong number of channels.
        """
        s = self.input_size
        if x.dim() != 4 or x.shape[1] != self.num_in_ch or x.shape[2] != s or x.shape[3] != s:
            raise InputError(
                f"VGGStyleDiscriminator expects N x {self.num_in_ch} x {s} x {s} HR crops, "
                f"but got shape {tuple(x.shape)}"
            )
        feat = self.lrelu(self.conv0_0(x))
        feat = self.lrelu(self.bn0_1(self.conv0_1(feat)))
        feat = self.lrelu(self.bn1_0(self.conv1_0(feat)))
        feat = self.lrelu(self.bn1_1(self.conv1_1(feat)))
        feat = self.lrelu(self.bn2_0(self.conv2_0(feat)))
        feat = self.lrelu(self.bn2_1(self.conv2_1(feat)))
        feat = self.lrelu(self.bn3_0(self.conv3_0(feat)))
        feat = self.lrelu(self.bn3_1(self.conv3_1(feat)))
        feat = self.lrelu(self.bn4_0(self.conv4_0(feat)))
        feat = self.lrelu(self.bn4_1(self.conv4_1(feat)))
        if s == 256:
            feat = self.lrelu(self.bn5_0(self.conv5_0(feat)))
            feat = self.lrelu(self.bn5_1(self.conv5_1(feat)))
        feat = feat.flatten(1)
        feat = self.lrelu(self.linear1(feat))
        return self.linear2(feat)
