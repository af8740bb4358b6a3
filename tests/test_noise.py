import numpy as np
import pytest
import torch

from certsr_rt.smoothing.noise import gaussian_field


def test_noise_is_standard_normal():
    stats = pytest.importorskip("scipy.stats")
    z = gaussian_field((21, 3, 48, 48), seed=7).flatten().numpy()
    assert abs(z.mean()) < 0.01
    assert abs(z.std() - 1) < 0.01
    assert stats.kstest(z, "norm").pvalue > 1e-3


def test_noise_is_a_function_of_position():
    whole = gaussian_field((5, 3, 40, 50), seed=3, key=2)
    part = gaussian_field((2, 3, 10, 20), seed=3, key=2, sample_offset=1, row_offset=25, col_offset=17)
    assert torch.equal(part, whole[1:3, :, 25:35, 17:37])


@pytest.mark.parametrize("change", [{"seed": 4}, {"key": 1}])
def test_seed_and_key_select_independent_fields(change):
    base = dict(seed=3, key=0)
    a = gaussian_field((2, 3, 32, 32), **base).flatten()
    b = gaussian_field((2, 3, 32, 32), **{**base, **change}).flatten()
    assert not torch.equal(a, b)
    assert abs(float(np.corrcoef(a.numpy(), b.numpy())[0, 1])) < 0.05


def test_samples_channels_and_neighbours_are_uncorrelated():
    z = gaussian_field((2, 3, 64, 64), seed=0)
    pairs = [(z[0], z[1]), (z[0, 0], z[0, 1]), (z[0, :, :, :-1], z[0, :, :, 1:]), (z[0, :, :-1], z[0, :, 1:])]
    for a, b in pairs:
        assert abs(float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])) < 0.05
