"""L-infinity gradient attacks on the SR loss: FGSM, BIM and PGD.

All three maximise ``loss_fn(model(x + delta), hr)`` (the SR loss of the CertSR paper, eq. 1-2) over
``||delta||_inf <= eps`` with ``x + delta`` kept in [0, 1]. They work on a batch (each image is attacked as
if alone: the per-image losses are summed before differentiating), on whatever device ``x`` and the model
are on, and never touch the model's parameter gradients. They return a detached tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from certsr_rt.attacks._common import (
    SRLossFn,
    SRModule,
    check_inputs,
    check_positive,
    check_steps,
    loss_gradient,
)

__all__ = ["GradientFn", "bim", "fgsm", "iterate", "model_gradient", "pgd", "project", "start_point"]


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project onto the L-infinity ball of radius ``eps`` around ``x``, intersected with [0, 1].

    Since ``x`` is in [0, 1] the intersection is never empty, and clamping to the ball first and to [0, 1]
    second lands in both.
    """
    return torch.clamp(torch.minimum(torch.maximum(x_adv, x - eps), x + eps), 0.0, 1.0)


def fgsm(model: SRModule, x: torch.Tensor, hr: torch.Tensor, loss_fn: SRLossFn, eps: float) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size ``eps`` along the gradient sign.

    Args:
        model: the generator (an ``nn.Module`` or any differentiable callable), LR -> SR.
        x: ``N x C x H x W`` LR batch in [0, 1].
        hr: ``N x C x sH x sW`` ground truth.
        loss_fn: ``loss_fn(sr, hr, reduction="none")`` -> per-image losses (e.g. ``SRLoss``).
        eps: L-infinity budget in [0, 1] image units (paper: 10/255 for evaluation, 9/255 for training).

    Returns:
        ``clamp(x + eps * sign(grad), 0, 1)``, detached, same shape/device/dtype as ``x``.

    Raises:
        InputError: bad shapes, values outside [0, 1] or a negative ``eps``.
    """
    check_inputs(x, hr)
    check_positive("eps", eps)
    x = x.detach()
    grad, _ = loss_gradient(model, x, hr, loss_fn)
    return project(x + eps * grad.sign(), x, eps)


GradientFn = Callable[[torch.Tensor], torch.Tensor]
"""``grad_fn(x_adv) -> d loss / d x_adv``: the gradient the sign steps follow (one per attack kind)."""


def model_gradient(model: SRModule, hr: torch.Tensor, loss_fn: SRLossFn) -> GradientFn:
    """The gradient of ``loss_fn(model(x), hr)`` summed over images, as a :data:`GradientFn`."""
    return lambda x_adv: loss_gradient(model, x_adv, hr, loss_fn)[0]


def iterate(
    grad_fn: GradientFn, x: torch.Tensor, x_adv: torch.Tensor, eps: float, steps: int, step_size: float
) -> torch.Tensor:
    """``steps`` sign steps of ``step_size`` along ``grad_fn``, each projected onto the eps-ball around ``x``.

    The loop shared by BIM, PGD and the attacks on the smoothed model (:mod:`certsr_rt.attacks.smoothed`),
    which differ only in the gradient they follow.
    """
    for _ in range(steps):
        x_adv = project(x_adv + step_size * grad_fn(x_adv).sign(), x, eps)
    return x_adv


def start_point(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD's start: ``x + U(-eps, eps)`` projected onto the eps-ball and [0, 1] (``x`` itself when eps is 0).

    The values are drawn on ``generator``'s device and moved to ``x``'s, so a CPU generator gives the same
    start on any device.
    """
    if eps <= 0:
        return x.clone()
    if generator is None:
        u = torch.rand_like(x)
    else:
        u = torch.rand(x.shape, generator=generator, device=generator.device).to(x)
    return project(x + (2.0 * u - 1.0) * eps, x, eps)


def bim(
    model: SRModule,
    x: torch.Tensor,
    hr: torch.Tensor,
    loss_fn: SRLossFn,
    eps: float,
    steps: int,
    step_size: float | None = None,
) -> torch.Tensor:
    """Basic iterative method (Kurakin et al. 2017): FGSM steps from ``x``, projected after each step.

    Args:
        model: the generator, LR -> SR.
        x: ``N x C x H x W`` LR batch in [0, 1].
        hr: ``N x C x sH x sW`` ground truth.
        loss_fn: per-image SR loss (``reduction="none"``).
        eps: L-infinity budget.
        steps: number of iterations (paper training setting: 2).
        step_size: size of each sign step; ``None`` means ``eps / steps`` (enough to reach the boundary).

    Returns:
        The adversarial LR batch, detached, within ``eps`` of ``x`` and in [0, 1].
    """
    check_inputs(x, hr)
    check_positive("eps", eps)
    check_steps(steps)
    alpha = eps / steps if step_size is None else step_size
    check_positive("step_size", alpha)
    x = x.detach()
    return iterate(model_gradient(model, hr, loss_fn), x, x.clone(), eps, steps, alpha)


def pgd(
    model: SRModule,
    x: torch.Tensor,
    hr: torch.Tensor,
    loss_fn: SRLossFn,
    eps: float,
    steps: int,
    step_size: float | None = None,
    *,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018): BIM from a uniformly random point of the eps-ball.

    Args:
        model: the generator, LR -> SR.
        x: ``N x C x H x W`` LR batch in [0, 1].
        hr: ``N x C x sH x sW`` ground truth.
        loss_fn: per-image SR loss (``reduction="none"``).
        eps: L-infinity budget (paper: 10/255 for evaluation; 14/255 with 2 steps for training, after
            Castillo et al.).
        steps: number of iterations.
        step_size: size of each sign step; ``None`` means ``eps / steps``.
        random_start: start from ``x + U(-eps, eps)`` (clamped to [0, 1]) instead of ``x``.
        generator: torch generator for the random start, for reproducibility. The values are drawn on the
            generator's device and moved to ``x``'s, so a CPU generator gives the same start on any device.

    Returns:
        The adversarial LR batch, detached, within ``eps`` of ``x`` and in [0, 1].
    """
    check_inputs(x, hr)
    check_positive("eps", eps)
    check_steps(steps)
    alpha = eps / steps if step_size is None else step_size
    check_positive("step_size", alpha)
    x = x.detach()
    x_adv = start_point(x, eps, generator) if random_start else x.clone()
    return iterate(model_gradient(model, hr, loss_fn), x, x_adv, eps, steps, alpha)
