"""Folders of images and HR/LR pairs, shared by training and evaluation.

One place for: which files in a folder are images, how an LR file is paired with its HR file by name
(benchmark layouts: DIV2K ``0801`` <-> ``0801x4``, BasicSR ``baby`` <-> ``baby_LR``), and how LR is made from
HR when no LR file is given (antialiased bicubic, rounded to 8 bits).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from certsr_rt.errors import InputError
from certsr_rt.io.images import IMAGE_EXTENSIONS

__all__ = ["downscale_bicubic", "first_few", "list_images", "pair_lr_files"]

# Suffixes of LR file stems in common benchmark layouts: DIV2K "0801x4", BasicSR "baby_LRx4", "img_LR".
_LR_STEM_SUFFIX = re.compile(r"(?:[_-]?(?:LR|lr|LRx\d|LR_x\d|lrx\d|x\d|X\d))$")


def list_images(folder: str | Path, what: str = "folder") -> list[Path]:
    """Image files directly inside ``folder`` (by extension, any case), sorted by name.

    Args:
        folder: the folder.
        what: how the folder is named in messages (e.g. ``"--hr"``).

    Raises:
        InputError: the folder is missing or holds no image.
    """
    p = Path(folder)
    if not p.is_dir():
        raise InputError(f"{what} must be a folder of images, got {str(p)!r} (not a directory)")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise InputError(f"{what} {p} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def pair_lr_files(hr_files: Sequence[Path], lr_files: Sequence[Path], lr_dir: str | Path) -> list[Path]:
    """For each HR file, its LR partner, by file name: the one place training and evaluation pair images.

    An LR file is the partner of the HR file with the same stem, or whose stem is the HR stem plus a usual LR
    suffix of benchmark layouts: DIV2K ``0801`` <-> ``0801x4``, BasicSR ``baby`` <-> ``baby_LR`` /
    ``baby_LRx4`` (also ``-LR``, ``LR_x4``, ``X4``). An exact stem match wins over a suffixed one.

    Args:
        hr_files: the HR images.
        lr_files: the LR images to choose from.
        lr_dir: the LR folder, for the error message.

    Returns:
        The LR partner of each HR file, in the order of ``hr_files``.

    Raises:
        InputError: some HR files have no partner; the message gives their count and the first few names.
    """
    index: dict[str, Path] = {}
    for p in lr_files:
        index.setdefault(p.stem, p)
    for p in lr_files:
        stripped = _LR_STEM_SUFFIX.sub("", p.stem)
        if stripped and stripped != p.stem:
            index.setdefault(stripped, p)
    missing = [p.name for p in hr_files if p.stem not in index]
    if missing:
        raise InputError(
            f"paired data: no LR image in {lr_dir} for {len(missing)} of {len(hr_files)} HR images "
            f"(expected the same name stem, or the stem + x4 / _LR / _LRx4): {first_few(missing)}"
        )
    return [index[p.stem] for p in hr_files]


def first_few(items: Sequence[str], *, sep: str = ", ", last_sep: str = " ", shown: int = 5) -> str:
    """The first ``shown`` items for an error message: ``a, b, c`` or ``a, b, c, d, e and 7 more``.

    With ``sep="; ", last_sep="; "`` (one reason per bad file): ``x: why; y: why; and 7 more``.
    """
    text = sep.join(items[:shown])
    return text + (f"{last_sep}and {len(items) - shown} more" if len(items) > shown else "")


def downscale_bicubic(hr: torch.Tensor, scale: int, *, quantize: bool = True) -> torch.Tensor:
    """Antialiased bicubic downscaling by an integer factor (``C x H x W`` or ``N x C x H x W``).

    Torch's antialiased bicubic (Keys a = -0.5, kernel widened by the factor) is the same filter as
    MATLAB's ``imresize``, which made the benchmark LR images; the result is clamped to [0, 1] and, with
    ``quantize``, rounded to 8 bits as an LR image stored as PNG would be.

    Args:
        hr: image(s) in [0, 1]; H and W must be multiples of ``scale``.
        scale: the integer factor.
        quantize: round to multiples of 1/255.

    Returns:
        The LR image(s), same layout as ``hr``.
    """
    batched = hr.dim() == 4
    x = hr if batched else hr.unsqueeze(0)
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise InputError(f"HR size must be a multiple of the scale {scale}, got {h}x{w}")
    lr = F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    lr = lr.clamp_(0.0, 1.0)
    if quantize:
        lr = torch.round(lr * 255.0) / 255.0
    return lr if batched else lr.squeeze(0)
