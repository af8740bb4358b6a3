"""The Upscaler on CUDA (``pytest -m gpu``): fp32 against the CPU, fp16/bf16 against fp32, the NaN fallback.

Every test here is marked ``gpu`` and skipped where no CUDA device is visible (``conftest.py``). NOT YET RUN
on a GPU: written for the first session that has one (``benchmarks/gpu_check.sh`` runs them).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from certsr_rt import SmoothingConfig, Upscaler
from certsr_rt.errors import BackendError
from certsr_rt.models import load_model

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-rrdbnet")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    y, x = np.mgrid[0:40, 0:52].astype(np.float32)
    return np.stack([x / 52, y / 40, ((x // 8 + y // 8) % 2) * 0.5 + 0.25], axis=2).astype(np.float32)


def make(model, device: str, precision: str = "fp32", tile: int = 0, **smoothing) -> Upscaler:
    config = SmoothingConfig(**{"sigma": 0.06, "samples": 5, "seed": 0, **smoothing})
    return Upscaler(
        model, config, device=device, backend="torch", precision=precision, tile=tile, tile_overlap=8
    )


class _Times(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.factor


def test_cuda_without_an_index_runs_on_the_current_device(tiny, photo) -> None:
    up = make(tiny, "cuda")
    assert up.device == up.backend.device == torch.device("cuda", torch.cuda.current_device())
    out = up(photo)
    assert out.shape == (160, 208, 3) and out.dtype == np.float32 and np.isfinite(out).all()
    tensor = torch.from_numpy(photo).permute(2, 0, 1)[None].cuda()  # a tensor on cuda:N, as given
    assert up(tensor).device == tensor.device


@pytest.mark.parametrize("tile", [0, 16])
def test_cuda_fp32_matches_the_cpu(tiny, photo, tile: int) -> None:
    cpu = make(tiny, "cpu", tile=tile)(photo)
    gpu = make(tiny, "cuda", tile=tile)(photo)
    diff = np.abs(cpu - gpu)
    # Same noise on both devices; cuDNN may run fp32 convolutions as TF32 (10-bit mantissa).
    assert diff.max() <= 2e-2 and diff.mean() <= 2e-3, (diff.max(), diff.mean())


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_half_precision_is_close_to_fp32_and_stays_half(tiny, photo, precision: str) -> None:
    full = make(tiny, "cuda")(photo)
    up = make(tiny, "cuda", precision)
    half = up(photo)
    assert up.backend.precision == precision and not up.backend.fell_back_to_fp32
    diff = np.abs(full - half)
    assert diff.max() <= (5e-2 if precision == "fp16" else 1e-1) and diff.mean() <= 1e-2


def test_cuda_fp16_overflow_recomputes_the_image_in_fp32_once(tiny, photo, caplog) -> None:
    up = make(tiny, "cuda", "fp16", tile=16, chunk_size=2)  # several tiles and chunks, one check
    backend = up.backend
    assert backend._private is not None
    backend._private = dataclasses.replace(
        backend._private, module=_Times(backend._private.module, float("inf"))
    )  # what an fp16 overflow does to an image
    with caplog.at_level("WARNING", logger="certsr_rt"):
        got = up(photo)
    assert backend.fell_back_to_fp32 and backend.precision == "fp32"
    assert sum(r.levelname == "WARNING" for r in caplog.records) == 1
    expected = make(tiny, "cuda", tile=16, chunk_size=2)(photo)
    assert np.abs(got - expected).max() <= 1e-4
    up(photo)  # the next image runs in fp32 from the start
    assert sum(r.levelname == "WARNING" for r in caplog.records) == 1


def test_cuda_nan_in_fp32_is_an_error_not_a_black_image(tiny, photo) -> None:
    up = make(tiny, "cuda")
    backend = up.backend
    model = backend._private if backend._private is not None else backend.model
    broken = dataclasses.replace(model, module=_Times(model.module, float("nan")))
    if backend._private is not None:
        backend._private = broken
    else:
        backend.model = broken
    with pytest.raises(BackendError, match="produced NaN or inf"):
        up(photo)


def test_cuda_median_kernel_or_its_fallback_gives_the_cpu_median(tiny) -> None:
    from certsr_rt.runtime import cuda_median as cm
    from certsr_rt.smoothing import aggregate

    x = torch.randn(21, 3, 33, 47, generator=torch.Generator().manual_seed(0))
    ref, _ = aggregate.median_and_order_statistics(x, (), method="sort")
    med, _ = cm.median_and_order_statistics(x.cuda())
    assert torch.equal(med.cpu(), ref), cm.kernel_unavailable_reason("cuda")
