"""Adaptive attacks on the median-smoothed model: PGD with expectation over noise, PGD through the median.

The transfer attacks (:func:`~certsr_rt.attacks.fgsm`, ``bim``, ``pgd``, ``cw`` run against the plain
generator) craft an input for the base model and leave the smoothed model to cope with it. The two attacks
here aim at the smoothed prediction ``median_i f(x + sigma * z_i)`` itself; both use PGD's budget, steps,
step size and random start (:func:`~certsr_rt.attacks.pgd`) and differ only in the gradient they follow:

* :func:`pgd_eot` — the attacker knows the model and sigma but not the seed. Each step follows the gradient
  of the mean over ``eot_samples`` fresh draws ``g_j ~ N(0, sigma^2 I)`` of ``loss(f(x + g_j), hr)``
  (expectation over transformation, Athalye et al. 2018). The draws come from ``noise_generator``, a stream
  independent of the deployed noise field, and are new at every step.
* :func:`pgd_median` — the attacker also knows the seed, so the smoothed model is a deterministic function:
  each step follows the gradient of ``loss(median_i f(x + sigma * z_i), hr)`` with the exact deployed noise
  ``z`` (:func:`deployed_noise`, the field :class:`~certsr_rt.runtime.Upscaler` adds on an untiled image).
  The median's backward pass routes each output value's gradient to the sample that is the median there
  (half to each of the two middle samples for even n).

For a plain model (sigma 0 or n = 1, which the Upscaler runs without noise) both are exactly
:func:`~certsr_rt.attacks.pgd`.

Memory: ``chunk_size`` bounds how many noisy copies go through one autograd pass. With chunks, the median
attack first runs the n copies without a graph to find which sample is the median of each output value, then
recomputes the copies chunk by chunk and back-propagates the loss gradient into the selected samples only:
the same gradient as one pass over all n (tested), for one extra forward per copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from certsr_rt.attacks._common import (
    SRLossFn,
    SRModule,
    check_inputs,
    check_losses,
    check_positive,
    check_steps,
)
from certsr_rt.attacks.gradient import GradientFn, iterate, pgd, start_point
from certsr_rt.errors import InputError

__all__ = [
    "SmoothingTarget",
    "deployed_noise",
    "eot_gradient",
    "median_gradient",
    "pgd_eot",
    "pgd_median",
    "smoothed_forward",
]


@dataclass(frozen=True)
class SmoothingTarget:
    """The smoothed model an adaptive attack aims at: its sigma and n, and which noise field it deploys.

    ``seed`` and ``noise_key`` are what :class:`~certsr_rt.runtime.Upscaler` was given
    (``SmoothingConfig(seed=...)`` and ``noise_key=``); only :func:`pgd_median` uses them.
    """

    sigma: float
    samples: int
    seed: int = 0
    noise_key: int = 0

    def __post_init__(self) -> None:
        check_positive("sigma", self.sigma)
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise InputError(f"samples must be an integer >= 1, got {self.samples!r}")

    @property
    def plain(self) -> bool:
        """Whether the deployed model is the plain generator (sigma 0 or a single sample: no noise added)."""
        return self.sigma == 0 or self.samples == 1


def deployed_noise(
    target: SmoothingTarget, shape: tuple[int, int, int], device: torch.device | str
) -> torch.Tensor:
    """The ``n x C x H x W`` standard-normal field the Upscaler adds to an untiled ``C x H x W`` image.

    Computed by :func:`certsr_rt.smoothing.noise.gaussian_field` from ``target.seed`` and
    ``target.noise_key`` at offset 0, which is what the Upscaler draws for a single tile (``tile=0``, as the
    evaluation runs it) whatever its chunking.
    """
    from certsr_rt.smoothing.noise import gaussian_field

    c, h, w = shape
    return gaussian_field(
        (target.samples, c, h, w), seed=target.seed, key=target.noise_key, device=device, dtype=torch.float32
    )


def _noisy_outputs(model: SRModule, x: torch.Tensor, sigma: float, noise: torch.Tensor) -> torch.Tensor:
    """``model(x_i + sigma * noise_j)`` for every image i and copy j, as ``k x N x C x sH x sW``."""
    k, n_images = noise.shape[0], x.shape[0]
    batch = (x.unsqueeze(0) + sigma * noise.unsqueeze(1)).reshape(k * n_images, *x.shape[1:])
    out = model(batch)
    return out.reshape(k, n_images, *out.shape[1:])


def _middle(n: int) -> tuple[int, ...]:
    return (n // 2,) if n % 2 == 1 else (n // 2 - 1, n // 2)


def smoothed_forward(model: SRModule, x: torch.Tensor, sigma: float, noise: torch.Tensor) -> torch.Tensor:
    """Differentiable ``median_j model(x + sigma * noise_j)`` per image and output value.

    Args:
        model: the generator.
        x: ``N x C x H x W`` LR batch (every image gets the same noise field, as in the Upscaler).
        sigma: noise standard deviation.
        noise: ``n x C x H x W`` standard-normal field (:func:`deployed_noise`).

    Returns:
        ``N x C x sH x sW``: the middle order statistic (odd n) or the mean of the two middle ones (even n),
        the Upscaler's median.
    """
    outs = _noisy_outputs(model, x, sigma, noise)
    ordered, _ = torch.sort(outs, dim=0)
    middle = _middle(outs.shape[0])
    return sum(ordered[p] for p in middle) / len(middle)  # type: ignore[return-value]


def _chunks(total: int, chunk_size: int | None) -> list[tuple[int, int]]:
    size = total if chunk_size is None else max(1, min(chunk_size, total))
    return [(start, min(size, total - start)) for start in range(0, total, size)]


def median_gradient(
    model: SRModule,
    x: torch.Tensor,
    hr: torch.Tensor,
    loss_fn: SRLossFn,
    sigma: float,
    noise: torch.Tensor,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Gradient with respect to ``x`` of the summed per-image ``loss_fn(smoothed_forward(...), hr)``.

    Args:
        model: the generator.
        x: ``N x C x H x W`` LR batch.
        hr: ``N x C x sH x sW`` targets.
        loss_fn: per-image SR loss (``reduction="none"``).
        sigma: noise standard deviation.
        noise: the ``n x C x H x W`` deployed field.
        chunk_size: copies per autograd pass; ``None`` (or >= n) runs all n in one pass. Smaller chunks give
            the same gradient for one extra forward per copy.

    Returns:
        The input gradient, detached; the model's parameter gradients are untouched.
    """
    x = x.detach()
    hr = hr.detach()
    n = noise.shape[0]
    spans = _chunks(n, chunk_size)
    if len(spans) == 1:
        xg = x.requires_grad_(True)
        with torch.enable_grad():
            losses = check_losses(
                loss_fn(smoothed_forward(model, xg, sigma, noise), hr, reduction="none"), len(x)
            )
            (grad,) = torch.autograd.grad(losses.sum(), xg)
        return grad
    with torch.no_grad():
        outs = torch.cat([_noisy_outputs(model, x, sigma, noise[s : s + k]) for s, k in spans])
    ordered, index = torch.sort(outs, dim=0)
    middle = _middle(n)
    med = (sum(ordered[p] for p in middle) / len(middle)).requires_grad_(True)
    del outs, ordered
    with torch.enable_grad():
        losses = check_losses(loss_fn(med, hr, reduction="none"), len(x))
        (grad_med,) = torch.autograd.grad(losses.sum(), med)
    chosen = [index[p] for p in middle]
    grad = torch.zeros_like(x)
    for start, k in spans:
        copies = torch.arange(start, start + k, device=x.device).view(k, *([1] * grad_med.dim()))
        weight = sum((c.unsqueeze(0) == copies).to(grad_med.dtype) for c in chosen) / len(middle)
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            out = _noisy_outputs(model, xg, sigma, noise[start : start + k])
            (g,) = torch.autograd.grad(out, xg, grad_outputs=weight * grad_med.unsqueeze(0))
        grad += g
    return grad


