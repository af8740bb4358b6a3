"""Common corruptions of the LR input: sensor noise, Gaussian blur and JPEG compression.

All take and return ``N x C x H x W`` float tensors in [0, 1] on any device.

Blur kernel size. The paper blurs with a Gaussian kernel of size 10 and sigma 0.3. An even-sized kernel has
no centre tap: its 10 taps sit at offsets -4.5, -3.5, ..., 4.5 from a point *between* pixels. We implement
exactly that (no silent rounding to 11), so the output is the blurred image resampled half a pixel down and
to the right. With sigma 0.3 the taps at +-0.5 hold 99.998% of the weight: the corruption is close to a
2 x 2 box average (a half-pixel shift plus a real loss of detail), whereas an 11-tap kernel centred on a
pixel would be almost the identity (each neighbour gets 0.4% of the weight per axis). Odd sizes are
centred as usual.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from certsr_rt.attacks._common import check_positive
from certsr_rt.errors import InputError

__all__ = ["gaussian_blur", "gaussian_kernel1d", "jpeg_compress", "sensor_noise"]


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"shape {tuple(x.shape)} dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"Expected a float N x C x H x W tensor in [0, 1], but got {got}")


def sensor_noise(
    x: torch.Tensor, sigma: float = 0.03, *, generator: torch.Generator | None = None, clip: bool = True
) -> torch.Tensor:
    """Additive white Gaussian noise N(0, sigma^2), per pixel and channel (the paper's "noisy" condition).

    Args:
        x: ``N x C x H x W`` images in [0, 1].
        sigma: standard deviation in [0, 1] image units (paper: 0.03).
        generator: torch generator for reproducibility; values are drawn on its device and moved to ``x``'s,
            so a CPU generator gives the same noise on any device.
        clip: clamp the result to [0, 1], as a stored noisy image would be.

    Returns:
        The noisy images, same shape/device/dtype.
    """
    _check_images(x)
    check_positive("sigma", sigma)
    if generator is None:
        noise = torch.randn_like(x)
    else:
        noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x)
    out = x + sigma * noise
    return out.clamp(0.0, 1.0) if clip else out


def gaussian_kernel1d(kernel_size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian with taps at offsets ``i - (kernel_size - 1) / 2`` (between pixels if even).

    Args:
        kernel_size: number of taps, >= 1.
        sigma: standard deviation in pixels, > 0.

    Returns:
        Float64 tensor of ``kernel_size`` weights summing to 1.
    """
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
        raise InputError(f"kernel_size must be an integer >= 1, got {kernel_size!r}")
    check_positive("sigma", sigma, allow_zero=False)
    offsets = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2.0
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def gaussian_blur(x: torch.Tensor, kernel_size: int = 10, sigma: float = 0.3) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders (the paper's "blurry" condition: size 10, sigma 0.3).

    For an even ``kernel_size`` the kernel is centred between pixels (see the module docstring): output pixel
    ``(y, x)`` is the blur evaluated at ``(y + 0.5, x + 0.5)``.

    Args:
        x: ``N x C x H x W`` images in [0, 1].
        kernel_size: taps per axis.
        sigma: standard deviation in pixels.

    Returns:
        The blurred images, same shape/device/dtype.
    """
    _check_images(x)
    k = gaussian_kernel1d(kernel_size, sigma).to(device=x.device, dtype=x.dtype)
    n, c, h, w = x.shape
    # Taps i = 0..k-1 sit at offsets i - (k-1)/2; with k even the left pad is one less than the right one.
    left = (kernel_size - 1) // 2
    right = kernel_size - 1 - left
    mode = "reflect" if max(left, right) < min(h, w) else "replicate"
    padded = F.pad(x, (left, right, left, right), mode=mode)
    channels = padded.reshape(n * c, 1, h + left + right, w + left + right)
    out = F.conv2d(channels, k.view(1, 1, 1, -1))
    out = F.conv2d(out, k.view(1, 1, -1, 1))
    return out.reshape(n, c, h, w)


def jpeg_compress(x: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """JPEG encode and decode each image with OpenCV (4:2:0 chroma subsampling, OpenCV's default).

    Args:
        x: ``N x C x H x W`` images in [0, 1], C = 1 (grayscale) or 3 (RGB).
        quality: JPEG quality 1..100 (``cv2.IMWRITE_JPEG_QUALITY``).

    Returns:
        The decoded images as floats in [0, 1] (multiples of 1/255), same shape/device/dtype.
    """
    import cv2

    _check_images(x)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise InputError(f"JPEG quality must be an integer in 1..100, got {quality!r}")
    if x.shape[1] not in (1, 3):
        raise InputError(f"JPEG needs 1 (gray) or 3 (RGB) channels, got {x.shape[1]}")
    values = x.detach().clamp(0, 1).permute(0, 2, 3, 1).cpu().double().numpy()
    arrays = np.rint(values * 255.0).astype(np.uint8)
    decoded = []
    for array in arrays:
        bgr = array[:, :, ::-1] if array.shape[2] == 3 else array[:, :, 0]
        ok, buffer = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise InputError(f"OpenCV could not JPEG-encode an image of shape {array.shape}")
        flag = cv2.IMREAD_COLOR if array.shape[2] == 3 else cv2.IMREAD_GRAYSCALE
        image = cv2.imdecode(buffer, flag)
        image = image[:, :, ::-1] if image.ndim == 3 else image[:, :, None]
        decoded.append(np.ascontiguousarray(image))
    stacked = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2)
    return (stacked.to(torch.float32) / 255.0).to(device=x.device, dtype=x.dtype)
