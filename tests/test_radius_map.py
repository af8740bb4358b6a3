"""Issue 8 items 3 and 4: certificates at alpha/m on blended tile seams, the largest certifiable radius,
and certified-radius maps checked against a brute-force computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_model
from typer.testing import CliRunner

from certsr_rt.cli.app import app
from certsr_rt.errors import InputError
from certsr_rt.io.images import read_image, read_provenance, write_image
from certsr_rt.runtime.tiling import make_tiles, max_coverage
from certsr_rt.runtime.upscaler import Upscaler
from certsr_rt.smoothing.certify import (
    RADIUS_GRID,
    BoundsConfig,
    RadiusMapConfig,
    certified_radius,
    certified_ranks,
    max_certified_eps,
    radius_schedule,
    summarize_radius,
)
from certsr_rt.smoothing.config import SmoothingConfig
from certsr_rt.smoothing.noise import gaussian_field


class _Nearest(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # the model wrapper reads dtype/device from one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")


def _nearest_model() -> object:
    """A 'generator' that is nearest-neighbour x4 upsampling: its noisy outputs are known exactly."""
    # num_conv 0: no context beyond the pixel, so the smallest tile limits apply (runtime.tiling)
    return make_model(_Nearest().eval(), "nearest-x4", "SRVGGNetCompact", {"num_conv": 0}, default_sigma=0.1)


def _samples(x: torch.Tensor, n: int, sigma: float, seed: int) -> torch.Tensor:
    """The n noisy outputs of the nearest model at x, as the Upscaler forms them (untiled)."""
    noise = gaussian_field((n, *x.shape[1:]), seed=seed)
    return torch.nn.functional.interpolate(x.expand(n, -1, -1, -1) + sigma * noise, scale_factor=4)


def _brute_ranks(
    n: int, sigma: float, alpha: float, grid_steps: int = RADIUS_GRID
) -> list[tuple[float, int, int]]:
    """(eps, lower, upper) from certified_ranks itself at every grid eps (the radius maps' grid)."""
    top = max_certified_eps(n, sigma, alpha)
    grid = top * np.arange(grid_steps + 1, dtype=np.float64) / grid_steps
    grid[-1] = top
    rows = []
    for eps in grid:
        r = certified_ranks(n, float(eps), sigma, alpha)
        assert not r.vacuous
        rows.append((float(eps), r.lower, r.upper))
    return rows


def _brute_radius(values: np.ndarray, rows: list[tuple[float, int, int]], tol: float) -> float:
    """Largest grid eps whose certified interval over ``values`` (sorted) is at most ``tol`` wide."""
    ok = [eps for eps, lo, hi in rows if values[hi - 1] - values[lo - 1] <= tol]
    return max(ok) if ok else 0.0


# ------------------------------------------------------------------------------- the largest radius


@pytest.mark.parametrize(
    "n,sigma,alpha,union", [(21, 0.06, 0.05, 1), (21, 0.06, 0.05, 4), (100, 0.03, 0.01, 1)]
)
def test_max_certified_eps_is_the_edge_of_vacuity(n: int, sigma: float, alpha: float, union: int) -> None:
    top = max_certified_eps(n, sigma, alpha, union=union)
    assert top is not None and top > 0
    assert not certified_ranks(n, top, sigma, alpha, union=union).vacuous
    assert certified_ranks(n, top * (1 + 1e-9), sigma, alpha, union=union).vacuous


def test_max_certified_eps_in_plain_numbers() -> None:
    # The figure: at n = 21 the largest non-vacuous eps is about sigma (0.059 at sigma 0.06).
    assert max_certified_eps(21, 0.06) == pytest.approx(0.0594, abs=5e-4)
    # Splitting alpha over 4 blended tiles shrinks it; more samples grow it.
    assert max_certified_eps(21, 0.06, union=4) < max_certified_eps(21, 0.06)  # type: ignore[operator]
    assert max_certified_eps(1000, 0.06) > 2.5 * 0.06  # type: ignore[operator]
    assert max_certified_eps(1, 0.06) is None  # one sample certifies nothing


# ------------------------------------------------------------------------------------- union (seams)


def test_union_ranks_are_the_ranks_at_alpha_over_m() -> None:
    for n, eps, sigma in [(21, 0.0, 0.06), (41, 0.02, 0.1), (500, 0.05, 0.06)]:
        for m in (2, 4, 9):
            split = certified_ranks(n, eps, sigma, 0.05, union=m)
            plain = certified_ranks(n, eps, sigma, 0.05 / m)
            assert (split.lower, split.upper) == (plain.lower, plain.upper)
            assert split.alpha == 0.05 and split.union == m
    with pytest.raises(InputError, match="union"):
        certified_ranks(21, 0.0, 0.06, union=0)


def test_max_coverage_counts_the_most_tiles_over_a_pixel() -> None:
    assert max_coverage(make_tiles(64, 64, 0, 16)) == 1
    assert max_coverage(make_tiles(40, 40, 64, 16)) == 1  # one tile
    assert max_coverage(make_tiles(80, 80, 48, 16)) == 4  # 2 x 2 at the middle crossing
    assert max_coverage(make_tiles(80, 20, 48, 16)) == 2
    # The last tile is aligned to the end, so three tiles can overlap along one axis.
    assert max_coverage(make_tiles(29, 1, 16, 4)) == 3
    assert max_coverage(make_tiles(29, 29, 16, 4)) == 9


def test_blended_bounds_use_ranks_at_alpha_over_m_and_single_tile_pixels_are_order_statistics() -> None:
    model = _nearest_model()
    n, sigma, eps, seed = 41, 0.1, 0.02, 3
    x = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    tile = 12  # overlap 3: tiles at 0 and 8, rows/cols 8..11 blended; the corner is covered by 4 tiles
    up = Upscaler(model, SmoothingConfig(sigma, n, seed), device="cpu", tile=tile, bounds=BoundsConfig(eps))
    result = up.upscale(x)
    m = max_coverage(make_tiles(20, 20, tile, up.tile_overlap))
    assert m == 4
    split = certified_ranks(n, eps, sigma, 0.05, union=m)
    assert result.summary is not None and result.summary.ranks == split
    # With a nearest-neighbour model each tile's samples at a pixel are the untiled ones, so outside the
    # overlaps the bound is exactly the union-rank order statistic; inside, the blend of equal values.
    ordered = _samples(x, n, sigma, seed).sort(dim=0).values
    torch.testing.assert_close(result.lower[0], ordered[split.lower - 1].clamp(0, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.upper[0], ordered[split.upper - 1].clamp(0, 1), atol=1e-6, rtol=0)
    # Untiled, the same request uses the unsplit ranks.
    whole = Upscaler(model, SmoothingConfig(sigma, n, seed), device="cpu", tile=0, bounds=BoundsConfig(eps))
    assert whole.upscale(x).summary.ranks.union == 1  # type: ignore[union-attr]


def test_a_request_vacuous_only_at_alpha_over_m_is_refused_naming_the_tiles() -> None:
    model = _nearest_model()
    n, sigma = 21, 0.06
    eps = (max_certified_eps(n, sigma, 0.05, union=4) + max_certified_eps(n, sigma)) / 2  # type: ignore[operator]
    up = Upscaler(model, SmoothingConfig(sigma, n, 0), device="cpu", tile=12, bounds=BoundsConfig(eps))
    with pytest.raises(InputError, match="4 blended tiles.*--tile 0"):
        up.upscale(torch.rand(1, 3, 20, 20))
    Upscaler(model, SmoothingConfig(sigma, n, 0), device="cpu", tile=0, bounds=BoundsConfig(eps)).upscale(
        torch.rand(1, 3, 20, 20)
    )


# ---------------------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    "n,sigma,alpha,union", [(21, 0.06, 0.05, 1), (64, 0.1, 0.05, 4), (300, 0.03, 0.1, 1)]
)
def test_schedule_rows_are_certified_ranks_at_their_eps(
    n: int, sigma: float, alpha: float, union: int
) -> None:
    schedule = radius_schedule(n, sigma, alpha, union=union, grid=200)
    assert schedule.eps[-1] == max_certified_eps(n, sigma, alpha, union=union)
    assert np.all(np.diff(schedule.eps) > 0)
    assert np.all(np.diff(schedule.lower) <= 0) and np.all(np.diff(schedule.upper) >= 0)
    for eps, lo, hi in zip(schedule.eps, schedule.lower, schedule.upper, strict=True):
        r = certified_ranks(n, float(eps), sigma, alpha, union=union)
        assert (r.lower, r.upper) == (lo, hi)
    # Every grid point, not only the rows kept, has the ranks of its row (same tables as certified_ranks).
    grid = schedule.eps[-1] * np.arange(201) / 200
    for eps in grid[::7]:
        row = int(np.searchsorted(schedule.eps, eps, side="left"))
        r = certified_ranks(n, float(eps), sigma, alpha, union=union)
        assert (r.lower, r.upper) == (schedule.lower[row], schedule.upper[row])


# ------------------------------------------------------------------------------------ radius values


@pytest.mark.parametrize("n", [21, 200])
def test_certified_radius_matches_brute_force(n: int) -> None:
    sigma, alpha, tol = 0.06, 0.05, 8 / 255
    rng = np.random.default_rng(n)
    # Values with spreads from tiny to large, so every row of the schedule is the answer somewhere.
    spread = rng.uniform(0.0, 0.15, size=(1, 300))
    values = np.sort(np.clip(0.5 + spread * rng.standard_normal((n, 300)), 0, 1), axis=0)
    schedule = radius_schedule(n, sigma, alpha, grid=64)
    ours = certified_radius(torch.from_numpy(values).float(), schedule, tol).numpy()
    values32 = values.astype(np.float32)
    rows = _brute_ranks(n, sigma, alpha, grid_steps=64)
    brute = np.array([_brute_radius(values32[:, j], rows, tol) for j in range(300)])
    np.testing.assert_allclose(ours, brute.astype(np.float32), rtol=0, atol=0)
    assert 0 < np.mean(ours == 0) < 1 and np.mean(ours == np.float32(schedule.max_eps)) > 0


def test_summary_counts_the_certified_fraction() -> None:
    schedule = radius_schedule(21, 0.06, grid=16)
    radius = np.array([0.0, 0.01, 0.02, 0.03, schedule.max_eps])
    summary = summarize_radius(radius, schedule, 8 / 255, at=(0.015, 0.03))
    assert summary.median == pytest.approx(0.02)
    assert summary.frac_certified == {0.015: pytest.approx(0.6), 0.03: pytest.approx(0.4)}
    assert summary.frac_uncertified == pytest.approx(0.2)
    text = summary.format()
    assert "population median" in text and "8 8-bit levels" in text and "60.0% at eps 0.015" in text
    assert "each channel's interval holds with probability >= 0.95" in text


def test_upscaler_radius_map_matches_brute_force_on_the_exact_samples() -> None:
    model = _nearest_model()
    n, sigma, seed, tol = 25, 0.1, 11, 26 / 255
    x = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(1))
    up = Upscaler(
        model,
        SmoothingConfig(sigma, n, seed, chunk_size=4),
        device="cpu",
        tile=0,
        radius=RadiusMapConfig(tol),
    )
    result = up.upscale(x)
    assert result.radius.shape == (1, 24, 28) and result.radius_summary is not None
    ordered = _samples(x, n, sigma, seed).clamp(0, 1).sort(dim=0).values.numpy()
    # Brute force per pixel: the smallest over channels of the largest grid eps with a narrow interval.
    rows = _brute_ranks(n, sigma, 0.05)
    brute = np.zeros((24, 28), np.float32)
    for yy in range(24):
        for xx in range(28):
            brute[yy, xx] = min(_brute_radius(ordered[:, c, yy, xx], rows, tol) for c in range(3))
    np.testing.assert_array_equal(result.radius[0].numpy(), brute)
    assert 0 < np.mean(brute > 0) < 1  # a map with both certified and uncertified pixels
    # The radius map does not change the image, and numpy in gives the same map as torch in.
    plain = Upscaler(model, SmoothingConfig(sigma, n, seed), device="cpu", tile=0).upscale(x)
    torch.testing.assert_close(result.image, plain.image, atol=0, rtol=0)
    arr = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert up.upscale(arr).radius.shape == (24, 28)