def eot_gradient(
    model: SRModule,
    x: torch.Tensor,
    hr: torch.Tensor,
    loss_fn: SRLossFn,
    sigma: float,
    noise: torch.Tensor,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Gradient with respect to ``x`` of ``mean_j loss_fn(model(x + sigma * noise_j), hr)``, summed on images.

    Args:
        model: the generator.
        x: ``N x C x H x W`` LR batch.
        hr: ``N x C x sH x sW`` targets.
        loss_fn: per-image SR loss (``reduction="none"``).
        sigma: noise standard deviation.
        noise: ``k x N x C x H x W`` standard-normal draws (one set per image) or ``k x C x H x W`` (shared).
        chunk_size: draws per autograd pass (``None``: all k at once); the gradient is the same.

    Returns:
        The input gradient, detached.
    """
    x = x.detach()
    hr = hr.detach()
    k_total = noise.shape[0]
    if noise.dim() == 4:
        noise = noise.unsqueeze(1).expand(k_total, *x.shape)
    grad = torch.zeros_like(x)
    for start, k in _chunks(k_total, chunk_size):
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            batch = (xg.unsqueeze(0) + sigma * noise[start : start + k]).reshape(k * len(x), *x.shape[1:])
            targets = hr.unsqueeze(0).expand(k, *hr.shape).reshape(k * len(hr), *hr.shape[1:])
            losses = check_losses(loss_fn(model(batch), targets, reduction="none"), k * len(x))
            (g,) = torch.autograd.grad(losses.sum() / k_total, xg)
        grad += g
    return grad


def _check(x: torch.Tensor, hr: torch.Tensor, eps: float, steps: int, step_size: float | None) -> float:
    check_inputs(x, hr)
    check_positive("eps", eps)
    check_steps(steps)
    alpha = eps / steps if step_size is None else step_size
    check_positive("step_size", alpha)
    return alpha


def _run(
    grad_fn: GradientFn,
    x: torch.Tensor,
    eps: float,
    steps: int,
    alpha: float,
    random_start: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    x = x.detach()
    x_adv = start_point(x, eps, generator) if random_start else x.clone()
    return iterate(grad_fn, x, x_adv, eps, steps, alpha)


def pgd_eot(
    model: SRModule,
    x: torch.Tensor,
    hr: torch.Tensor,
    loss_fn: SRLossFn,
    eps: float,
    steps: int,
    step_size: float | None = None,
    *,
    target: SmoothingTarget,
    eot_samples: int = 8,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    noise_generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """PGD on the expectation over fresh Gaussian noise (the attacker knows model and sigma, not the seed).

    Args:
        model: the base generator of the smoothed model.
        x: ``N x C x H x W`` LR batch in [0, 1].
        hr: ``N x C x sH x sW`` ground truth.
        loss_fn: per-image SR loss (``reduction="none"``).
        eps: L-infinity budget.
        steps: iterations.
        step_size: sign-step size; ``None`` means ``eps / steps``.
        target: the smoothed model; only its sigma and n are used (the attacker does not know the seed).
        eot_samples: fresh noise draws per step, k.
        random_start: start from a uniform random point of the eps-ball (as :func:`pgd`).
        generator: random source of the start (as :func:`pgd`).
        noise_generator: random source of the draws (drawn on its device, moved to ``x``'s); ``None`` uses
            torch's global generator. Keep it independent of the deployed seed.
        chunk_size: draws per autograd pass (memory); the result does not depend on it.

    Returns:
        The adversarial LR batch, detached, within ``eps`` of ``x`` and in [0, 1]. For a plain target
        (sigma 0 or n = 1) exactly :func:`pgd` with the same start.
    """
    if target.plain:
        return pgd(
            model, x, hr, loss_fn, eps, steps, step_size, random_start=random_start, generator=generator
        )
    alpha = _check(x, hr, eps, steps, step_size)
    sigma = target.sigma
    if isinstance(eot_samples, bool) or not isinstance(eot_samples, int) or eot_samples < 1:
        raise InputError(f"eot_samples must be an integer >= 1, got {eot_samples!r}")

    def grad_fn(x_adv: torch.Tensor) -> torch.Tensor:
        shape = (eot_samples, *x_adv.shape)
        if noise_generator is None:
            noise = torch.randn(shape, device=x_adv.device, dtype=x_adv.dtype)
        else:
            noise = torch.randn(shape, generator=noise_generator, device=noise_generator.device).to(x_adv)
        return eot_gradient(model, x_adv, hr, loss_fn, sigma, noise, chunk_size=chunk_size)

    return _run(grad_fn, x, eps, steps, alpha, random_start, generator)


def pgd_median(
    model: SRModule,
    x: torch.Tensor,
    hr: torch.Tensor,
    loss_fn: SRLossFn,
    eps: float,
    steps: int,
    step_size: float | None = None,
    *,
    target: SmoothingTarget,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """PGD through the deployed n-sample median with the exact deployed noise (the attacker knows the seed).

    Args:
        model: the base generator of the smoothed model.
        x: ``N x C x H x W`` LR batch in [0, 1].
        hr: ``N x C x sH x sW`` ground truth.
        loss_fn: per-image SR loss (``reduction="none"``).
        eps: L-infinity budget.
        steps: iterations.
        step_size: sign-step size; ``None`` means ``eps / steps``.
        target: sigma, n, seed and noise key of the deployed smoothed model.
        random_start: start from a uniform random point of the eps-ball (as :func:`pgd`).
        generator: random source of the start (as :func:`pgd`).
        chunk_size: copies per autograd pass (memory); the result does not depend on it.

    Returns:
        The adversarial LR batch, detached, within ``eps`` of ``x`` and in [0, 1].
    """
    if target.plain:
        return pgd(
            model, x, hr, loss_fn, eps, steps, step_size, random_start=random_start, generator=generator
        )
    alpha = _check(x, hr, eps, steps, step_size)
    noise = deployed_noise(target, tuple(x.shape[1:]), x.device).to(x.dtype)  # type: ignore[arg-type]

    def grad_fn(x_adv: torch.Tensor) -> torch.Tensor:
        return median_gradient(model, x_adv, hr, loss_fn, target.sigma, noise, chunk_size=chunk_size)

    return _run(grad_fn, x, eps, steps, alpha, random_start, generator)
