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
