"""Evaluation images: HR ground truth and its LR input, read from folders.

An HR folder is required. LR images come from a second folder, paired by file name, or are made from HR by
bicubic downscaling. Real-world sets with ground truth (DIV2K validation, NTIRE 2020 track 1, AIM 2019 track
2) are used the same way: point ``--hr`` at the ground-truth folder and ``--lr`` at the degraded inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from certsr_rt.errors import InputError
from certsr_rt.io.pairs import downscale_bicubic, first_few, list_images, pair_lr_files
from certsr_rt.runtime.layout import to_batch

__all__ = [
    "ImagePair",
    "load_image_pairs",
    "min_hr_size",
    "to_rgb_float",
]

_SSIM_WINDOW = 11
"""Side of SSIM's Gaussian window (:mod:`certsr_rt.metrics.psnr_ssim`)."""

_LPIPS_MIN_SIDE = 31
"""Smallest image side LPIPS-alex accepts (measured: 30 x 30 fails inside AlexNet's second max-pool)."""


@dataclass
class ImagePair:
    """One evaluation image.

    Attributes:
        name: the HR file's stem.
        lr: ``1 x 3 x h x w`` float32 RGB in [0, 1] (CPU).
        hr: ``1 x 3 x (scale*h) x (scale*w)`` float32 RGB in [0, 1] (CPU), multiples of 1/255 for 8-bit files.
    """

    name: str
    lr: torch.Tensor
    hr: torch.Tensor


def to_rgb_float(image: np.ndarray) -> torch.Tensor:
    """A numpy image of any kind :func:`certsr_rt.io.images.read_image` returns -> ``1 x 3 x H x W`` float32.

    Grayscale is repeated to three channels (as BasicSR does for Set14's gray images), alpha is dropped and
    float values are clipped to [0, 1] (:func:`certsr_rt.runtime.layout.to_batch`).
    """
    return to_batch(image, floats="clip", channels=3)[0]


def _center_crop(
    lr: torch.Tensor, hr: torch.Tensor, crop: int, scale: int
) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = lr.shape[2:]
    ch, cw = min(crop, h), min(crop, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    lr = lr[:, :, top : top + ch, left : left + cw]
    hr = hr[:, :, top * scale : (top + ch) * scale, left * scale : (left + cw) * scale]
    return lr.contiguous(), hr.contiguous()


def min_hr_size(scale: int) -> int:
    """The smallest HR side the evaluation can measure at ``scale``, a multiple of ``scale``.

    PSNR and SSIM shave ``scale`` pixels from each border and SSIM then needs its 11 x 11 window, so the HR
    must be at least ``2 * scale + 11``; LPIPS-alex needs at least 31 pixels (AlexNet's 11 x 11 stride-4
    convolution and two 3 x 3 stride-2 max-pools leave nothing of a smaller image). HR images are cropped to
    a multiple of ``scale``, hence the rounding up: 32 at x4 (an 8 x 8 LR image).
    """
    side = max(2 * scale + _SSIM_WINDOW, _LPIPS_MIN_SIDE)
    return -(-side // scale) * scale


def load_image_pairs(
    hr_dir: str | Path,
    lr_dir: str | Path | None = None,
    *,
    scale: int = 4,
    limit: int | None = None,
    crop: int | None = None,
    on_skip: Callable[[str], None] | None = None,
) -> list[ImagePair]:
    """Read the evaluation set and check every image before anything is computed.

    HR images are cropped at the bottom/right to a multiple of ``scale`` (BasicSR's ``mod_crop``). With
    ``lr_dir``, each HR file is paired with its LR file by :func:`~certsr_rt.io.pairs.pair_lr_files` (same
    stem, or the stem plus a usual LR suffix: ``x4``, ``_LR``, ``_LRx4``, ...); the HR must then be ``scale``
    times the LR size (an HR that is up to ``scale - 1`` pixels larger is cropped). Without ``lr_dir``, LR =
    :func:`~certsr_rt.io.pairs.downscale_bicubic` (HR). Every HR image must be at least
    :func:`min_hr_size` on each side.

    Args:
        hr_dir: folder of ground-truth images.
        lr_dir: folder of LR inputs, or ``None`` to make them by bicubic downscaling.
        scale: the SR factor.
        limit: keep only the first ``limit`` images (in file-name order).
        crop: centre-crop each LR image to at most ``crop x crop`` pixels (and the HR to match), to keep CPU
            runs short; at least ``min_hr_size(scale) / scale``.
        on_skip: ``None`` (strict): any image that cannot be used is an error. Otherwise such an image is
            left out and ``on_skip`` is called with one line naming it and the reason; it is still an
            error when no image is left.

    Returns:
        The pairs, in file-name order.

    Raises:
        InputError: a missing/empty folder, HR images without LR partner (all named at once), a ``crop``
            below the minimum, or images that cannot be read, are smaller than :func:`min_hr_size` or whose
            sizes do not match (all named in one message, the first five with the reason).
    """
    min_side = min_hr_size(scale)
    if limit is not None and limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    if crop is not None and crop * scale < min_side:
        raise InputError(
            f"crop must be >= {min_side // scale} LR pixels at scale {scale} (an HR crop of {min_side} x "
            f"{min_side}, the smallest the metrics measure), got {crop}"
        )
    hr_files = list_images(hr_dir, "--hr")
    if limit is not None:
        hr_files = hr_files[:limit]
    lr_files = None
    if lr_dir is not None:
        lr_files = pair_lr_files(hr_files, list_images(lr_dir, "--lr"), lr_dir)
    pairs: list[ImagePair] = []
    problems: list[str] = []
    for i, hr_path in enumerate(hr_files):
        try:
            pairs.append(_load_pair(hr_path, lr_files[i] if lr_files else None, scale, min_side, crop))
        except InputError as exc:
            problems.append(str(exc))
    if problems and (on_skip is None or not pairs):
        shown = first_few(problems, sep="; ", last_sep="; ")
        raise InputError(f"{len(problems)} of {len(hr_files)} evaluation images cannot be used: {shown}")
    for problem in problems:
        on_skip(problem)  # type: ignore[misc]
    return pairs


def _load_pair(hr_path: Path, lr_path: Path | None, scale: int, min_side: int, crop: int | None) -> ImagePair:
    from certsr_rt.io.images import read_image

    hr = to_rgb_float(read_image(hr_path))
    full_h, full_w = hr.shape[2:]
    h, w = full_h // scale * scale, full_w // scale * scale
    if min(h, w) < min_side:
        raise InputError(
            f"{hr_path.name}: HR image is {full_h} x {full_w}, expected at least {min_side} x {min_side} at "
            f"scale {scale} (PSNR/SSIM shave {scale} pixels per border and need an {_SSIM_WINDOW} x "
            f"{_SSIM_WINDOW} window; LPIPS-alex needs {_LPIPS_MIN_SIDE} pixels)"
        )
    hr = hr[:, :, :h, :w]
    if lr_path is None:
        lr = downscale_bicubic(hr, scale)
    else:
        lr = to_rgb_float(read_image(lr_path))
        lh, lw = lr.shape[2:]
        # h and w are multiples of scale, so this means HR = scale x LR after the mod-crop.
        if not (lh * scale <= h < lh * scale + scale and lw * scale <= w < lw * scale + scale):
            raise InputError(
                f"{hr_path.name}: HR is {h} x {w} but LR {lr_path.name} is {lh} x {lw}; "
                f"expected HR = {scale} x LR"
            )
    if crop is not None:
        lr, hr = _center_crop(lr, hr, crop, scale)
    return ImagePair(hr_path.stem, lr.contiguous(), hr.contiguous())
