"""Carlini-Wagner style L2 attack on the SR loss, with the tanh change of variables.

Carlini & Wagner (2017) minimise ``||delta||_2^2 + c * f(x + delta)`` and keep ``x + delta`` a valid image by
optimising ``w`` with ``x + delta = (tanh(w) + 1) / 2``. For super-resolution there is no class margin ``f``;
the attack wants the SR loss high, so ``f = -L_SR`` and each image minimises::

    D(x + delta, x) - c * L_SR(f(x + delta), hr),    D = mean over pixels and channels of delta^2

with Adam on ``w`` (CertSR paper: Adam lr 1e-2, 6 iterations, c = 0.01 for evaluation; 4 iterations for
training).

Why a *mean* squared distance instead of CW's sum: ``L_SR`` is itself a per-pixel mean, so its gradient per
LR pixel is about ``1 / num_pixels``. With the summed distance the penalty's gradient (``2 * delta``) is
larger than ``c`` times that by orders of magnitude for any image of useful size, and the optimiser returns
``x`` unchanged. With both terms per-pixel means, ``c`` balances two quantities of the same kind and its
meaning does not depend on the image size.

Like CW's "best adversarial example" bookkeeping, each image returns the iterate (including the start and
the point after the last step) with the lowest objective. Adam's momentum can carry ``w`` back past its
start, into the loss-*decreasing* direction, when the distance penalty wins; keeping the best iterate means
the returned image never has a lower SR loss than the starting point.
"""

from __future__ import annotations

import torch

from certsr_rt.attacks._common import (
    SRLossFn,
    SRModule,
    check_inputs,
    check_positive,
    check_steps,
    per_image_loss,
)

__all__ = ["cw"]

# Keeps atanh finite for pixels that are exactly 0 or 1: (tanh(w) + 1) / 2 then reproduces them to ~5e-7.
_ATANH_LIMIT = 1.0 - 1e-6


def to_tanh_space(x: torch.Tensor) -> torch.Tensor:
    """``w`` with ``(tanh(w) + 1) / 2 == x`` (up to 5e-7 for pixels at 0 or 1)."""
    return torch.atanh((2.0 * x - 1.0).clamp(-_ATANH_LIMIT, _ATANH_LIMIT))


def from_tanh_space(w: torch.Tensor) -> torch.Tensor:
    """The image ``(tanh(w) + 1) / 2``, always in [0, 1]."""
    return (torch.tanh(w) + 1.0) / 2.0


def cw(
    model: SRModule,
    x: torch.Tensor,
    hr: torch.Tensor,
    loss_fn: SRLossFn,
    c: float = 0.01,
    steps: int = 6,
    learning_rate: float = 1e-2,
) -> torch.Tensor:
    """Carlini-Wagner L2 attack adapted to SR (see the module docstring for the objective).

    Args:
        model: the generator, LR -> SR.
        x: ``N x C x H x W`` LR batch in [0, 1].
        hr: ``N x C x sH x sW`` ground truth.
        loss_fn: per-image SR loss (``reduction="none"``).
        c: weight of the SR loss against the mean squared perturbation (paper: 0.01).
        steps: Adam iterations (paper: 6 for evaluation, 4 for training).
        learning_rate: Adam learning rate on ``w`` (paper: 1e-2).

    Returns:
        Per image, the iterate ``(tanh(w) + 1) / 2`` with the lowest objective (``steps + 1`` candidates),
        detached, in [0, 1], same shape/device/dtype as ``x``.

    Raises:
        InputError: bad shapes, values outside [0, 1], or a non-positive ``c`` / ``learning_rate``.
    """
    check_inputs(x, hr)
    check_positive("c", c, allow_zero=False)
    check_positive("learning_rate", learning_rate, allow_zero=False)
    check_steps(steps)
    x = x.detach()
    hr = hr.detach()
    w = to_tanh_space(x).requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=learning_rate)
    best = from_tanh_space(w.detach())
    best_objective = torch.full((x.shape[0],), float("inf"), device=x.device)
    for step in range(steps + 1):
        last = step == steps
        with torch.set_grad_enabled(not last):
            x_adv = from_tanh_space(w)
            distance = (x_adv - x).pow(2).flatten(1).mean(1)
            objective = distance - c * per_image_loss(model, x_adv, hr, loss_fn)
            total = objective.sum()  # inside the block: callers may run attacks under no_grad
        improved = objective.detach() < best_objective
        best_objective = torch.where(improved, objective.detach(), best_objective)
        best = torch.where(improved.view(-1, 1, 1, 1), x_adv.detach(), best)
        if last:
            break
        # autograd.grad, not backward(): the model's parameter gradients stay untouched.
        (w.grad,) = torch.autograd.grad(total, w)
        optimizer.step()
    return best.to(x.dtype)
