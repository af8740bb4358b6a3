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

**Blended tiles.** A pixel blended from m separately smoothed tiles is bracketed by the same blend of the
tiles' bounds when all m hold: each is taken at α/m (``union=m``), so the blend holds with probability
≥ 1 − α (union bound).

**Largest radius and radius maps.** :func:`max_certified_eps` is the largest ε with non-vacuous bounds
(≈ σ at n = 21). :func:`certified_radius` gives, per value, the largest ε (on a grid, rounded down) whose
interval ``[y_(k̲), y_(k̄)]`` is at most a given width, read off the sorted samples with the ranks of
:func:`radius_schedule`.

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
    "DEFAULT_RADIUS_TOL",
    "RADIUS_GRID",
    "BoundsConfig",
    "BoundsSummary",
    "CertifiedRanks",
    "RadiusMapConfig",
    "RadiusSchedule",
    "RadiusSummary",
    "binomial_cdf",
    "certified_radius",
    "certified_ranks",
    "max_certified_eps",
    "min_samples_for_bounds",
    "percentile_levels",
    "radius_schedule",
    "summarize_bounds",
    "summarize_radius",
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


# Largest number of float64 entries in one batch of binomial CDF tables (32 MiB).
_TABLE_BATCH_ENTRIES = 1 << 22


