"""The Upscaler on CPU with the tiny registered RRDBNet: determinism, tiling, image kinds, bounds, errors."""

import numpy as np
import pytest
import torch

from certsr_rt import BoundsConfig, InputError, SmoothingConfig, Upscaler
from certsr_rt.models import load_model
from certsr_rt.runtime.backends.torch_backend import TorchBackend


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-rrdbnet")


def make(model, tile=0, **smoothing):
    cfg = SmoothingConfig(**{"sigma": 0.06, "samples": 5, "seed": 0, **smoothing})
    return Upscaler(model, cfg, device="cpu", tile=tile, tile_overlap=8)


@pytest.fixture(scope="module")
def photo():
    # A smooth synthetic "photo": gradients plus a few edges, so tiling differences are meaningful.
    y, x = np.mgrid[0:40, 0:52].astype(np.float32)
    img = np.stack([x / 52, y / 40, ((x // 8 + y // 8) % 2) * 0.5 + 0.25], axis=2)
    return (img * 255).astype(np.uint8)


def test_same_seed_same_output_other_seed_differs(tiny, photo):
    a = make(tiny, seed=1)(photo)
    b = make(tiny, seed=1)(photo)
    c = make(tiny, seed=2)(photo)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_plain_model_when_sigma_zero(tiny, photo):
    up = make(tiny, sigma=0.0, samples=21)
    assert up.samples == 1
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        ref = tiny.module(x).clamp(0, 1)
    out = up(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_output_is_the_median_of_noisy_forwards(tiny):
    from certsr_rt.smoothing.noise import gaussian_field

    x = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    up = make(tiny, sigma=0.1, samples=5, seed=4)
    noise = gaussian_field((5, 3, 9, 11), seed=4)
    with torch.inference_mode():
        outs = tiny.module(x + 0.1 * noise)
    ref = outs.median(dim=0).values.clamp(0, 1)[None]
    torch.testing.assert_close(up(x), ref, rtol=0, atol=1e-6)


def test_chunking_does_not_change_the_result(tiny, photo):
    # Same noise, same median; only the batched convolutions' float rounding may differ.
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    torch.testing.assert_close(make(tiny, chunk_size=1)(x), make(tiny, chunk_size=5)(x), rtol=0, atol=1e-5)
    a = make(tiny, chunk_size=1)(photo).astype(np.int16)
    b = make(tiny, chunk_size=5)(photo).astype(np.int16)
    assert np.abs(a - b).max() <= 1


def test_tiny_model_output_is_in_the_visible_range(tiny, photo):
    # Tests that compare outputs (seeds, tiles, chunks, backends) compare something only if the tiny
    # model's output is not clamped to black or white.
    out = make(tiny, sigma=0.0, samples=1)(photo)
    assert 60 < out.mean() < 200 and out.std() > 20
    assert (out == 0).mean() < 0.05 and (out == 255).mean() < 0.05


def test_one_sample_is_the_plain_model(tiny, photo):
    plain = make(tiny, sigma=0.0, samples=1)
    one = make(tiny, sigma=0.2, samples=1)
    assert one.is_plain and one.samples == 1
    assert np.array_equal(one(photo), plain(photo))
    assert not np.array_equal(make(tiny, sigma=0.2, samples=3)(photo), plain(photo))


def test_gray_is_smoothed_as_gray_and_its_bounds_count_gray_values(tiny):
    img = (np.random.default_rng(3).random((10, 12)) * 255).astype(np.uint8)
    up = Upscaler(
        tiny, SmoothingConfig(sigma=0.1, samples=41), device="cpu", tile=0, bounds=BoundsConfig(eps=0.02)
    )
    seen = []
    real_infer = up.backend.infer
    up.backend.infer = lambda b, **kw: (seen.append(b.clone()), real_infer(b, **kw))[1]
    r = up.upscale(img)
    # One noise value per pixel shared by the model's three input channels: a perturbation of the gray
    # image is then exactly a perturbation of what was smoothed, so the certified eps is the stated one.
    batch = torch.cat(seen)
    assert torch.equal(batch[:, 0], batch[:, 1]) and torch.equal(batch[:, 1], batch[:, 2])
    assert r.image.shape == r.lower.shape == r.upper.shape == (40, 48)
    assert r.summary.num_values == 40 * 48
    assert np.all(r.lower <= r.image) and np.all(r.image <= r.upper)


def test_float_input_outside_the_unit_range_is_refused(tiny):
    up = make(tiny)
    with pytest.raises(InputError, match=r"\[0, 1\].*0\.\.255"):
        up(np.full((6, 6, 3), 200.0, np.float32))
    with pytest.raises(InputError, match="NaN"):
        up(torch.full((1, 3, 6, 6), float("nan")))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        up(torch.full((1, 3, 6, 6), -0.5))
    # Rounding just outside [0, 1] is clipped, not refused.
    assert up(np.full((6, 6, 3), 1.004, np.float32)).shape == (24, 24, 3)


def test_too_large_for_memory_is_one_input_error_with_advice(tiny, photo, monkeypatch):
    import certsr_rt.runtime.upscaler as upscaler_module

    up = make(tiny, tile=64, samples=201)
    monkeypatch.setattr(upscaler_module, "_available_memory", lambda device: 200 * 2**20)
    with pytest.raises(InputError, match=r"100x100 image is too large.*needed.*200 MiB available.*--tile"):
        up(np.zeros((100, 100, 3), np.uint8))
    monkeypatch.setattr(upscaler_module, "_available_memory", lambda device: 20 * 2**20)
    with pytest.raises(InputError, match="the upscaled result alone does not fit"):
        make(tiny, tile=64, samples=3)(np.zeros((200, 200, 3), np.uint8))
    assert make(tiny, tile=16, samples=3)(photo).shape == (160, 208, 3)  # small enough still runs


def test_an_allocation_failure_becomes_an_input_error(tiny, photo):
    up = make(tiny)

    def fail(x, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9072000000 B")

    up.backend.infer = fail
    with pytest.raises(InputError, match=r"40x52x3 image is too large.*can't allocate memory"):
        up(photo)


def test_small_tiles_keep_the_overlap_floor_and_too_small_ones_are_refused(tiny, photo):
    # tiny-rrdbnet's measured limits (models/arch/rrdbnet.py): tiles of 12 px or more, overlap >= 8
    up = Upscaler(tiny, SmoothingConfig(sigma=0.05, samples=3), device="cpu", tile=12)
    assert up.tile_overlap == 8  # a quarter of the tile (3) would be under the floor
    whole = make(tiny, tile=0, samples=3, sigma=0.05)(photo).astype(np.int16)
    # 12-pixel tiles cut the model's context more often than 20-pixel ones: a looser stated tolerance.
    assert np.abs(up(photo).astype(np.int16) - whole).mean() < 3
    with pytest.raises(InputError, match=r"tile 8 px is too small for this RRDBNet model.*--tile 12 or more"):
        Upscaler(tiny, device="cpu", tile=8)
    with pytest.raises(InputError, match="tile overlap 4 px is too small"):
        Upscaler(tiny, device="cpu", tile=20, tile_overlap=4)


def test_tiled_matches_untiled_within_tolerance(tiny, photo):
    whole = make(tiny, tile=0)(photo).astype(np.int16)
    tiled = make(tiny, tile=20)(photo).astype(np.int16)
    diff = np.abs(whole - tiled)
    # Stated tolerance: seams are blended; differences stay below 1.5 levels on average and 16 at worst.
    assert diff.mean() < 1.5, diff.mean()
    assert diff.max() <= 16, diff.max()


@pytest.mark.parametrize(
    "shape,dtype",
    [
        ((12, 10), np.uint8),
        ((12, 10, 1), np.uint8),
        ((12, 10, 2), np.uint8),
        ((12, 10, 3), np.uint16),
        ((12, 10, 4), np.uint8),
        ((12, 10, 3), np.float32),
    ],
)
def test_numpy_kinds_round_trip(tiny, shape, dtype):
    rng = np.random.default_rng(0)
    if dtype == np.float32:
        img = rng.random(shape, dtype=np.float32)
    else:
        img = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    out = make(tiny)(img)
    assert out.dtype == dtype
    assert out.shape == (shape[0] * 4, shape[1] * 4, *shape[2:])


def test_alpha_is_upscaled_without_smoothing(tiny):
    img = np.zeros((8, 8, 4), np.uint8)
    img[..., 3] = 200
    out = make(tiny, sigma=0.2)(img)
    assert np.all(out[..., 3] == 200)


def test_torch_batch_and_chw(tiny):
    x = torch.rand(2, 3, 8, 9)
    up = make(tiny)
    out = up(x)
    assert out.shape == (2, 3, 32, 36) and out.dtype == torch.float32
    assert torch.equal(up(x[1]), out[1])
    assert up(torch.rand(1, 1, 8, 8)).shape == (1, 1, 32, 32)


def test_progress_reports_every_chunk(tiny, photo):
    calls = []
    up = Upscaler(
        tiny,
        SmoothingConfig(sigma=0.05, samples=5, chunk_size=2),
        device="cpu",
        tile=20,
        tile_overlap=8,
    )
    up(photo, progress=lambda d, t: calls.append((d, t)))
    total = up.work_units(*photo.shape[:2])
    assert calls == [(i, total) for i in range(1, total + 1)]
    assert total == len(calls) > 3


def test_bounds_bracket_the_median(tiny, photo):
    up = Upscaler(
        tiny,
        SmoothingConfig(sigma=0.1, samples=41),
        device="cpu",
        tile=0,
        bounds=BoundsConfig(eps=0.02, alpha=0.05),
    )
    r = up.upscale(photo)
    assert r.lower.shape == r.image.shape == r.upper.shape
    assert np.all(r.lower <= r.image) and np.all(r.image <= r.upper)
    assert r.summary is not None


def test_vacuous_bounds_are_refused_with_the_samples_needed(tiny):
    with pytest.raises(InputError, match="samples"):
        Upscaler(tiny, SmoothingConfig(sigma=0.01, samples=21), device="cpu", bounds=BoundsConfig(eps=0.05))


def test_model_default_sigma_is_used(tiny):
    up = Upscaler(tiny, SmoothingConfig(samples=3), device="cpu")
    assert up.smoothing.sigma == tiny.default_sigma
    assert up.sigma_is_model_default


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4, 5), np.uint8), np.zeros((0, 4, 3), np.uint8), np.zeros((4, 4, 3), np.int32), "x"]
)
def test_bad_images_raise_input_error(tiny, bad):
    with pytest.raises(InputError, match="Expected"):
        make(tiny)(bad)


def test_bad_options_raise_input_error(tiny):
    with pytest.raises(InputError):
        SmoothingConfig(sigma=-0.1)
    with pytest.raises(InputError):
        SmoothingConfig(samples=0)
    with pytest.raises(InputError):
        Upscaler(tiny, tile=8, tile_overlap=8, device="cpu")
    with pytest.raises(InputError, match="device"):
        Upscaler(tiny, device="tpu")


def test_fp16_nonfinite_falls_back_to_fp32(tiny, monkeypatch):
    # Simulate an fp16 overflow on CPU by forcing the backend's precision flag and poisoning one run.
    backend = TorchBackend(tiny, "cpu")
    backend.activate()
    backend.precision = "fp16"
    real_run = backend._infer_impl
    calls = {"n": 0}

    def run(x):
        calls["n"] += 1
        if backend.precision == "fp16":
            return torch.full((x.shape[0], 3, x.shape[2] * 4, x.shape[3] * 4), float("nan"))
        return real_run(x)

    monkeypatch.setattr(backend, "_infer_impl", run)
    out = backend.infer(torch.rand(2, 3, 6, 6))
    assert torch.isfinite(out).all()
    assert backend.fell_back_to_fp32 and backend.precision == "fp32"


def test_noise_cache_reuses_a_fixed_field_and_never_changes_results(tiny, photo):
    up = make(tiny, tile=20, chunk_size=2)
    first = up(photo, noise_key=0)
    cached = dict(up._noise_cache)
    assert cached  # the fixed field of key 0 is kept for the next frame
    assert np.array_equal(up(photo, noise_key=0), first)
    other = up(photo, noise_key=1)
    assert all(k[0] == 1 for k in up._noise_cache)  # a new key replaces the old field
    assert np.array_equal(other, make(tiny, tile=20, chunk_size=2)(photo, noise_key=1))
    assert not np.array_equal(other, first)


def test_device_names_are_resolved_in_one_place(tiny):
    from certsr_rt._device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "gpu-please", "meta"):
        with pytest.raises(InputError, match="Expected a device such as auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            Upscaler(tiny, device="cuda")
        assert resolve_device("cuda:1", check_available=False) == torch.device("cuda", 1)


# ----------------------------------------------------------------------------- GPU slow-path logic on CPU


class _OverflowingHalf(TorchBackend):
    """A torch backend that pretends to run fp16 and overflows (inf) in the first chunk it computes."""

    def __init__(self, model) -> None:
        super().__init__(model, "cpu", "fp32")
        self.precision = "fp16"  # the fallback mechanism is the same on CPU
        self.runs: list[str] = []
        self.syncs = 0

    def _infer_impl(self, x: torch.Tensor) -> torch.Tensor:
        self.runs.append(self.precision)
        out = super()._infer_impl(x)
        if self.precision == "fp16" and len(self.runs) == 1:
            out[0, 0, 0, 0] = float("inf")
        return out

    def take_non_finite(self) -> bool:
        self.syncs += 1
        return super().take_non_finite()


def test_half_precision_overflow_is_checked_once_per_image_and_the_image_recomputed(caplog) -> None:
    model = load_model("tiny-srvgg")
    backend = _OverflowingHalf(model)
    config = SmoothingConfig(sigma=0.1, samples=6, seed=3, chunk_size=2)
    up = Upscaler(model, config, device="cpu", backend=backend, tile=8, tile_overlap=4)
    image = np.random.default_rng(0).random((12, 12, 3), dtype=np.float32)
    with caplog.at_level("WARNING", logger="certsr_rt"):
        got = up(image)
    chunks = 4 * 3  # 4 tiles x 3 chunks: every chunk ran before the single check of the image
    assert backend.runs == ["fp16"] * chunks + ["fp32"] * chunks
    assert backend.syncs == 1 and backend.precision == "fp32" and backend.fell_back_to_fp32
    assert sum(r.levelname == "WARNING" for r in caplog.records) == 1
    reference = Upscaler(model, config, device="cpu", backend="torch", tile=8, tile_overlap=4)(image)
    assert np.array_equal(got, reference)  # the recomputed image is the fp32 image
    up(image)  # the next image: fp32 from the start, nothing deferred
    assert backend.runs[2 * chunks :] == ["fp32"] * chunks and backend.syncs == 2


def test_cuda_chunk_budget_counts_memory_cached_by_torch(monkeypatch) -> None:
    model = load_model("tiny-srvgg")
    up = Upscaler(model, SmoothingConfig(sigma=0.1, samples=21, seed=0), device="cpu", backend="torch")
    up.device = torch.device("cuda", 0)  # only the budget arithmetic runs: no CUDA call is real
    free, cached_unused = 1 * 2**30, 3 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: cached_unused + 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2**30)
    from certsr_rt.runtime.tiling import make_tiles

    (tile,) = make_tiles(300, 300, 0, 0)
    per_sample = 300 * 300 * 3_000  # SRVGGNetCompact's estimate per LR pixel
    assert up._chunk_size(tile) == min(21, (free + cached_unused) // 2 // per_sample) == 7


def test_on_cuda_the_default_tiling_takes_the_whole_image_when_it_fits(monkeypatch) -> None:
    from certsr_rt.runtime import upscaler as upscaler_module

    model = load_model("tiny-srvgg")
    config = SmoothingConfig(sigma=0.1, samples=21, seed=0)
    up = Upscaler(model, config, device="cpu", backend="torch")
    assert up.auto_tile and up.tile == 192
    assert len(up._tiles(480, 640)) > 1  # CPU: 192 px tiles
    fixed = Upscaler(model, config, device="cpu", backend="torch", tile=192)
    for u in (up, fixed):
        u.device = torch.device("cuda", 0)  # only the tiling decision runs: no CUDA call is real
    # 480x640 at n = 21 needs about 2.7 GB (2 x 21 outputs of 1920x2560x3 float32, plus the result).
    monkeypatch.setattr(upscaler_module, "_available_memory", lambda device: 80 * 2**30)
    assert len(up._tiles(480, 640)) == 1 and up.work_units(480, 640) == 1
    assert len(fixed._tiles(480, 640)) > 1  # an explicit tile is kept
    assert "the whole image where it fits in memory" in up.describe()
    monkeypatch.setattr(upscaler_module, "_available_memory", lambda device: 2 * 2**30)
    assert len(up._tiles(480, 640)) > 1  # too large at once: 192 px tiles


# ----------------------------------------------------------------------------- batches: one call, many images


class _CountingBackend(TorchBackend):
    """A CPU torch backend that records the batch size of every backend call."""

    def __init__(self, model) -> None:
        super().__init__(model, "cpu", "fp32")
        self.batches: list[int] = []

    def _infer_impl(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return super()._infer_impl(x)


def _frames(photo):
    return [photo, np.roll(photo, 7, axis=1), np.ascontiguousarray(photo[::-1])]


@pytest.mark.parametrize("samples", [5, 21])
@pytest.mark.parametrize("tile", [0, 20])
def test_a_batch_of_images_equals_single_calls_bit_for_bit(tiny, photo, samples, tile):
    up = make(tiny, tile=tile, samples=samples)
    images = _frames(photo)
    together = up(images)
    assert isinstance(together, list) and len(together) == 3
    for got, image in zip(together, images, strict=True):
        assert np.array_equal(got, up(image))
    x = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images])
    batched = up(x)
    for i in range(3):
        assert torch.equal(batched[i], up(x[i]))
    results = up.upscale(images)
    assert [r.image.shape for r in results] == [(160, 208, 3)] * 3


def test_images_and_tiles_share_backend_calls_and_progress_counts_them(photo):
    model = load_model("tiny-srvgg")
    images = _frames(photo)

    def run(chunk_size, tile, imgs):
        backend = _CountingBackend(model)
        cfg = SmoothingConfig(sigma=0.06, samples=5, seed=0, chunk_size=chunk_size)
        up = Upscaler(model, cfg, device="cpu", backend=backend, tile=tile, tile_overlap=8)
        steps = []
        out = up(imgs, progress=lambda d, t: steps.append((d, t)))
        total = up.work_units(*photo.shape[:2], count=len(imgs) if isinstance(imgs, list) else 1)
        assert steps == [(i, total) for i in range(1, total + 1)] and total == len(backend.batches)
        return out, backend.batches

    one_by_one, batches = run(5, 0, images)
    assert batches == [5, 5, 5]
    together, batches = run(15, 0, images)
    assert batches == [15]  # 3 images x 5 noisy copies in one backend call
    assert all(np.array_equal(a, b) for a, b in zip(together, one_by_one, strict=True))
    tiled, batches = run(5, 20, photo)
    assert len(batches) > 1 and set(batches) == {5}
    tiled_shared, batches = run(10, 20, photo)
    assert batches[0] == 10  # two tiles' 5 copies each in one backend call
    assert np.array_equal(tiled, tiled_shared)


def test_cancel_stops_at_the_next_backend_call(photo):
    from certsr_rt.errors import Cancelled

    model = load_model("tiny-srvgg")
    backend = _CountingBackend(model)
    cfg = SmoothingConfig(sigma=0.06, samples=6, seed=0, chunk_size=2)
    up = Upscaler(model, cfg, device="cpu", backend=backend, tile=0)
    seen: list[int] = []
    with pytest.raises(Cancelled, match="cancelled after 2 of 3 steps"):
        up(photo, progress=lambda d, t: seen.append(d), cancel=lambda: len(seen) >= 2)
    assert backend.batches == [2, 2]
    assert up(photo).shape == (160, 208, 3)  # the upscaler is usable afterwards


def test_a_list_of_images_of_different_sizes_is_refused(tiny, photo):
    up = make(tiny)
    with pytest.raises(InputError, match="Expected images of one shape and dtype"):
        up([photo, photo[:20]])
    with pytest.raises(InputError, match="at least one image"):
        up([])
