"""Gaussian noise that is a pure function of (seed, key, sample, channel, row, column).

Why not ``torch.randn``: the smoothed image must not depend on how the image is cut into tiles, on how the
n samples are cut into chunks, or on the device/backend. Drawing from a stateful generator ties the noise of
a pixel to the order of the draws. Here each value is computed from a counter hash of its global position,
so any tile of any chunk regenerates exactly the values the whole image would have had, on CPU or CUDA.

The hash is Chris Wellons' ``lowbias32`` integer mixer applied to a combined counter, evaluated in int64
with explicit 32-bit masking (every intermediate product stays below 2**63, so no signed overflow).
Two independent 24-bit uniforms feed a Box-Muller transform.
"""

from __future__ import annotations

import math

import torch

_MASK32 = 0xFFFFFFFF


def _mul32_(x: torch.Tensor, c: int) -> torch.Tensor:
    """In place: ``x = (x * c) mod 2**32`` for x in [0, 2**32), without int64 overflow.

    A constant c >= 2**31 is replaced by c - 2**32 (same product modulo 2**32, and |x * c| < 2**63);
    masking the two's-complement result keeps its low 32 bits.
    """
    return x.mul_(c - 2**32 if c >= 2**31 else c).bitwise_and_(_MASK32)


def _lowbias32_(x: torch.Tensor) -> torch.Tensor:
    """In place: Chris Wellons' lowbias32 mixer on 32-bit values held in int64."""
    x.bitwise_xor_(x >> 16)
    _mul32_(x, 0x7FEB352D)
    x.bitwise_xor_(x >> 15)
    _mul32_(x, 0x846CA68B)
    return x.bitwise_xor_(x >> 16)


def _combine(h: torch.Tensor, v: torch.Tensor | int) -> torch.Tensor:
    """Fold one more coordinate into a running hash (a new tensor; ``h`` is not modified)."""
    return _lowbias32_((h ^ v).bitwise_and_(_MASK32))


def gaussian_field(
    shape: tuple[int, int, int, int],
    *,
    seed: int,
    key: int = 0,
    sample_offset: int = 0,
    row_offset: int = 0,
    col_offset: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal values for samples x channels x rows x cols of a larger, virtual noise field.

    Element ``[i, c, y, x]`` equals the field's value at ``(sample_offset + i, c, row_offset + y,
    col_offset + x)``, so a tile or chunk reproduces the whole-image values exactly.

    Args:
        shape: ``(samples, channels, rows, cols)`` to produce.
        seed: user seed, in [0, 2**31).
        key: extra stream key (e.g. a video frame index when fresh noise per frame is wanted).
        sample_offset: index of the first sample in the field.
        row_offset: image row of the first row.
        col_offset: image column of the first column.
        device: where to compute; the result is identical on any device up to float rounding.
        dtype: result dtype.

    Returns:
        A tensor of ``shape`` with i.i.d. N(0, 1) values (Box-Muller of 24-bit uniforms, |z| <= 5.8).
    """
    n, c, h, w = shape
    dev = torch.device(device)
    idx = lambda count, off: torch.arange(off, off + count, device=dev, dtype=torch.int64)  # noqa: E731
    base = _combine(_lowbias32_(torch.tensor(seed & _MASK32, device=dev, dtype=torch.int64)), key & _MASK32)
    hs = _combine(base, idx(n, sample_offset).view(n, 1, 1, 1))
    hc = _combine(hs, idx(c, 0).view(1, c, 1, 1))
    hy = _combine(hc, (idx(h, row_offset) & _MASK32).view(1, 1, h, 1))
    hx = _combine(hy, (idx(w, col_offset) & _MASK32).view(1, 1, 1, w))
    h1 = _lowbias32_(hx ^ 0x68E31DA4)
    h2 = _lowbias32_(hx.bitwise_xor_(0x1B56C4E9))
    # 24-bit uniforms; u1 in (0, 1] keeps the log finite.
    u1 = h1.bitwise_right_shift_(8).to(torch.float64).add_(1.0).div_(16777216.0)
    u2 = h2.bitwise_right_shift_(8).to(torch.float64).mul_(2.0 * math.pi / 16777216.0)
    z = u1.log_().mul_(-2.0).sqrt_().mul_(u2.cos_())
    return z.to(dtype)
