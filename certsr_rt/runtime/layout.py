"""Image layout: numpy/torch images <-> the model's ``N x C x H x W`` float batch, in one place.

The one rule for every reader of images (the Upscaler, the frame stream, training and evaluation data):

* **peak** by dtype: uint8 -> 255, uint16 -> 65535, float -> 1 (floats are already in [0, 1]);
  ``value / peak`` in float32 going in, ``rint(value * peak)`` going out for integers;
* **channels**: ``H x W`` or ``H x W x C`` with C = 1 (gray), 2 (gray + alpha), 3 (RGB), 4 (RGBA); alpha is
  the last channel and is split off (the model sees colour only);
* **policies** where the callers differ, as arguments: what to do with float input (``floats``: range-check,
  clip, or refuse) and how to meet a model's channel count (``channels``: keep gray as gray, replicate gray
  to RGB, or RGB to luma).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from certsr_rt.errors import InputError

__all__ = [
    "FLOAT_RANGE_SLACK",
    "FloatPolicy",
    "NumpyLayout",
    "alpha_of",
    "check_float_range",
    "from_batch",
    "numpy_layout",
    "peak_of",
    "to_batch",
]

FloatPolicy = Literal["check", "clip", "refuse"]
"""Float input: ``check`` clips values within :data:`FLOAT_RANGE_SLACK` of [0, 1] (rounding) and refuses
others and NaN/inf (the Upscaler); ``clip`` clips silently (evaluation ground truth); ``refuse`` accepts
integer images only (training files)."""

FLOAT_RANGE_SLACK = 0.01
"""Float inputs this far outside [0, 1] are rounding (clipped silently under ``check``); further out is an
error."""

_PEAKS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as BasicSR's rgb2ycbcr (without the offset)


def peak_of(dtype: np.dtype | type, floats: FloatPolicy = "check") -> float:
    """The value that maps to 1.0 for image data of ``dtype`` (255, 65535, or 1 for floats).

    Raises:
        InputError: a dtype that is not uint8, uint16 or float32/float64 (floats under ``refuse``).
    """
    dt = np.dtype(dtype)
    peak = _PEAKS.get(dt)
    if peak is not None:
        return peak
    if dt in _FLOATS:
        if floats == "refuse":
            raise InputError(f"expected an 8- or 16-bit image, got {dt} samples")
        return 1.0
    raise InputError(f"Expected uint8, uint16 or float image data, but got {dt}")


@dataclass(frozen=True)
class NumpyLayout:
    """How a numpy image is laid out, so an upscaled result can be given the same layout.

    Attributes:
        shape: the image's shape (``H x W`` or ``H x W x C``).
        dtype: its dtype.
        peak: the value that maps to 1.0 (:func:`peak_of`).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    peak: float

    @property
    def squeeze(self) -> bool:
        """Whether the image is ``H x W`` (one channel without a channel axis)."""
        return len(self.shape) == 2

    @property
    def channels(self) -> int:
        """All channels, alpha included."""
        return 1 if self.squeeze else self.shape[2]

    @property
    def has_alpha(self) -> bool:
        """Whether the last channel is alpha (gray + alpha or RGBA)."""
        return self.channels in (2, 4)

    @property
    def color_channels(self) -> int:
        """Channels without alpha: 1 (gray) or 3 (RGB)."""
        return self.channels - 1 if self.has_alpha else self.channels


def numpy_layout(image: np.ndarray, floats: FloatPolicy = "check") -> NumpyLayout:
    """The :class:`NumpyLayout` of ``image``, checked.

    Raises:
        InputError: not ``H x W`` or ``H x W x C`` with C in 1..4, empty, or an unsupported dtype.
    """
    if not (image.ndim == 2 or (image.ndim == 3 and 1 <= image.shape[2] <= 4)):
        raise InputError(f"Expected an H x W or H x W x C image, C in 1..4, but got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"Expected a non-empty image, but got shape {image.shape}")
    return NumpyLayout(tuple(image.shape), image.dtype, peak_of(image.dtype, floats))


def check_float_range(x: torch.Tensor, what: str) -> torch.Tensor:
    """Float input must be in [0, 1]: values a little outside (rounding) are clipped, others refused."""
    lo, hi = torch.stack(torch.aminmax(x)).tolist()  # one pass and one device read per image or batch
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"Expected a float {what} with finite values in [0, 1], but it contains NaN or inf")
    if lo < -FLOAT_RANGE_SLACK or hi > 1 + FLOAT_RANGE_SLACK:
        hint = " (it looks like 0..255: divide by 255)" if hi > 2 else ""
        raise InputError(f"Expected float {what} values in [0, 1], but got [{lo:.4g}, {hi:.4g}]{hint}")
    return x.clamp(0, 1) if lo < 0 or hi > 1 else x


