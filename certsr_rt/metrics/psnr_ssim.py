"""PSNR and SSIM with the BasicSR convention (the one super-resolution papers report).

Convention, stated once for both metrics:

* Inputs are numpy images ``H x W x C`` in **RGB** order (C = 3) or grayscale (``H x W`` or ``H x W x 1``):
  uint8 (0..255), uint16 (0..65535, rescaled to 0..255) or float in [0, 1] (rescaled ×255, not rounded).
  Everything is computed in float64 on the 0..255 scale.
* ``crop_border`` pixels are shaved from each of the four sides before measuring (BasicSR passes the SR
  scale, so 4 for x4).
* ``test_y_channel=True`` (the default, what SR papers report): RGB images are reduced to the luma **Y**
  of ITU-R BT.601 exactly as BasicSR's ``rgb2ycbcr(img, y_only=True)``:
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B)`` with R, G, B in [0, 1], giving Y in [16, 235] on the
  0..255 scale. Grayscale images are used as they are (BasicSR does the same).
* ``test_y_channel=False``: RGB mode. PSNR uses the MSE pooled over all three channels (BasicSR:
  ``np.mean((img - ref) ** 2)``); SSIM is the mean of the three per-channel SSIMs.
* SSIM is scikit-image's ``structural_similarity`` with ``gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255`` — the original Wang et al. (2004) setting (11 x 11
  Gaussian window, K1 = 0.01, K2 = 0.03), which is also what BasicSR's hand-written SSIM computes.

BasicSR reads images with OpenCV (BGR) and calls ``bgr2ycbcr``; these functions take RGB and apply the same
coefficients to the right channels, so the numbers agree.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from certsr_rt._deps import require
from certsr_rt.errors import InputError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["psnr", "rgb_to_y", "ssim"]

# BasicSR rgb2ycbcr(y_only=True) coefficients for R, G, B in [0, 1]; result on the 0..255 scale.
_Y_COEFFS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def _to_255(name: str, image: NDArray) -> NDArray[np.float64]:
    """Validate one image and return it as ``H x W x C`` float64 on the 0..255 scale."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{name} must be a numpy array (H x W x C, RGB), got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise InputError(
            f"{name} must be H x W (grayscale), H x W x 1 or H x W x 3 (RGB), got shape {image.shape}"
        )
    if image.dtype == np.uint8:
        return image.astype(np.float64)
    if image.dtype == np.uint16:
        return image.astype(np.float64) * (255.0 / 65535.0)
    if np.issubdtype(image.dtype, np.floating):
        out = image.astype(np.float64)
        if out.size:
            lo, hi = float(np.nanmin(out)), float(np.nanmax(out))
            # A generous margin tolerates unclamped model output but catches 0..255 floats.
            if lo < -0.5 or hi > 1.5:
                raise InputError(
                    f"{name}: float images must hold values in [0, 1], got values in [{lo:g}, {hi:g}] "
                    "(pass uint8, or divide by 255)"
                )
        return out * 255.0
    raise InputError(f"{name} must be uint8, uint16 or float in [0, 1], got dtype {image.dtype}")


def rgb_to_y(image_255: NDArray[np.float64]) -> NDArray[np.float64]:
    """BT.601 luma on the 0..255 scale (16..235), as BasicSR ``rgb2ycbcr(y_only=True)``.

    Args:
        image_255: ``H x W x 3`` RGB float array on the 0..255 scale.

    Returns:
        ``H x W x 1`` float64 array.
    """
    return (image_255 @ _Y_COEFFS / 255.0 + 16.0)[:, :, None]


def _prepare(
    img: NDArray, ref: NDArray, crop_border: int, test_y_channel: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    a = _to_255("img", img)
    b = _to_255("ref", ref)
    if a.shape != b.shape:
        raise InputError(f"img and ref must have the same shape, got {np.shape(img)} and {np.shape(ref)}")
    if isinstance(crop_border, bool) or not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise InputError(f"crop_border must be an integer >= 0, got {crop_border!r}")
    h, w = a.shape[:2]
    if 2 * crop_border >= min(h, w):
        raise InputError(
            f"crop_border={crop_border} needs an image larger than {2 * crop_border} x {2 * crop_border} "
            f"(2 x crop_border pixels are shaved from each dimension), got {h} x {w}"
        )
    if crop_border:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel and a.shape[2] == 3:
        a, b = rgb_to_y(a), rgb_to_y(b)
    return a, b


def psnr(img: NDArray, ref: NDArray, crop_border: int = 4, test_y_channel: bool = True) -> float:
    """Peak signal-to-noise ratio in dB, BasicSR convention (see the module docstring).

    ``PSNR = 10 log10(255² / MSE)`` on the 0..255 scale, after shaving ``crop_border`` pixels per side and,
    with ``test_y_channel``, converting RGB to BT.601 Y (16..235); in RGB mode the MSE is pooled over the
    three channels.

    Args:
        img: the restored image, ``H x W x 3`` RGB (or grayscale), uint8 / uint16 / float in [0, 1].
        ref: the ground truth, same shape (any of the same dtypes).
        crop_border: pixels shaved from each side (the SR scale, 4 for x4).
        test_y_channel: measure on the Y channel (True, as SR papers do) or on RGB (False).

    Returns:
        PSNR in dB; ``inf`` for identical images, as BasicSR and scikit-image (the evaluation report caps
        it at :data:`certsr_rt.evaluation.PSNR_CAP_DB`).

    Raises:
        InputError: shapes differ, unsupported dtype/shape, or an image not larger than ``2 * crop_border``
            in each dimension.
    """
    a, b = _prepare(img, ref, crop_border, test_y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def ssim(img: NDArray, ref: NDArray, crop_border: int = 4, test_y_channel: bool = True) -> float:
    """Structural similarity, BasicSR convention, computed by scikit-image (see the module docstring).

    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255)`` on the 0..255 scale after shaving ``crop_border`` pixels
    per side; on Y (16..235) with ``test_y_channel``, else the mean of the per-channel SSIMs.

    Args:
        img: the restored image, ``H x W x 3`` RGB (or grayscale), uint8 / uint16 / float in [0, 1].
        ref: the ground truth, same shape.
        crop_border: pixels shaved from each side.
        test_y_channel: measure on the Y channel (True) or average over RGB channels (False).

    Returns:
        SSIM in [-1, 1]; 1.0 for identical images.

    Raises:
        InputError: shapes differ, unsupported dtype/shape, or an image smaller than ``11 + 2 * crop_border``
            in some dimension (the 11 x 11 window after shaving the border).
        MissingDependencyError: scikit-image is not installed (``certsr-rt[train]``).
    """
    a, b = _prepare(img, ref, crop_border, test_y_channel)
    if min(a.shape[:2]) < 11:
        side = 11 + 2 * crop_border
        h, w = np.shape(img)[:2]
        raise InputError(
            f"SSIM needs an image of at least {side} x {side} (its 11 x 11 window after shaving crop_border="
            f"{crop_border} from each side), got {h} x {w}"
        )
    metrics = require("skimage.metrics", "train", "SSIM")
    values = [
        metrics.structural_similarity(
            a[:, :, c],
            b[:, :, c],
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255.0,
        )
        for c in range(a.shape[2])
    ]
    return float(np.mean(values))
