"""Certified per-pixel bounds for median smoothing (the paper's Lemma 4.1, after Chiang et al. 2020).

Notation follows the paper and Chiang et al., "Detection as Regression: Certified Object Detection by Median
Smoothing" (NeurIPS 2020). ``f`` is the generator, ``x`` the low-resolution input, ``G ~ N(0, σ² I)`` the
smoothing noise, and for one output pixel (and channel) ``q_p(x)`` is the p-th percentile of the
distribution of ``f(x + G)`` at that pixel. The median-smoothed generator is ``h(x) = q_{1/2}(x)``.

**Percentile bound (population).** For every perturbation ``δ`` with ``‖δ‖₂ < ε``::

    q_{p̲}(x) ≤ h(x + δ) ≤ q_{p̄}(x),    p̲ = Φ(−ε/σ),   p̄ = Φ(ε/σ).

**Estimation from n samples.** With ``y_(1) ≤ … ≤ y_(n)`` the sorted noisy outputs ``f(x + g_i)`` at
that pixel, the number of samples at or below ``q_p`` is ``Binomial(n, p)`` (at least that, if the
distribution has atoms), so ``P(y_(k) ≤ q_p) ≥ 1 − BinomCDF(k − 1; n, p)`` and
``P(y_(k) ≥ q_p) ≥ BinomCDF(k − 1; n, p)``. Hence

* the **lower rank** ``k̲`` is the largest k with ``BinomCDF(k − 1; n, p̲) ≤ α/2``; then
  ``y_(k̲) ≤ q_{p̲}(x)`` with probability ≥ 1 − α/2. If even k = 1 fails (``(1 − p̲)ⁿ > α/2``) the lower
  side is **vacuous**: the only certified lower bound is −∞ (0 for images clamped to [0, 1]);
* the **upper rank** ``k̄`` is the smallest k with ``BinomCDF(k − 1; n, p̄) ≥ 1 − α/2``; then
  ``y_(k̄) ≥ q_{p̄}(x)`` with probability ≥ 1 − α/2. If no k ≤ n qualifies (``p̄ⁿ > α/2``) the upper side
  is vacuous (+∞, i.e. 1 for images).

By the union bound, **with probability at least 1 − α over the n noise draws, for every δ with
‖δ‖₂ < ε, the smoothed median h(x + δ) lies in [y_(k̲), y_(k̄)]**. The statement is per pixel and per
channel: it is *not* simultaneous over all pixels of an image (a simultaneous statement would need a
Bonferroni-style split of α over the pixels). ``h`` is the population median; the runtime's n-sample median
is an estimate of it. ``‖δ‖₂`` is the L2 norm over the *whole* input image (all pixels and channels), so an
L∞ perturbation of size η on an H × W × C image has ``‖δ‖₂ ≤ η √(HWC)``.

Everything here is plain float64 arithmetic on the CPU (``math`` and ``torch``; scipy is not a core
dependency): ``Φ`` via ``math.erfc``, the binomial CDF in log space with ``lgamma`` (stable for n up to
1e5 and beyond). Nothing here touches a device; :func:`summarize_bounds` accepts tensors from any device.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from certsr_rt.errors import InputError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "BoundsConfig",
    "BoundsSummary",
    "CertifiedRanks",
    "binomial_cdf",
    "certified_ranks",
    "min_samples_for_bounds",
    "percentile_levels",
    "summarize_bounds",
    "vacuity_message",
]

# Slack for "the median lies inside [lower, upper]": the bounds and the median may come from different
# code paths (CUDA kernel, fp16 engine output), which can differ in the last bits.
_INSIDE_ATOL = 1e-6


# --------------------------------------------------------------------------------------------------------
# validation helpers


def _check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps < 0:
        raise InputError(f"eps (the L2 radius) must be a finite number >= 0, got {eps!r}")
    return float(eps)


def _check_sigma(sigma: float) -> float:
    if (
        isinstance(sigma, bool)
        or not isinstance(sigma, numbers.Real)
        or not math.isfinite(sigma)
        or sigma <= 0
    ):
        raise InputError(f"sigma (the smoothing noise std) must be a finite number > 0, got {sigma!r}")
    return float(sigma)


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < alpha < 1.0:
        raise InputError(f"alpha (the failure probability) must be in (0, 1), got {alpha!r}")
    return float(alpha)


def _check_n(n: int, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise InputError(f"{name} (the number of samples) must be an integer >= 1, got {n!r}")
    return int(n)


def _check_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise InputError(f"p (the success probability) must be in [0, 1], got {p!r}")
    return float(p)


# --------------------------------------------------------------------------------------------------------
# Φ and the binomial CDF


def _std_normal_cdf(z: float) -> float:
    """Φ(z), accurate in both tails (erfc avoids the cancellation of 1 + erf near −∞)."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def percentile_levels(eps: float, sigma: float) -> tuple[float, float]:
    """The percentile levels of Lemma 4.1 for the median (p = 1/2).

    Args:
        eps: L2 radius ε >= 0 of the input perturbation (whole-image norm, [0, 1] pixel units).
        sigma: smoothing noise standard deviation σ > 0.

    Returns:
        ``(p_lower, p_upper) = (Φ(−ε/σ), Φ(ε/σ))``; ``(0.5, 0.5)`` for ε = 0.

    Raises:
        InputError: ``eps`` negative or not finite, or ``sigma`` not > 0.
    """
    eps = _check_eps(eps)
    sigma = _check_sigma(sigma)
    ratio = eps / sigma
    return _std_normal_cdf(-ratio), _std_normal_cdf(ratio)