def to_batch(
    images: np.ndarray | Sequence[np.ndarray],
    *,
    floats: FloatPolicy = "check",
    channels: int | None = None,
) -> tuple[torch.Tensor, NumpyLayout]:
    """Numpy image(s) of one shape and dtype -> ``N x C x H x W`` float32 in [0, 1] (CPU), alpha split off.

    Args:
        images: one image, or several of the same shape and dtype.
        floats: the :data:`FloatPolicy` for float data.
        channels: ``None`` keeps the colour channels as they are (gray stays 1 channel); ``3`` replicates
            gray to RGB; ``1`` turns RGB into luma (BT.601).

    Returns:
        ``(batch, layout)``: the colour batch and the layout of the (first) image.

    Raises:
        InputError: a bad layout or dtype, images that differ in shape or dtype, or float values outside
            the policy.
    """
    stack = [images] if isinstance(images, np.ndarray) else list(images)
    if not stack:
        raise InputError("Expected at least one image, but got an empty list")
    if not all(isinstance(im, np.ndarray) for im in stack):
        raise InputError("Expected numpy images, but got " + ", ".join({type(im).__name__ for im in stack}))
    layout = numpy_layout(stack[0], floats)
    for im in stack[1:]:
        if im.shape != layout.shape or im.dtype != layout.dtype:
            raise InputError(
                f"Expected images of one shape and dtype, but got {layout.shape} {layout.dtype} and "
                f"{im.shape} {im.dtype}"
            )
    arr = np.stack(stack) if len(stack) > 1 else stack[0][None]
    if layout.squeeze:
        arr = arr[..., None]
    color = arr[..., : layout.color_channels]
    if channels == 3 and layout.color_channels == 1:
        color = np.repeat(color, 3, axis=3)
    elif channels == 1 and layout.color_channels == 3:
        color = color.astype(np.float64) @ _LUMA
        color = color[..., None]
    elif channels not in (None, 1, 3):
        raise InputError(f"Expected channels None, 1 or 3, but got {channels}")
    values = np.ascontiguousarray(color.transpose(0, 3, 1, 2), dtype=np.float32)
    if layout.peak != 1.0:
        values = values / np.float32(layout.peak)
    elif floats == "clip":
        values = np.clip(values, 0.0, 1.0)
    x = torch.from_numpy(values)
    if layout.peak == 1.0 and floats == "check":
        x = check_float_range(x, "image")
    return x, layout


def alpha_of(images: Sequence[np.ndarray], layout: NumpyLayout) -> list[np.ndarray | None]:
    """The alpha planes of ``images`` as float32 ``H x W`` in [0, 1] (``None`` each without alpha)."""
    if not layout.has_alpha:
        return [None] * len(images)
    return [im[:, :, layout.channels - 1].astype(np.float32) / np.float32(layout.peak) for im in images]


def from_batch(
    batch: torch.Tensor, layout: NumpyLayout, alpha: Sequence[np.ndarray | None] | None = None
) -> list[np.ndarray]:
    """``N x C x H x W`` float results -> numpy images in ``layout`` (clamped to [0, 1], then to the dtype).

    Args:
        batch: the colour results (any device; clamped in place).
        layout: the input's layout (dtype, alpha, ``H x W`` or ``H x W x C``).
        alpha: per image, the upscaled alpha plane (``H x W`` float in [0, 1]) to append, when the layout
            has alpha.
    """
    arrays = batch.clamp_(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for i, arr in enumerate(arrays):
        if layout.has_alpha:
            assert alpha is not None and alpha[i] is not None
            arr = np.concatenate([arr, alpha[i][:, :, None]], axis=2)
        if layout.dtype in _PEAKS:
            arr = np.rint(arr * layout.peak).astype(layout.dtype)
        else:
            arr = arr.astype(layout.dtype)
        out.append(arr[:, :, 0] if layout.squeeze else arr)
    return out