def _binomial_cdf_tables(n: int, ps: NDArray[np.float64]) -> NDArray[np.float64]:
    """``BinomCDF(k; n, p)`` for k = 0..n, one row per p, float64 (rows non-decreasing, last entry 1).

    One code path for one p (:func:`certified_ranks`) and for many (:func:`radius_schedule`), so both give
    the same ranks to the last bit.
    """
    ps = np.asarray(ps, dtype=np.float64).reshape(-1)
    tables = np.zeros((ps.size, n + 1), dtype=np.float64)
    tables[:, n] = 1.0
    tables[ps <= 0.0] = 1.0
    inner = np.flatnonzero((ps > 0.0) & (ps < 1.0))
    if inner.size:
        i = torch.arange(n + 1, dtype=torch.float64)
        nn = torch.tensor(float(n), dtype=torch.float64)
        log_choose = torch.lgamma(nn + 1.0) - torch.lgamma(i + 1.0) - torch.lgamma(nn - i + 1.0)
        rows = max(1, _TABLE_BATCH_ENTRIES // (n + 1))
        for start in range(0, inner.size, rows):
            idx = inner[start : start + rows]
            p = torch.from_numpy(ps[idx])[:, None]
            log_pmf = log_choose + i * torch.log(p) + (nn - i) * torch.log1p(-p)
            block = torch.exp(torch.logcumsumexp(log_pmf, dim=1)).clamp_(max=1.0).numpy()
            # Rounding can leave the total a few ulps below 1; the CDF at k = n is exactly 1.
            block[:, n] = 1.0
            tables[idx] = np.maximum.accumulate(block, axis=1)
    return tables


def _binomial_cdf_table(n: int, p: float) -> NDArray[np.float64]:
    """``BinomCDF(k; n, p)`` for k = 0..n as a float64 array (non-decreasing, last entry 1)."""
    return _binomial_cdf_tables(n, np.array([p], dtype=np.float64))[0]


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
        alpha: overall failure probability α (split α/2 per side, and α/union per interval).
        p_lower: ``p̲ = Φ(−ε/σ)``.
        p_upper: ``p̄ = Φ(ε/σ)``.
        lower: 1-based rank ``k̲`` of the lower-bound order statistic, or None when the lower side is
            vacuous (the bound is −∞; 0 for images in [0, 1]).
        upper: 1-based rank ``k̄`` of the upper-bound order statistic, or None when the upper side is
            vacuous (+∞; 1 for images in [0, 1]).
        union: number of intervals combined by the union bound (the most tiles blended into one pixel);
            the ranks are those of level α/union.
    """

    n: int
    eps: float
    sigma: float
    alpha: float
    p_lower: float
    p_upper: float
    lower: int | None
    upper: int | None
    union: int = 1

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


def _lower_ranks(tables_lower: NDArray[np.float64], n: int, alpha: float) -> NDArray[np.int64]:
    # k̲ = max{k in 1..n : BinomCDF(k − 1; n, p̲) ≤ α/2}; table[k − 1] is BinomCDF(k − 1). Each row is
    # non-decreasing in k, so the qualifying k form a prefix 1..K and K is their count (0: vacuous).
    return np.count_nonzero(tables_lower[:, :n] <= alpha / 2.0, axis=1)


def _upper_ranks(tables_upper: NDArray[np.float64], n: int, alpha: float) -> NDArray[np.int64]:
    # k̄ = min{k in 1..n : BinomCDF(k − 1; n, p̄) ≥ 1 − α/2}: one more than the count of k that fail
    # (n + 1: vacuous).
    return np.count_nonzero(tables_upper[:, :n] < 1.0 - alpha / 2.0, axis=1) + 1


def _check_union(union: int) -> int:
    if isinstance(union, bool) or not isinstance(union, numbers.Integral) or union < 1:
        raise InputError(f"union (the number of intervals combined) must be an integer >= 1, got {union!r}")
    return int(union)


def certified_ranks(
    n: int, eps: float, sigma: float, alpha: float = 0.05, *, union: int = 1
) -> CertifiedRanks:
    """The order-statistic ranks that bound the smoothed median under ``‖δ‖₂ < eps`` (Lemma 4.1).

    With ``y_(1) ≤ … ≤ y_(n)`` the sorted noisy outputs at x (per pixel), ``P(y_(k) ≤ q_p) ≥
    1 − BinomCDF(k − 1; n, p)``. The lower rank is the largest k with ``BinomCDF(k − 1; n, p̲) ≤ α/2``
    (None: vacuous) and the upper rank the smallest k with ``BinomCDF(k − 1; n, p̄) ≥ 1 − α/2``
    (None: vacuous). Then, **with probability at least 1 − α over the noise, for every δ with
    ‖δ‖₂ < ε, the smoothed median at x + δ lies in [y_(lower), y_(upper)]**, per pixel and channel (not
    simultaneously over pixels). With ε = 0 this is the usual distribution-free confidence interval for
    the median (n = 21, α = 0.05: ranks 6 and 16).

    **Blended tiles (union bound).** A value that is a weighted mean of ``union`` such intervals (a pixel
    covered by ``union`` overlapping tiles, each smoothed on its own) is bracketed by the same weighted
    mean of the bounds when *all* of them hold; each interval is therefore computed at α/union, so that
    together they fail with probability at most α.

    Args:
        n: number of noise samples, >= 1.
        eps: L2 radius ε >= 0 (whole-image norm, [0, 1] pixel units).
        sigma: smoothing noise standard deviation σ > 0.
        alpha: overall failure probability in (0, 1), split α/2 per side (and over ``union``).
        union: number of intervals that are combined (the most tiles blended into one pixel), >= 1.

    Returns:
        A :class:`CertifiedRanks`; ``lower <= upper`` whenever both are set.

    Raises:
        InputError: an argument out of range.
    """
    n = _check_n(n)
    alpha = _check_alpha(alpha)
    union = _check_union(union)
    p_lower, p_upper = percentile_levels(eps, sigma)
    lower = int(_lower_ranks(_binomial_cdf_table(n, p_lower)[None], n, alpha / union)[0])
    upper = int(_upper_ranks(_binomial_cdf_table(n, p_upper)[None], n, alpha / union)[0])
    return CertifiedRanks(
        n=n,
        eps=float(eps),
        sigma=float(sigma),
        alpha=alpha,
        p_lower=p_lower,
        p_upper=p_upper,
        lower=lower if lower >= 1 else None,
        upper=upper if upper <= n else None,
        union=union,
    )


def min_samples_for_bounds(
    eps: float, sigma: float, alpha: float = 0.05, max_n: int = 100_000, *, union: int = 1
) -> int | None:
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
        union: number of intervals combined (see :func:`certified_ranks`).

    Returns:
        The minimum n, or None when it exceeds ``max_n`` (including ε/σ so large that p̄ rounds to 1).

    Raises:
        InputError: an argument out of range.
    """
    alpha = _check_alpha(alpha)
    max_n = _check_n(max_n, "max_n")
    union = _check_union(union)
    p_lower, p_upper = percentile_levels(eps, sigma)
    # log of the larger of (1 − p̲) and p̄, through log1p so that tiny p̲ keep their precision.
    log_q = max(math.log1p(-p_lower), math.log(p_upper)) if p_lower > 0.0 else 0.0
    if log_q >= 0.0:
        return None
    estimate = math.ceil(math.log(alpha / union / 2.0) / log_q)
    if estimate > max_n + 1:
        return None

    def ok(n: int) -> bool:
        return not certified_ranks(n, eps, sigma, alpha, union=union).vacuous

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
    if ranks.union > 1:
        setting += f" over {ranks.union} blended tiles (alpha/{ranks.union} each)"
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
    needed = min_samples_for_bounds(ranks.eps, ranks.sigma, ranks.alpha, union=ranks.union)
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

    def ranks(self, n: int, sigma: float, union: int = 1) -> CertifiedRanks:
        """:func:`certified_ranks` for this configuration at ``n`` samples, noise ``sigma``, ``union``."""
        return certified_ranks(n, self.eps, sigma, self.alpha, union=union)


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
        input_values: number of values (pixels x channels) of the low-resolution input, when known: it
            turns the whole-image ε into a per-value RMS perturbation in the printed statement.
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
    input_values: int | None = None

    def format(self) -> str:
        """One paragraph for humans: what exactly is certified, then the widths."""
        head = "Certified bounds"
        if self.ranks is not None:
            head = certificate_statement(self.ranks, self.input_values)
            r = self.ranks
            if r.vacuous:
                head += " VACUOUS: " + ", ".join(
                    s for s, v in (("lower", r.lower_vacuous), ("upper", r.upper_vacuous)) if v
                )
        return (
            f"{head} Over {self.num_values} pixel values the interval width is "
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


def certificate_statement(ranks: CertifiedRanks, input_values: int | None = None) -> str:
    """What the bounds of ``ranks`` certify, exactly, in one paragraph (the printed summary's head).

    Args:
        ranks: the ranks the bounds came from.
        input_values: pixels x channels of the low-resolution input, to state ε as an RMS per value.

    Returns:
        The statement, ending with a full stop.
    """
    r = ranks
    norm = "the L2 norm over the whole low-resolution input in [0, 1] units"
    if input_values:
        rms = r.eps / math.sqrt(input_values)
        norm += f" ({input_values} values: {rms:.3g} RMS per value = {255 * rms:.3g} 8-bit levels)"
    seams = f"; pixels blended from up to {r.union} tiles use alpha/{r.union} per tile" if r.union > 1 else ""
    largest = max_certified_eps(r.n, r.sigma, r.alpha, union=r.union)
    limit = (
        f"the largest eps with non-vacuous bounds at this n, sigma and alpha is {largest:.4g}"
        if largest is not None
        else f"no eps gives non-vacuous bounds at n={r.n}"
    )
    return (
        f"Certified bounds (n={r.n}, sigma={r.sigma:g}, eps={r.eps:g}, alpha={r.alpha:g}, order statistics "
        f"{r.lower} and {r.upper}): for every perturbation delta with ||delta||_2 < {r.eps:g} ({norm}), the "
        f"smoothed model's population median h(x + delta), not this {r.n}-sample image, lies between the "
        f"lower and upper image at each pixel and channel with probability >= {1 - r.alpha:g} over the "
        f"smoothing noise, which must stay unknown to the adversary (per pixel, not simultaneously over "
        f"pixels{seams}); {limit}."
    )


def summarize_bounds(
    lower: Any,
    upper: Any,
    median: Any,
    *,
    ranks: CertifiedRanks | None = None,
    input_values: int | None = None,
) -> BoundsSummary:
    """Summarise per-pixel certified bounds of one image (or a batch, pooled).

    Args:
        lower: lower-bound image, values in [0, 1] (numpy array or torch tensor on any device).
        upper: upper-bound image, same shape.
        median: the smoothed (median) image, same shape.
        ranks: the ranks the bounds came from, recorded in the summary for :meth:`BoundsSummary.format`.
        input_values: pixels x channels of the low-resolution input (for the printed statement).

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
        input_values=input_values,
    )


# --------------------------------------------------------------------------------------------------------
# the largest certifiable radius, and certified-radius maps


def max_certified_eps(n: int, sigma: float, alpha: float = 0.05, *, union: int = 1) -> float | None:
    """The largest ε for which :func:`certified_ranks` is non-vacuous on both sides.

    Both sides exist iff ``Φ(ε/σ)ⁿ ≤ α/(2·union)``, so the answer is close to
    ``σ Φ⁻¹((α/(2·union))^(1/n))``; it is found by bisection on :func:`certified_ranks` itself, rounded
    down, so that ``certified_ranks(n, max_certified_eps(...), ...)`` is non-vacuous. At n = 21, σ = 0.06,
    α = 0.05 it is about 0.059 (≈ σ); it grows like σ √(2 ln n) with n.

    Args:
        n: number of noise samples, >= 1.
        sigma: smoothing noise standard deviation σ > 0.
        alpha: failure probability in (0, 1).
        union: number of intervals combined (see :func:`certified_ranks`).

    Returns:
        The radius, or None when the bounds are vacuous even at ε = 0 (too few samples for this α).

    Raises:
        InputError: an argument out of range.
    """
    sigma = _check_sigma(sigma)

    def ok(eps: float) -> bool:
        return not certified_ranks(n, eps, sigma, alpha, union=union).vacuous

    if not ok(0.0):
        return None
    lo, hi = 0.0, sigma
    while ok(hi):
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


DEFAULT_RADIUS_TOL = 8.0 / 255.0
"""Default interval width of a certified-radius map: 8 8-bit levels."""

RADIUS_GRID = 2048
"""Radius maps resolve ε in steps of 1/RADIUS_GRID of :func:`max_certified_eps`."""


@dataclass(frozen=True)
class RadiusMapConfig:
    """Request for a certified-radius map (see :func:`certified_radius`).

    Attributes:
        tol: largest certified interval width that counts as certified, in [0, 1] image units
            (default 8/255, eight 8-bit levels).
        alpha: failure probability in (0, 1), as for :class:`BoundsConfig`.
    """

    tol: float = DEFAULT_RADIUS_TOL
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if isinstance(self.tol, bool) or not isinstance(self.tol, numbers.Real) or not 0.0 < self.tol < 1.0:
            raise InputError(f"the radius-map tolerance must be in (0, 1) image units, got {self.tol!r}")
        _check_alpha(self.alpha)


@dataclass(frozen=True)
class RadiusSchedule:
    """How the certified ranks widen with ε, on a grid from 0 to the largest certifiable ε.

    Row ``j`` says: at ``eps[j]`` (and at every grid ε since row ``j − 1``) :func:`certified_ranks` gives
    the ranks ``(lower[j], upper[j])``. Rows are distinct and ordered by ε; ``lower`` is non-increasing and
    ``upper`` non-decreasing, so the interval of any sorted sample vector widens down the rows.

    Attributes:
        n: number of samples.
        sigma: smoothing noise standard deviation.
        alpha: overall failure probability.
        union: number of intervals combined per value (see :func:`certified_ranks`).
        eps: float64 array, the largest grid ε of each row (the last is :attr:`max_eps`).
        lower: int64 array of 1-based lower ranks.
        upper: int64 array of 1-based upper ranks.
    """

    n: int
    sigma: float
    alpha: float
    union: int
    eps: NDArray[np.float64]
    lower: NDArray[np.int64]
    upper: NDArray[np.int64]

    @property
    def max_eps(self) -> float:
        """The largest ε at which the bounds are non-vacuous (0 if none)."""
        return float(self.eps[-1]) if self.eps.size else 0.0


def radius_schedule(
    n: int, sigma: float, alpha: float = 0.05, *, union: int = 1, grid: int = RADIUS_GRID
) -> RadiusSchedule:
    """The certified ranks at ``grid + 1`` evenly spaced ε in [0, :func:`max_certified_eps`].

    The ranks at every grid point come from the same tables :func:`certified_ranks` uses, computed for
    all grid points at once (identical results, tested), and runs of equal ranks are merged, keeping the
    largest ε of each run.

    Args:
        n: number of noise samples, >= 1.
        sigma: smoothing noise standard deviation σ > 0.
        alpha: failure probability in (0, 1).
        union: number of intervals combined (see :func:`certified_ranks`).
        grid: number of steps from 0 to the largest certifiable ε.

    Returns:
        A :class:`RadiusSchedule` (with no rows when the bounds are vacuous even at ε = 0).

    Raises:
        InputError: an argument out of range.
    """
    n = _check_n(n)
    alpha = _check_alpha(alpha)
    union = _check_union(union)
    grid = _check_n(grid, "grid")
    top = max_certified_eps(n, sigma, alpha, union=union)
    if top is None:
        empty = np.zeros(0, dtype=np.int64)
        return RadiusSchedule(n, float(sigma), alpha, union, np.zeros(0), empty, empty)
    eps = top * np.arange(grid + 1, dtype=np.float64) / grid
    eps[-1] = top
    levels = [percentile_levels(float(e), sigma) for e in eps]
    lower = _lower_ranks(_binomial_cdf_tables(n, np.array([lv[0] for lv in levels])), n, alpha / union)
    upper = _upper_ranks(_binomial_cdf_tables(n, np.array([lv[1] for lv in levels])), n, alpha / union)
    last = np.ones(grid + 1, dtype=bool)
    last[:-1] = (lower[:-1] != lower[1:]) | (upper[:-1] != upper[1:])
    return RadiusSchedule(
        n=n,
        sigma=float(sigma),
        alpha=alpha,
        union=union,
        eps=eps[last],
        lower=lower[last].astype(np.int64),
        upper=upper[last].astype(np.int64),
    )


def certified_radius(
    sorted_samples: torch.Tensor, schedule: RadiusSchedule, tol: float, *, rows_per_step: int = 64
) -> torch.Tensor:
    """Per value, the largest ε whose certified interval ``[y_(k̲), y_(k̄)]`` is at most ``tol`` wide.

    For each value the interval of row ``j`` of ``schedule`` is read off the sorted samples; its width
    only grows down the rows, so the answer is the ε of the last row whose width is ``<= tol``, or 0 when
    even the ε → 0 interval is wider than ``tol`` (not certified at any radius). With probability at least
    1 − α over the noise, for every δ with ``‖δ‖₂ <`` the returned ε, the population median h(x + δ)
    lies in an interval of width at most ``tol`` (per value; see :func:`certified_ranks`).

    Args:
        sorted_samples: ``n x ...`` tensor of the n noisy outputs sorted along dim 0 (clamp them to
            [0, 1] first for images: the bounds then bracket the clamped median).
        schedule: :func:`radius_schedule` for the same n.
        tol: width threshold in the samples' units.
        rows_per_step: schedule rows compared per step (bounds the temporary memory to that many
            copies of one sample).

    Returns:
        A float32 tensor of shape ``sorted_samples.shape[1:]`` on the samples' device.

    Raises:
        InputError: the sample count differs from the schedule's.
    """
    n = sorted_samples.shape[0]
    if n != schedule.n:
        raise InputError(f"the schedule is for n={schedule.n} samples, got {n}")
    device = sorted_samples.device
    count = torch.zeros(sorted_samples.shape[1:], dtype=torch.int64, device=device)
    rows = schedule.eps.size
    for start in range(0, rows, rows_per_step):
        lo = torch.from_numpy(schedule.lower[start : start + rows_per_step] - 1).to(device)
        hi = torch.from_numpy(schedule.upper[start : start + rows_per_step] - 1).to(device)
        width = sorted_samples.index_select(0, hi) - sorted_samples.index_select(0, lo)
        count += (width <= tol).sum(0)
        del width
    table = torch.cat([torch.zeros(1, dtype=torch.float64), torch.from_numpy(schedule.eps)]).to(device)
    return table[count].to(torch.float32)


@dataclass(frozen=True)
class RadiusSummary:
    """Summary of a certified-radius map (ε values in whole-image L2 norm, [0, 1] units).

    Attributes:
        tol: the width threshold of the map.
        max_eps: the largest certifiable ε at this n, σ, α (the map's ceiling).
        median: median radius over the map's pixels.
        frac_certified: ``{ε: fraction of pixels whose radius is >= ε}``.
        frac_uncertified: fraction of pixels with radius 0 (wider than ``tol`` even as ε → 0).
        schedule: the schedule the map was computed with.
        input_values: pixels x channels of the low-resolution input, when known.
    """

    tol: float
    max_eps: float
    median: float
    frac_certified: dict[float, float]
    frac_uncertified: float
    schedule: RadiusSchedule
    input_values: int | None = None

    def format(self) -> str:
        """One paragraph for humans."""
        s = self.schedule
        fractions = ", ".join(f"{100 * f:.1f}% at eps {e:.4g}" for e, f in self.frac_certified.items())
        rms = ""
        if self.input_values:
            per_value = self.median / math.sqrt(self.input_values)
            rms = f" ({per_value:.3g} RMS per input value, {255 * per_value:.3g} 8-bit levels)"
        seams = f", alpha/{s.union} per tile where up to {s.union} tiles are blended" if s.union > 1 else ""
        return (
            f"Certified radius map (n={s.n}, sigma={s.sigma:g}, alpha={s.alpha:g}{seams}; a pixel's radius "
            f"is the largest L2 eps over the whole input for which every channel's certified interval for "
            f"the population median h(x + delta) is at most {255 * self.tol:.3g} 8-bit levels wide; each "
            f"channel's interval holds with probability >= {1 - s.alpha:g} over the secret noise, not "
            f"simultaneously over channels or pixels): median radius {self.median:.4g}{rms}; "
            f"pixels certified: {fractions}; {100 * self.frac_uncertified:.1f}% not certified at any "
            f"radius; the largest certifiable eps at this n is {self.max_eps:.4g}."
        )


def summarize_radius(
    radius: Any,
    schedule: RadiusSchedule,
    tol: float,
    *,
    at: tuple[float, ...] = (),
    input_values: int | None = None,
) -> RadiusSummary:
    """Summarise a radius map: its median and the fraction of pixels certified at each ε in ``at``.

    Args:
        radius: the per-pixel radius map (numpy array or torch tensor).
        schedule: the schedule it was computed with.
        tol: its width threshold.
        at: radii at which to report the certified fraction (default: half the largest certifiable ε).
        input_values: pixels x channels of the low-resolution input (for the printed RMS).

    Returns:
        A :class:`RadiusSummary`.
    """
    values = _as_float64("radius", radius).reshape(-1)
    if values.size == 0:
        raise InputError("the radius map is empty")
    points = at or (schedule.max_eps / 2,)
    return RadiusSummary(
        tol=float(tol),
        max_eps=schedule.max_eps,
        median=float(np.median(values)),
        frac_certified={float(e): float(np.mean(values >= e)) for e in points},
        frac_uncertified=float(np.mean(values <= 0.0)),
        schedule=schedule,
        input_values=input_values,
    )
