"""Tests of the Lemma 4.1 maths in certsr_rt.smoothing.certify (pure, CPU, fast)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from certsr_rt.errors import InputError
from certsr_rt.smoothing.certify import (
    BoundsConfig,
    BoundsSummary,
    CertifiedRanks,
    binomial_cdf,
    certified_ranks,
    min_samples_for_bounds,
    percentile_levels,
    summarize_bounds,
    vacuity_message,
)

scipy_stats = pytest.importorskip("scipy.stats")


# ------------------------------------------------------------------------------------------------ helpers


def brute_force_ranks(n: int, eps: float, sigma: float, alpha: float) -> tuple[int | None, int | None]:
    """The rank definitions written out literally with scipy."""
    p_lower = scipy_stats.norm.cdf(-eps / sigma)
    p_upper = scipy_stats.norm.cdf(eps / sigma)
    k = np.arange(1, n + 1)
    lower = k[scipy_stats.binom.cdf(k - 1, n, p_lower) <= alpha / 2].tolist()
    upper = k[scipy_stats.binom.cdf(k - 1, n, p_upper) >= 1 - alpha / 2].tolist()
    return (max(lower) if lower else None), (min(upper) if upper else None)


# ----------------------------------------------------------------------------------- percentile levels


@pytest.mark.parametrize("ratio", [0.0, 0.01, 0.1, 0.5, 1.0, 3.0, 8.0])
def test_percentile_levels_match_scipy(ratio: float) -> None:
    sigma = 0.03
    p_lower, p_upper = percentile_levels(ratio * sigma, sigma)
    assert p_lower == pytest.approx(scipy_stats.norm.cdf(-ratio), rel=1e-12, abs=0)
    assert p_upper == pytest.approx(scipy_stats.norm.cdf(ratio), rel=1e-12)
    assert p_lower + p_upper == pytest.approx(1.0, abs=1e-15)


def test_percentile_levels_eps_zero_is_the_median() -> None:
    assert percentile_levels(0.0, 0.06) == (0.5, 0.5)


def test_percentile_levels_agree_with_torch_ndtr() -> None:
    z = torch.tensor([-2.0, -0.3, 0.0, 0.7], dtype=torch.float64)
    expected = torch.special.ndtr(z)
    for zi, ei in zip(z.tolist(), expected.tolist(), strict=True):
        if zi >= 0:
            assert percentile_levels(zi, 1.0)[1] == pytest.approx(ei, rel=1e-14)


@pytest.mark.parametrize(
    ("eps", "sigma"),
    [(-0.1, 0.03), (math.nan, 0.03), (math.inf, 0.03), (0.1, 0.0), (0.1, -1.0), (0.1, math.nan), (0.1, True)],
)
def test_percentile_levels_rejects_bad_arguments(eps: float, sigma: float) -> None:
    with pytest.raises(InputError, match="got"):
        percentile_levels(eps, sigma)


# ---------------------------------------------------------------------------------------- binomial CDF


@pytest.mark.parametrize("n", [1, 2, 21, 1000, 50000])
@pytest.mark.parametrize("p", [0.0, 1e-6, 0.01, 0.3, 0.5, 0.8413, 0.99, 1.0])
def test_binomial_cdf_matches_scipy(n: int, p: float) -> None:
    ks = sorted({-1, 0, 1, n // 4, n // 2, int(n * p), int(n * p) + 1, n - 1, n, n + 3})
    for k in ks:
        expected = float(scipy_stats.binom.cdf(k, n, p))
        got = binomial_cdf(k, n, p)
        assert got == pytest.approx(expected, rel=1e-8, abs=1e-300), (k, n, p)


def test_binomial_cdf_deep_tail_keeps_relative_accuracy() -> None:
    expected = float(scipy_stats.binom.cdf(10, 100_000, 1e-3))  # ~1e-30
    assert binomial_cdf(10, 100_000, 1e-3) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize(
    ("k", "n", "p"), [(1, 0, 0.5), (1, 5, 1.5), (1, 5, -0.1), (1.5, 5, 0.5), (1, True, 0.5)]
)
def test_binomial_cdf_rejects_bad_arguments(k: float, n: int, p: float) -> None:
    with pytest.raises(InputError, match="got"):
        binomial_cdf(k, n, p)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- ranks


@pytest.mark.parametrize("n", [1, 2, 5, 6, 21, 50, 101, 1000])
@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.1, 0.3, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.2])
def test_certified_ranks_match_brute_force(n: int, ratio: float, alpha: float) -> None:
    sigma = 0.05
    ranks = certified_ranks(n, ratio * sigma, sigma, alpha)
    assert (ranks.lower, ranks.upper) == brute_force_ranks(n, ratio * sigma, sigma, alpha)
    if not ranks.vacuous:
        assert 1 <= ranks.lower <= ranks.upper <= n  # type: ignore[operator]


def test_certified_ranks_known_values() -> None:
    # eps = 0: the classical 95% distribution-free interval for the median of 21 samples.
    ranks = certified_ranks(21, 0.0, 0.03)
    assert (ranks.lower, ranks.upper) == (6, 16)
    assert (ranks.p_lower, ranks.p_upper) == (0.5, 0.5)
    assert not ranks.vacuous
    assert ranks.ranks == (6, 16)


def test_certified_ranks_is_frozen() -> None:
    ranks = certified_ranks(21, 0.01, 0.03)
    assert isinstance(ranks, CertifiedRanks)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ranks.lower = 3  # type: ignore[misc]


def test_certified_ranks_monotone_in_eps() -> None:
    sigma = 0.03
    previous = certified_ranks(201, 0.0, sigma)
    for ratio in np.linspace(0.0, 2.5, 60)[1:]:
        ranks = certified_ranks(201, float(ratio) * sigma, sigma)
        # A larger radius can only widen the interval (vacuous = the widest).
        if previous.lower is None:
            assert ranks.lower is None
        elif ranks.lower is not None:
            assert ranks.lower <= previous.lower
        if previous.upper is None:
            assert ranks.upper is None
        elif ranks.upper is not None:
            assert ranks.upper >= previous.upper
        previous = ranks
    assert previous.vacuous


def test_certified_ranks_monotone_in_alpha() -> None:
    loose = certified_ranks(101, 0.01, 0.03, alpha=0.2)
    strict = certified_ranks(101, 0.01, 0.03, alpha=0.001)
    assert strict.lower <= loose.lower  # type: ignore[operator]
    assert strict.upper >= loose.upper  # type: ignore[operator]


def test_monte_carlo_coverage_of_order_statistic_bounds() -> None:
    """The order statistics bound the true percentiles q_p̲, q_p̄ at the binomial rate (>= 1 − α/2)."""
    n, sigma, alpha, trials = 21, 1.0, 0.05, 4000
    rng = np.random.default_rng(1234)
    for ratio in (0.0, 0.2, 0.5):
        ranks = certified_ranks(n, ratio * sigma, sigma, alpha)
        assert ranks.lower is not None and ranks.upper is not None
        # Standard normal outputs: the p-th percentile is Φ⁻¹(p), so q_p̲ = −ratio and q_p̄ = +ratio.
        samples = np.sort(rng.standard_normal((trials, n)), axis=1)
        covered_lower = np.mean(samples[:, ranks.lower - 1] <= -ratio)
        covered_upper = np.mean(samples[:, ranks.upper - 1] >= ratio)
        # Exact coverages from the binomial argument; the Monte-Carlo rates must agree with them.
        exact_lower = 1.0 - binomial_cdf(ranks.lower - 1, n, ranks.p_lower)
        exact_upper = binomial_cdf(ranks.upper - 1, n, ranks.p_upper)
        assert exact_lower >= 1 - alpha / 2 and exact_upper >= 1 - alpha / 2
        slack = 4 * math.sqrt(alpha / 2 * (1 - alpha / 2) / trials)
        assert covered_lower >= 1 - alpha / 2 - slack
        assert covered_upper >= 1 - alpha / 2 - slack
        assert abs(covered_lower - exact_lower) <= slack
        assert abs(covered_upper - exact_upper) <= slack


def test_monte_carlo_the_ranks_are_tight() -> None:
    """One rank further in would fail the 1 − α/2 guarantee (the ranks are the tightest valid ones)."""
    n, sigma, alpha = 101, 1.0, 0.05
    ranks = certified_ranks(n, 0.2 * sigma, sigma, alpha)
    assert ranks.lower is not None and ranks.upper is not None
    assert 1.0 - binomial_cdf(ranks.lower, n, ranks.p_lower) < 1 - alpha / 2
    assert binomial_cdf(ranks.upper - 2, n, ranks.p_upper) < 1 - alpha / 2


# ---------------------------------------------------------------------------------- vacuity and min n


def test_n21_is_vacuous_at_large_radius() -> None:
    # (1 − p̲)^21 <= α/2 needs Φ(ε/σ) <= 0.8387, i.e. ε/σ <= 0.99 at α = 0.05.
    assert not certified_ranks(21, 0.98, 1.0).vacuous
    ranks = certified_ranks(21, 1.0, 1.0)
    assert ranks.vacuous and ranks.lower_vacuous and ranks.upper_vacuous
    assert ranks.ranks == ()
    assert certified_ranks(21, 2.0, 0.03).vacuous


def test_n1_is_always_vacuous() -> None:
    assert certified_ranks(1, 0.0, 0.03).vacuous


@pytest.mark.parametrize(
    ("ratio", "alpha"), [(0.0, 0.05), (0.3, 0.05), (1.0, 0.05), (1.0, 0.001), (2.0, 0.1)]
)
def test_min_samples_is_the_first_non_vacuous_n(ratio: float, alpha: float) -> None:
    sigma = 0.03
    n = min_samples_for_bounds(ratio * sigma, sigma, alpha)
    assert n is not None
    assert not certified_ranks(n, ratio * sigma, sigma, alpha).vacuous
    if n > 1:
        assert certified_ranks(n - 1, ratio * sigma, sigma, alpha).vacuous
    # Brute-force scan agrees.
    first = next(m for m in range(1, 10_000) if not certified_ranks(m, ratio * sigma, sigma, alpha).vacuous)
    assert n == first


def test_min_samples_known_values() -> None:
    assert min_samples_for_bounds(0.0, 0.03) == 6  # 0.5^n <= 0.025
    assert min_samples_for_bounds(1.0, 1.0) == 22
    assert min_samples_for_bounds(2.0, 1.0) == 161


def test_min_samples_none_beyond_max_n() -> None:
    assert min_samples_for_bounds(5.0, 1.0) is None  # would need ~1.3e7 samples
    assert min_samples_for_bounds(100.0, 1.0) is None  # p̄ rounds to 1
    assert min_samples_for_bounds(2.0, 1.0, max_n=100) is None
    assert min_samples_for_bounds(2.0, 1.0, max_n=161) == 161


def test_min_samples_monotone_in_eps() -> None:
    values = [min_samples_for_bounds(r * 0.03, 0.03) for r in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)]
    assert all(v is not None for v in values)
    assert values == sorted(values)


def test_vacuity_message_names_side_and_fix() -> None:
    message = vacuity_message(certified_ranks(21, 0.06, 0.03))
    assert "lower and upper sides are vacuous" in message
    assert "n=21" in message and "n=161" in message
    hopeless = vacuity_message(certified_ranks(21, 1.0, 0.03))
    assert "no number of samples up to n=100000" in hopeless
    fine = vacuity_message(certified_ranks(21, 0.0, 0.03))
    assert "non-vacuous" in fine and "6" in fine and "16" in fine


def test_vacuity_message_one_side() -> None:
    ranks = dataclasses.replace(certified_ranks(21, 0.0, 0.03), upper=None)
    message = vacuity_message(ranks)
    assert "upper side is vacuous" in message and "lower" not in message.split("vacuous")[0]


@pytest.mark.parametrize(
    ("n", "eps", "sigma", "alpha"),
    [
        (0, 0.1, 0.03, 0.05),
        (2.5, 0.1, 0.03, 0.05),
        (21, -1.0, 0.03, 0.05),
        (21, 0.1, 0.0, 0.05),
        (21, 0.1, 0.03, 0.0),
        (21, 0.1, 0.03, 1.0),
    ],
)
def test_certified_ranks_rejects_bad_arguments(n: int, eps: float, sigma: float, alpha: float) -> None:
    with pytest.raises(InputError, match="got"):
        certified_ranks(n, eps, sigma, alpha)  # type: ignore[arg-type]


def test_large_n_is_fast_and_sane() -> None:
    ranks = certified_ranks(100_000, 0.01, 0.03)
    assert ranks.lower is not None and ranks.upper is not None
    # For large n the ranks sit near n·p̲ and n·p̄.
    assert abs(ranks.lower / 1e5 - ranks.p_lower) < 0.01
    assert abs(ranks.upper / 1e5 - ranks.p_upper) < 0.01


# ----------------------------------------------------------------------------------- config & summary


def test_bounds_config_validates() -> None:
    config = BoundsConfig(eps=0.01)
    assert config.alpha == 0.05
    assert config.ranks(21, 0.03) == certified_ranks(21, 0.01, 0.03, 0.05)
    with pytest.raises(InputError, match="eps.*got -1"):
        BoundsConfig(eps=-1.0)
    with pytest.raises(InputError, match="alpha.*got 2"):
        BoundsConfig(eps=0.01, alpha=2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.eps = 0.5  # type: ignore[misc]


def test_summarize_bounds_numbers() -> None:
    median = np.full((2, 2, 3), 0.5)
    lower = median - np.array([0.0, 0.5 / 255, 2 / 255, 6 / 255]).reshape(2, 2, 1)
    upper = median + np.array([0.0, 0.5 / 255, 2 / 255, 6 / 255]).reshape(2, 2, 1)
    summary = summarize_bounds(lower, upper, median)
    assert isinstance(summary, BoundsSummary)
    assert summary.num_values == 12
    assert summary.max_width_levels == pytest.approx(12.0)
    assert summary.mean_width_levels == pytest.approx((0 + 1 + 4 + 12) / 4)
    assert summary.mean_width == pytest.approx(summary.mean_width_levels / 255)
    assert summary.frac_within_1_level == pytest.approx(0.5)  # widths 0 and exactly 1 level
    assert summary.frac_within_8_levels == pytest.approx(0.75)
    assert summary.frac_median_inside == 1.0
    text = summary.format()
    assert "12.00" in text and "%" in text


def test_summarize_bounds_torch_and_median_outside() -> None:
    lower = torch.zeros(1, 3, 4, 4)
    upper = torch.full((1, 3, 4, 4), 8 / 255)
    median = torch.full((1, 3, 4, 4), 4 / 255)
    median[0, 0, 0, 0] = 0.5
    ranks = certified_ranks(21, 0.01, 0.03)
    summary = summarize_bounds(lower, upper, median, ranks=ranks)
    assert summary.frac_within_8_levels == 1.0
    assert summary.frac_within_1_level == 0.0
    assert summary.frac_median_inside == pytest.approx(47 / 48)
    assert "n=21" in summary.format() and "not simultaneous" in summary.format()


def test_summarize_bounds_vacuous_format() -> None:
    ranks = certified_ranks(21, 1.0, 0.03)
    median = np.full((3, 3), 0.4)
    summary = summarize_bounds(np.zeros((3, 3)), np.ones((3, 3)), median, ranks=ranks)
    assert summary.max_width_levels == pytest.approx(255.0)
    assert "VACUOUS" in summary.format()


def test_summarize_bounds_rejects_mismatched_shapes() -> None:
    with pytest.raises(InputError, match=r"\(2, 2\).*\(2, 3\)"):
        summarize_bounds(np.zeros((2, 2)), np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(InputError, match="numpy array or a torch tensor"):
        summarize_bounds([0.0], np.zeros(1), np.zeros(1))