def test_tiled_radius_map_takes_the_smallest_radius_of_the_tiles_at_alpha_over_m() -> None:
    model = _nearest_model()
    n, sigma, seed, tol = 41, 0.1, 2, 24 / 255
    x = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(2))
    tiled = Upscaler(
        model, SmoothingConfig(sigma, n, seed), device="cpu", tile=12, radius=RadiusMapConfig(tol)
    )
    result = tiled.upscale(x)
    schedule = result.radius_summary.schedule  # type: ignore[union-attr]
    assert schedule.union == 4
    # The nearest model's tile samples equal the untiled ones, so the map is the untiled computation at
    # alpha/4, everywhere.
    ordered = _samples(x, n, sigma, seed).clamp(0, 1).sort(dim=0).values
    expected = certified_radius(ordered, radius_schedule(n, sigma, union=4), tol).amin(0)
    torch.testing.assert_close(result.radius[0], expected, atol=0, rtol=0)


def test_large_n_runs_in_chunks_with_progress() -> None:
    model = _nearest_model()
    steps: list[tuple[int, int]] = []
    up = Upscaler(
        model,
        SmoothingConfig(0.06, 1000, 0, chunk_size=100),
        device="cpu",
        tile=0,
        radius=RadiusMapConfig(),
    )
    result = up.upscale(
        torch.full((1, 3, 4, 4), 0.5), progress=lambda done, total: steps.append((done, total))
    )
    assert steps[-1] == (10, 10) and len(steps) == 10
    top = result.radius_summary.max_eps  # type: ignore[union-attr]
    assert top == pytest.approx(max_certified_eps(1000, 0.06), rel=1e-12) and top > 0.15
    assert float(result.radius.min()) > 0  # a flat image is certified at a positive radius everywhere