def _log_binomial_pmf(n: int, p: float, k_max: int) -> torch.Tensor:
    """Log-probabilities log P(Binomial(n, p) = i) for i = 0..k_max, float64; requires 0 < p < 1."""
    i = torch.arange(k_max + 1, dtype=torch.float64)
    nn = torch.tensor(float(n), dtype=torch.float64)
    log_choose = torch.lgamma(nn + 1.0) - torch.lgamma(i + 1.0) - torch.lgamma(nn - i + 1.0)
    return log_choose + i * math.log(p) + (nn - i) * math.log1p(-p)


def _binomial_cdf_table(n: int, p: float) -> NDArray[np.float64]:
    """``BinomCDF(k; n, p)`` for k = 0..n as a float64 array (non-decreasing, last entry 1)."""
    if p <= 0.0:
        return np.ones(n + 1, dtype=np.float64)
    if p >= 1.0:
        table = np.zeros(n + 1, dtype=np.float64)
        table[n] = 1.0
        return table
    log_cdf = torch.logcumsumexp(_log_binomial_pmf(n, p, n), dim=0)
    table = torch.exp(log_cdf).clamp_(max=1.0).numpy()
    # Rounding can leave the total a few ulps below 1; the CDF at k = n is exactly 1.
    table[n] = 1.0
    return np.maximum.accumulate(table)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``BinomCDF(k; n, p) = P(Binomial(n, p) ≤ k)``, computed in float64 log space.

    Each term ``C(n, i) pⁱ (1 − p)ⁿ⁻ⁱ`` is formed from ``lgamma`` in log space and the terms are summed
    with a log-sum-exp, so tiny tail probabilities keep their relative accuracy (about 1e-10 relative at
    n = 1e5) and nothing overflows.

    Args:
        k: number of successes; ``k < 0`` gives 0 and ``k >= n`` gives 1.
        n: number of trials, >= 1.
        p: success probability in [0, 1].

    Returns:
        The probability as a Python float.

    Raises:
        InputError: ``n`` not a positive integer, or ``p`` outside [0, 1].
    """
    n = _check_n(n)
    p = _check_p(p)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InputError(f"k must be an integer, got {k!r}")
    k = int(k)
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p == 0.0:
        return 1.0
    if p == 1.0:
        return 0.0
    log_cdf = torch.logsumexp(_log_binomial_pmf(n, p, k), dim=0)
    return min(1.0, math.exp(float(log_cdf)))


# --------------------------------------------------------------------------------------------------------
# ranks


@dataclass(frozen=True)
class CertifiedRanks:
    """Order-statistic ranks that certify a smoothed-median interval (Lemma 4.1).

    With probability at least ``1 − alpha`` over the ``n`` noise draws at x, for every δ with
    ``‖δ‖₂ < eps`` the smoothed median at ``x + δ`` lies in ``[y_(lower), y_(upper)]`` — per pixel and
    channel, not simultaneously over pixels.

    Attributes:
        n: number of noise samples the ranks refer to.
        eps: certified L2 radius ε.
        sigma: smoothing noise standard deviation σ.
        alpha: failure probability α (split α/2 per side).
        p_lower: ``p̲ = Φ(−ε/σ)``.
        p_upper: ``p̄ = Φ(ε/σ)``.
        lower: 1-based rank ``k̲`` of the lower-bound order statistic, or None when the lower side is
            vacuous (the bound is −∞; 0 for images in [0, 1]).
        upper: 1-based rank ``k̄`` of the upper-bound order statistic, or None when the upper side is
            vacuous (+∞; 1 for images in [0, 1]).
    """

    n: int
    eps: float
    sigma: float
    alpha: float
    p_lower: float
    p_upper: float
    lower: int | None
    upper: int | None

    @property
    def lower_vacuous(self) -> bool:
        """True when no order statistic certifies the lower side."""
        return self.lower is None

    @property
    def upper_vacuous(self) -> bool:
        """True when no order statistic certifies the upper side."""
        return self.upper is None

    @property
    def vacuous(self) -> bool:
        """True when either side is vacuous."""
        return self.lower is None or self.upper is None

    @property
    def ranks(self) -> tuple[int, ...]:
        """The non-vacuous ranks, in order (what to ask the order-statistics kernel for)."""
        return tuple(k for k in (self.lower, self.upper) if k is not None)


def _lower_rank(table_lower: NDArray[np.float64], n: int, alpha: float) -> int | None:
    # k̲ = max{k in 1..n : BinomCDF(k − 1; n, p̲) ≤ α/2}; table[k − 1] is BinomCDF(k − 1).
    # The CDF is non-decreasing in k, so the qualifying k form a prefix 1..K.
    count = int(np.searchsorted(table_lower[:n], alpha / 2.0, side="right"))
    return count if count >= 1 else None


def _upper_rank(table_upper: NDArray[np.float64], n: int, alpha: float) -> int | None:
    # k̄ = min{k in 1..n : BinomCDF(k − 1; n, p̄) ≥ 1 − α/2}.
    index = int(np.searchsorted(table_upper[:n], 1.0 - alpha / 2.0, side="left"))
    return index + 1 if index < n else None


def certified_ranks(n: int, eps: float, sigma: float, alpha: float = 0.05) -> CertifiedRanks:
    """The order-statistic ranks that bound the smoothed median under ``‖δ‖₂ < eps`` (Lemma 4.1).

    With ``y_(1) ≤ … ≤ y_(n)`` the sorted noisy outputs at x (per pixel), ``P(y_(k) ≤ q_p) ≥
    1 − BinomCDF(k − 1; n, p)``. The lower rank is the largest k with ``BinomCDF(k − 1; n, p̲) ≤ α/2``
    (None: vacuous) and the upper rank the smallest k with ``BinomCDF(k − 1; n, p̄) ≥ 1 − α/2``
    (None: vacuous). Then, **with probability at least 1 − α over the noise, for every δ with
    ‖δ‖₂ < ε, the smoothed median at x + δ lies in [y_(lower), y_(upper)]**, per pixel and channel (not
    simultaneously over pixels). With ε = 0 this is the usual distribution-free confidence interval for
    the median (n = 21, α = 0.05: ranks 6 and 16).

    Args:
        n: number of noise samples, >= 1.
        eps: L2 radius ε >= 0 (whole-image norm, [0, 1] pixel units).
        sigma: smoothing noise standard deviation σ > 0.
        alpha: failure probability in (0, 1), split α/2 per side.

    Returns:
        A :class:`CertifiedRanks`; ``lower <= upper`` whenever both are set.

    Raises:
        InputError: an argument out of range.
    """
    n = _check_n(n)
    alpha = _check_alpha(alpha)
    p_lower, p_upper = percentile_levels(eps, sigma)
    lower = _lower_rank(_binomial_cdf_table(n, p_lower), n, alpha)
    upper = _upper_rank(_binomial_cdf_table(n, p_upper), n, alpha)
    return CertifiedRanks(
        n=n,
        eps=float(eps),
        sigma=float(sigma),
        alpha=alpha,
        p_lower=p_lower,
        p_upper=p_upper,
        lower=lower,
        upper=upper,
    )


def min_samples_for_bounds(eps: float, sigma: float, alpha: float = 0.05, max_n: int = 100_000) -> int | None:
    """The smallest n for which both sides of :func:`certified_ranks` are non-vacuous.

    The lower side exists iff ``BinomCDF(0; n, p̲) = (1 − p̲)ⁿ ≤ α/2`` and the upper side iff
    ``1 − BinomCDF(n − 1; n, p̄) = p̄ⁿ ≤ α/2``; both are monotone in n, so the answer has the closed form
    ``⌈log(α/2) / log(max(1 − p̲, p̄))⌉``, which is then checked (and nudged by rounding, if needed)
    against :func:`certified_ranks` itself.

    Args:
        eps: L2 radius ε >= 0.
        sigma: smoothing noise standard deviation σ > 0.
        alpha: failure probability in (0, 1).
        max_n: give up above this many samples.

    Returns:
        The minimum n, or None when it exceeds ``max_n`` (including ε/σ so large that p̄ rounds to 1).

    Raises:
        InputError: an argument out of range.
    """
    alpha = _check_alpha(alpha)
    max_n = _check_n(max_n, "max_n")
    p_lower, p_upper = percentile_levels(eps, sigma)
    # log of the larger of (1 − p̲) and p̄, through log1p so that tiny p̲ keep their precision.
    log_q = max(math.log1p(-p_lower), math.log(p_upper)) if p_lower > 0.0 else 0.0
    if log_q >= 0.0:
        return None
    estimate = math.ceil(math.log(alpha / 2.0) / log_q)
    if estimate > max_n + 1:
        return None

    def ok(n: int) -> bool:
        return not certified_ranks(n, eps, sigma, alpha).vacuous

    n = max(1, min(estimate, max_n))
    while n > 1 and ok(n - 1):
        n -= 1
    while n <= max_n and not ok(n):
        n += 1
    return n if n <= max_n else None


def vacuity_message(ranks: CertifiedRanks) -> str:
    """A one-line explanation of which side of ``ranks`` is vacuous and what n would fix it.

    Args:
        ranks: the result of :func:`certified_ranks`.

    Returns:
        The message (for a warning or an error). For non-vacuous ranks it states the ranks instead.
    """
    setting = (
        f"n={ranks.n}, eps={ranks.eps:g}, sigma={ranks.sigma:g} (eps/sigma={ranks.eps / ranks.sigma:.3g}), "
        f"alpha={ranks.alpha:g}"
    )
    if not ranks.vacuous:
        return (
            f"certified bounds are non-vacuous at {setting}: lower = order statistic {ranks.lower}, "
            f"upper = order statistic {ranks.upper} of {ranks.n}"
        )
    sides = [
        side for side, missing in (("lower", ranks.lower_vacuous), ("upper", ranks.upper_vacuous)) if missing
    ]
    what = " and ".join(sides) + (" sides are" if len(sides) == 2 else " side is")
    fill = {"lower": "0", "upper": "1"}
    filled = " and ".join(f"{side} = {fill[side]}" for side in sides)
    needed = min_samples_for_bounds(ranks.eps, ranks.sigma, ranks.alpha)
    if needed is None:
        fix = (
            "no number of samples up to n=100000 makes them non-vacuous; "
            "use a smaller eps, a larger sigma or a larger alpha"
        )
    else:
        fix = f"at least n={needed} samples are needed for non-vacuous bounds"
    return f"certified {what} vacuous at {setting} (reported as {filled}); {fix}"


# --------------------------------------------------------------------------------------------------------
# configuration and summaries


@dataclass(frozen=True)
class BoundsConfig:
    """Request for certified per-pixel bounds alongside the smoothed image.

    Attributes:
        eps: L2 radius ε >= 0 of the input perturbations to certify against, measured over the whole
            low-resolution input in [0, 1] pixel units.
        alpha: failure probability in (0, 1); the per-pixel bound holds with probability >= 1 − alpha.
    """

    eps: float
    alpha: float = 0.05

    def __post_init__(self) -> None:
        _check_eps(self.eps)
        _check_alpha(self.alpha)

    def ranks(self, n: int, sigma: float) -> CertifiedRanks:
        """:func:`certified_ranks` for this configuration at ``n`` samples and noise ``sigma``."""
        return certified_ranks(n, self.eps, sigma, self.alpha)


@dataclass(frozen=True)
class BoundsSummary:
    """Per-image summary of certified bounds (all values in [0, 1] image units unless stated).

    Attributes:
        num_values: number of pixel-channel values summarised.
        mean_width: mean of ``upper − lower``.
        max_width: maximum of ``upper − lower``.
        mean_width_levels: mean width in 8-bit levels (× 255).
        max_width_levels: maximum width in 8-bit levels (× 255).
        frac_within_1_level: fraction of values whose width is at most 1/255.
        frac_within_8_levels: fraction of values whose width is at most 8/255.
        frac_median_inside: fraction of values whose median lies in [lower, upper] (a sanity check;
            1.0 whenever the bounds are order statistics bracketing the median).
        ranks: the ranks the bounds came from, when known.
    """

    num_values: int
    mean_width: float
    max_width: float
    mean_width_levels: float
    max_width_levels: float
    frac_within_1_level: float
    frac_within_8_levels: float
    frac_median_inside: float
    ranks: CertifiedRanks | None = None

    def format(self) -> str:
        """One paragraph for humans."""
        head = "Certified bounds"
        if self.ranks is not None:
            r = self.ranks
            head += (
                f" (n={r.n}, sigma={r.sigma:g}, eps={r.eps:g}, alpha={r.alpha:g}; "
                f"per pixel with probability >= {1 - r.alpha:g}, not simultaneous over pixels"
            )
            if r.vacuous:
                head += "; VACUOUS: " + ", ".join(
                    s for s, v in (("lower", r.lower_vacuous), ("upper", r.upper_vacuous)) if v
                )
            head += ")"
        return (
            f"{head}: over {self.num_values} pixel values the interval width is "
            f"{self.mean_width_levels:.2f} 8-bit levels on average ({self.mean_width:.4f}) and at most "
            f"{self.max_width_levels:.2f} ({self.max_width:.4f}); "
            f"{100 * self.frac_within_1_level:.1f}% of values are certified to within 1 level and "
            f"{100 * self.frac_within_8_levels:.1f}% to within 8 levels; "
            f"the median lies inside its bounds for {100 * self.frac_median_inside:.2f}% of values."
        )


def _as_float64(name: str, array: Any) -> NDArray[np.float64]:
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", torch.float64).numpy()
    if isinstance(array, np.ndarray):
        return array.astype(np.float64, copy=False)
    raise InputError(f"{name} must be a numpy array or a torch tensor, got {type(array).__name__}")


def summarize_bounds(
    lower: Any, upper: Any, median: Any, *, ranks: CertifiedRanks | None = None
) -> BoundsSummary:
    """Summarise per-pixel certified bounds of one image (or a batch, pooled).

    Args:
        lower: lower-bound image, values in [0, 1] (numpy array or torch tensor on any device).
        upper: upper-bound image, same shape.
        median: the smoothed (median) image, same shape.
        ranks: the ranks the bounds came from, recorded in the summary for :meth:`BoundsSummary.format`.

    Returns:
        A :class:`BoundsSummary`.

    Raises:
        InputError: the three shapes differ, or the arrays are empty.
    """
    lo = _as_float64("lower", lower)
    hi = _as_float64("upper", upper)
    med = _as_float64("median", median)
    if not lo.shape == hi.shape == med.shape:
        raise InputError(
            "lower, upper and median must have the same shape, "
            f"got {tuple(lo.shape)}, {tuple(hi.shape)} and {tuple(med.shape)}"
        )
    if lo.size == 0:
        raise InputError(f"bounds must be non-empty, got shape {tuple(lo.shape)}")
    width = hi - lo
    levels = width * 255.0
    # Compare in 8-bit levels with a little slack: widths of uint8-derived images are k/255 only up to
    # float rounding.
    tol = 1e-6
    inside = (med >= lo - _INSIDE_ATOL) & (med <= hi + _INSIDE_ATOL)
    return BoundsSummary(
        num_values=int(lo.size),
        mean_width=float(width.mean()),
        max_width=float(width.max()),
        mean_width_levels=float(levels.mean()),
        max_width_levels=float(levels.max()),
        frac_within_1_level=float(np.mean(levels <= 1.0 + tol)),
        frac_within_8_levels=float(np.mean(levels <= 8.0 + tol)),
        frac_median_inside=float(np.mean(inside)),
        ranks=ranks,
    )
