"""Shared plumbing of the attacks: input checks and the per-image loss gradient."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from certsr_rt.errors import InputError

SRModule = Callable[[torch.Tensor], torch.Tensor]
"""A generator: ``N x C x H x W`` LR in [0, 1] -> ``N x C x sH x sW`` SR (unclamped is fine)."""

SRLossFn = Callable[..., torch.Tensor]
"""``loss_fn(sr, hr, reduction="none") -> (N,)`` per-image losses, e.g. :class:`certsr_rt.losses.SRLoss`."""

# Values within this distance of [0, 1] count as inside (uint8 round trips, float rounding).
_RANGE_TOLERANCE = 1e-6


def check_inputs(x: torch.Tensor, hr: torch.Tensor) -> None:
    """Validate an LR batch and its HR targets.

    Raises:
        InputError: ``x`` is not a float ``N x C x H x W`` tensor in [0, 1], or ``hr`` has another batch size.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"shape {tuple(x.shape)} dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"Expected the LR batch as a float N x C x H x W tensor, but got {got}")
    if not isinstance(hr, torch.Tensor) or hr.dim() != 4 or hr.shape[:2] != x.shape[:2]:
        got = tuple(hr.shape) if isinstance(hr, torch.Tensor) else type(hr).__name__
        raise InputError(
            f"Expected HR targets N x C x sH x sW matching the LR batch {tuple(x.shape)}, but got {got}"
        )
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
            raise InputError(f"Expected LR values in [0, 1] to attack, but got values in [{lo:g}, {hi:g}]")


def check_positive(name: str, value: float, *, allow_zero: bool = True) -> None:
    """Raise :class:`InputError` unless ``value`` is a finite number >= 0 (> 0 without ``allow_zero``)."""
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number {bound}, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise InputError(f"{name} must be a finite number {bound}, got {value!r}")


def check_steps(steps: int) -> None:
    """Raise :class:`InputError` unless ``steps`` is an integer >= 1."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be an integer >= 1, got {steps!r}")


def per_image_loss(model: SRModule, x: torch.Tensor, hr: torch.Tensor, loss_fn: SRLossFn) -> torch.Tensor:
    """``loss_fn(model(x), hr, reduction="none")`` with a check that it gave one value per image."""
    return check_losses(loss_fn(model(x), hr, reduction="none"), x.shape[0])


def check_losses(losses: object, count: int) -> torch.Tensor:
    """``losses`` if it is a tensor of shape ``(count,)`` (one loss per image), else :class:`InputError`."""
    if not isinstance(losses, torch.Tensor) or losses.shape != (count,):
        got = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise InputError(
            f"loss_fn(sr, hr, reduction='none') must return one loss per image, shape ({count},), got {got}"
        )
    return losses


def loss_gradient(
    model: SRModule, x: torch.Tensor, hr: torch.Tensor, loss_fn: SRLossFn
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the summed per-image losses with respect to the input, and the losses.

    Summing per-image losses makes each image's gradient independent of the batch it is in. Only the input
    gradient is computed (``torch.autograd.grad``): the model's ``.grad`` fields are left untouched, so the
    attacks can run inside a training step.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        losses = per_image_loss(model, x, hr.detach(), loss_fn)
        (grad,) = torch.autograd.grad(losses.sum(), x)
    return grad, losses.detach()