def test_radius_map_needs_smoothing() -> None:
    with pytest.raises(InputError, match="needs smoothing"):
        Upscaler(_nearest_model(), SmoothingConfig(0.0, 21, 0), device="cpu", radius=RadiusMapConfig())
    with pytest.raises(InputError, match="tolerance"):
        RadiusMapConfig(tol=1.5)


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_radius_map_writes_16_bit_and_colour_pngs_and_prints_the_summary(tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    write_image(src, np.random.default_rng(0).integers(0, 256, (8, 10, 3), dtype=np.uint8))
    args = ["upscale", str(src), "--model", "tiny-srvgg", "--device", "cpu", "--backend", "torch"]
    args += [
        "--samples",
        "41",
        "--sigma",
        "0.1",
        "--seed",
        "4",
        "--radius-map",
        "128/255",
        "--bounds",
        "0.02",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    coded = read_image(tmp_path / "in_x4_radius.png")
    colour = read_image(tmp_path / "in_x4_radius_color.png")
    assert coded.dtype == np.uint16 and coded.shape == (32, 40)
    assert colour.dtype == np.uint8 and colour.shape == (32, 40, 3)
    record = read_provenance(tmp_path / "in_x4_radius.png")
    assert record is not None and record["radius_png_scale"] == 10_000 and record["seed"] == 4
    assert record["radius_tol"] == pytest.approx(128 / 255)
    # The stored value is floor(eps * 10000) and never exceeds the largest certifiable eps.
    assert coded.max() <= np.floor(record["radius_max_eps"] * 10_000)
    assert "Certified radius map" in result.stdout and "at eps 0.02" in result.stdout
    assert "population median h(x + delta), not this 41-sample image" in result.stdout


@pytest.mark.parametrize("bad", ["2", "0", "x/255", "8/0", "-0.1"])
def test_cli_radius_map_refuses_a_bad_tolerance_in_one_line(tmp_path: Path, bad: str) -> None:
    src = tmp_path / "in.png"
    write_image(src, np.zeros((8, 8, 3), np.uint8))
    result = CliRunner().invoke(app, ["upscale", str(src), "--model", "tiny-srvgg", "--radius-map", bad])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "expected a width" in result.output
    assert not (tmp_path / "in_x4.png").exists()
