import numpy as np
import pytest
import torch

from certsr_rt.smoothing.aggregate import median, median_and_order_statistics, order_statistics


@pytest.mark.parametrize("n", [1, 2, 3, 4, 21, 22])
def test_median_matches_numpy(n):
    x = torch.randn(n, 3, 5, 7, generator=torch.Generator().manual_seed(n))
    np.testing.assert_allclose(median(x).numpy(), np.median(x.numpy(), axis=0), rtol=0, atol=1e-7)


def test_median_of_two_is_the_mean():
    x = torch.tensor([[1.0, 5.0], [3.0, -1.0]])
    assert torch.equal(median(x), torch.tensor([2.0, 2.0]))


def test_order_statistics_match_sorting():
    x = torch.randn(21, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    ref = np.sort(x.numpy(), axis=0)
    for k, got in zip([1, 6, 11, 21], order_statistics(x, [1, 6, 11, 21]), strict=True):
        np.testing.assert_array_equal(got.numpy(), ref[k - 1])
    med, (lo, hi) = median_and_order_statistics(x, [6, 16])
    np.testing.assert_array_equal(med.numpy(), ref[10])
    np.testing.assert_array_equal(lo.numpy(), ref[5])
    np.testing.assert_array_equal(hi.numpy(), ref[15])


def test_rank_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"rank must be in \[1, 3\]"):
        order_statistics(torch.zeros(3, 2), [4])


@pytest.mark.parametrize(
    ("n", "ranks"), [(21, ()), (21, (4, 18)), (20, (1, 20)), (2, ()), (3, (1, 3)), (64, (7,))]
)
def test_network_method_equals_the_sort(n, ranks):
    gen = torch.Generator().manual_seed(n)
    # Continuous values, then heavy ties with infinities.
    ties = torch.randint(0, 4, (n, 3, 6, 5), generator=gen).float()
    ties[ties == 3] = float("inf")
    for x in (torch.randn(n, 3, 6, 5, generator=gen), ties):
        med, stats = median_and_order_statistics(x, ranks, method="network")
        ref_med, ref_stats = median_and_order_statistics(x, ranks, method="sort")
        assert torch.equal(med, ref_med)
        assert all(torch.equal(a, b) for a, b in zip(stats, ref_stats, strict=True))


def test_auto_sorts_when_a_nan_is_present_so_nan_orders_last():
    x = torch.arange(21.0).view(21, 1).repeat(1, 4)
    x[0, 1] = float("nan")  # one NaN among 21: sorted last, so the median shifts up by one
    med, _ = median_and_order_statistics(x, method="auto")
    assert torch.equal(med, torch.tensor([10.0, 11.0, 10.0, 10.0]))
    net, _ = median_and_order_statistics(x, method="network")
    assert torch.isnan(net[1])  # why auto does not take the network here


def test_network_method_bounds():
    with pytest.raises(ValueError, match="n <= 64"):
        median_and_order_statistics(torch.zeros(65, 2), method="network")
    with pytest.raises(ValueError, match="method"):
        median_and_order_statistics(torch.zeros(3, 2), method="quick")


@pytest.mark.parametrize("n", [2, 3, 4, 5, 20, 21, 22, 33, 64])
def test_a_nan_in_any_sample_reaches_the_network_median(n):
    # What lets method="auto" check only the median for NaN: every sample wire leads to the median wire.
    x = torch.randn(n, n)
    x[torch.arange(n), torch.arange(n)] = float("nan")  # column j has its NaN in sample j
    med, _ = median_and_order_statistics(x, method="network")
    assert torch.isnan(med).all()
