"""Tests of certsr_rt.metrics: PSNR/SSIM conventions and offline LPIPS-alex."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from certsr_rt.errors import InputError
from certsr_rt.metrics import LPIPSMetric, psnr, ssim

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "assets" / "data"
SET5 = DATA / "Set5"
needs_set5 = pytest.mark.skipif(not (SET5 / "HR").is_dir(), reason="../shared/assets/data/Set5 not present")


def random_rgb(seed: int, shape: tuple[int, ...] = (32, 40, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def set5_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, HR, cv2-bicubic x4 of LR) for the Set5 images."""
    import cv2

    pairs = []
    for hr_path in sorted((SET5 / "HR").glob("*.png")):
        hr = read_rgb(hr_path)
        lr = read_rgb(SET5 / "LR_x4" / hr_path.name)
        up = cv2.resize(lr, (hr.shape[1], hr.shape[0]), interpolation=cv2.INTER_CUBIC)
        pairs.append((hr_path.name, hr, up))
    return pairs


# ----------------------------------------------------------------------------------------------- PSNR


def test_psnr_identical_is_inf() -> None:
    image = random_rgb(0)
    assert psnr(image, image) == math.inf
    assert psnr(image, image.copy(), test_y_channel=False) == math.inf


@pytest.mark.parametrize("offset", [1, 5, 20])
def test_psnr_constant_offset_analytic(offset: int) -> None:
    ref = np.random.default_rng(1).integers(30, 200, size=(24, 24, 3), dtype=np.uint8)
    img = ref + np.uint8(offset)
    # RGB: MSE = offset²  ->  20 log10(255 / offset).
    assert psnr(img, ref, test_y_channel=False) == pytest.approx(20 * math.log10(255 / offset), abs=1e-10)
    # Y: the offset passes through the BT.601 luma row, whose coefficients sum to 219/255.
    y_offset = offset * (65.481 + 128.553 + 24.966) / 255
    assert psnr(img, ref) == pytest.approx(20 * math.log10(255 / y_offset), abs=1e-10)


def test_psnr_y_and_rgb_differ() -> None:
    a, b = random_rgb(2), random_rgb(3)
    assert psnr(a, b) != pytest.approx(psnr(a, b, test_y_channel=False), abs=1e-3)


def test_psnr_dtypes_agree() -> None:
    a, b = random_rgb(4), random_rgb(5)
    as_float = psnr(a.astype(np.float32) / 255, b.astype(np.float32) / 255)
    as_u16 = psnr(a.astype(np.uint16) * 257, b.astype(np.uint16) * 257)
    assert as_float == pytest.approx(psnr(a, b), abs=1e-4)
    assert as_u16 == pytest.approx(psnr(a, b), abs=1e-9)


def test_border_is_shaved() -> None:
    ref = random_rgb(6, (20, 20, 3))
    img = ref.copy()
    img[:4] = 255 - img[:4]
    img[:, -4:] = 0
    assert psnr(img, ref, crop_border=4) == math.inf
    assert math.isfinite(psnr(img, ref, crop_border=3))
    assert math.isfinite(psnr(img, ref, crop_border=0))


def test_grayscale_images() -> None:
    a = random_rgb(7, (16, 16))
    b = random_rgb(8, (16, 16))
    assert psnr(a, b, crop_border=0) == pytest.approx(psnr(a[:, :, None], b[:, :, None], crop_border=0))
    # Grayscale is measured as it is, with or without test_y_channel (BasicSR does the same).
    assert psnr(a, b, crop_border=0) == psnr(a, b, crop_border=0, test_y_channel=False)


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(InputError, match=r"\(32, 40, 3\).*\(32, 41, 3\)"):
        psnr(random_rgb(0), random_rgb(1, (32, 41, 3)))
    with pytest.raises(InputError, match=r"\(32, 40, 3\).*\(32, 41, 3\)"):
        ssim(random_rgb(0), random_rgb(1, (32, 41, 3)))


@pytest.mark.parametrize(
    ("img", "match"),
    [
        (np.zeros((8, 8, 3), dtype=np.int32), "dtype int32"),
        (np.zeros((8, 8, 4), dtype=np.uint8), r"shape \(8, 8, 4\)"),
        (np.full((8, 8, 3), 200.0), r"\[0, 1\]"),
        ([[0, 1]], "numpy array"),
    ],
)
def test_bad_inputs(img: np.ndarray, match: str) -> None:
    with pytest.raises(InputError, match=match):
        psnr(img, img, crop_border=0)


def test_border_too_large() -> None:
    image = random_rgb(0, (8, 8, 3))
    # The constraint itself, not a derived bound on the border ("it must be < 4") that reads like a fix.
    with pytest.raises(InputError, match=r"crop_border=4 needs an image larger than 8 x 8 .*, got 8 x 8$"):
        psnr(image, image, crop_border=4)
    assert math.isfinite(psnr(random_rgb(0, (9, 9, 3)), random_rgb(1, (9, 9, 3)), crop_border=4))  # 1 px left
    with pytest.raises(InputError, match="crop_border"):
        psnr(image, image, crop_border=-1)


# ----------------------------------------------------------------------------------------------- SSIM


def basicsr_ssim(img: np.ndarray, ref: np.ndarray) -> float:
    """BasicSR's hand-written SSIM (cv2 11x11 Gaussian, sigma 1.5, 'valid' region) on one channel."""
    import cv2

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())
    mu1 = cv2.filter2D(img, -1, window)[5:-5, 5:-5]
    mu2 = cv2.filter2D(ref, -1, window)[5:-5, 5:-5]
    s1 = cv2.filter2D(img**2, -1, window)[5:-5, 5:-5] - mu1**2
    s2 = cv2.filter2D(ref**2, -1, window)[5:-5, 5:-5] - mu2**2
    s12 = cv2.filter2D(img * ref, -1, window)[5:-5, 5:-5] - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def test_ssim_identical_is_one() -> None:
    image = random_rgb(9)
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert ssim(image, image, test_y_channel=False) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_basicsr_formula() -> None:
    rng = np.random.default_rng(10)
    ref = rng.integers(0, 256, size=(48, 56, 3)).astype(np.uint8)
    img = np.clip(ref.astype(np.int16) + rng.integers(-25, 26, size=ref.shape), 0, 255).astype(np.uint8)
    y = lambda a: a.astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255 + 16  # noqa: E731
    expected_y = basicsr_ssim(y(img)[4:-4, 4:-4], y(ref)[4:-4, 4:-4])
    assert ssim(img, ref) == pytest.approx(expected_y, abs=1e-6)
    expected_rgb = np.mean(
        [
            basicsr_ssim(img[4:-4, 4:-4, c].astype(np.float64), ref[4:-4, 4:-4, c].astype(np.float64))
            for c in range(3)
        ]
    )
    assert ssim(img, ref, test_y_channel=False) == pytest.approx(expected_rgb, abs=1e-6)
    assert ssim(img, ref) < 1.0


def test_ssim_too_small() -> None:
    image = random_rgb(0, (16, 16, 3))
    with pytest.raises(InputError, match=r"at least 19 x 19 \(its 11 x 11 window .*\), got 16 x 16$"):
        ssim(image, image, crop_border=4)


# ---------------------------------------------------------------------------------------------- LPIPS


@pytest.fixture(scope="module")
def lpips_metric() -> LPIPSMetric:
    return LPIPSMetric()


def test_importing_metrics_does_not_import_lpips() -> None:
    code = (
        "import sys, certsr_rt.metrics; "
        "assert 'lpips' not in sys.modules; assert 'skimage' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lpips_identical_is_zero(lpips_metric: LPIPSMetric) -> None:
    image = random_rgb(11, (64, 64, 3))
    assert lpips_metric(image, image) == pytest.approx(0.0, abs=1e-7)


def test_lpips_numpy_and_tensor_agree(lpips_metric: LPIPSMetric) -> None:
    a, b = random_rgb(12, (64, 64, 3)), random_rgb(13, (64, 64, 3))
    ta = torch.from_numpy(a).permute(2, 0, 1).float()[None] / 255
    tb = torch.from_numpy(b).permute(2, 0, 1).float()[None] / 255
    from_numpy = lpips_metric(a, b)
    assert from_numpy > 0.1
    assert lpips_metric(ta, tb) == pytest.approx(from_numpy, abs=1e-6)
    assert lpips_metric(ta[0], tb[0]) == pytest.approx(from_numpy, abs=1e-6)
    assert lpips_metric(b, a) == pytest.approx(from_numpy, abs=1e-6)
    per_image = lpips_metric.distance(torch.cat([ta, ta]), torch.cat([tb, ta]))
    assert per_image.shape == (2,)
    assert per_image[0].item() == pytest.approx(from_numpy, abs=1e-6)
    assert per_image[1].item() == pytest.approx(0.0, abs=1e-7)


def test_lpips_shape_mismatch(lpips_metric: LPIPSMetric) -> None:
    with pytest.raises(InputError, match=r"\(64, 64, 3\).*\(64, 60, 3\)"):
        lpips_metric(random_rgb(0, (64, 64, 3)), random_rgb(0, (64, 60, 3)))
    with pytest.raises(InputError, match="float"):
        lpips_metric(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_lpips_is_silent_and_offline(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("LPIPSMetric tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    metric = LPIPSMetric()
    image = random_rgb(14, (32, 32, 3))
    metric(image, image)
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""


def test_lpips_uses_bundled_alexnet(lpips_metric: LPIPSMetric) -> None:
    from certsr_rt.metrics.lpips import _alexnet_features

    features = _alexnet_features()
    conv = lpips_metric.net.net.slice5._modules["10"]
    assert torch.equal(conv.weight, features["features.10.weight"].float())


@needs_set5
def test_lpips_on_set5(lpips_metric: LPIPSMetric) -> None:
    values = []
    for _, hr, up in set5_pairs():
        assert lpips_metric(hr, hr) == pytest.approx(0.0, abs=1e-7)
        values.append(lpips_metric(up, hr))
    # Measured with this implementation (torch 2.14.1, CPU): per image 0.306 / 0.233 / 0.376 / 0.421 / 0.366,
    # mean 0.3405. Bicubic blur sits in the usual 0.2-0.45 LPIPS-alex range for x4.
    assert all(0.2 < v < 0.45 for v in values)
    assert float(np.mean(values)) == pytest.approx(0.3405, abs=0.003)


# -------------------------------------------------------------------------------------- real-data sanity


@needs_set5
def test_bicubic_set5_psnr_y() -> None:
    pairs = set5_pairs()
    assert len(pairs) == 5
    psnrs = [psnr(up, hr, crop_border=4) for _, hr, up in pairs]
    ssims = [ssim(up, hr, crop_border=4) for _, hr, up in pairs]
    mean_psnr = float(np.mean(psnrs))
    # ASSETS.md: MATLAB bicubic gives 28.43 dB. OpenCV's INTER_CUBIC uses the Keys kernel with a = -0.75,
    # slightly sharper than MATLAB imresize's a = -0.5; measured here: 28.634 dB PSNR-Y, 0.8138 SSIM-Y.
    assert mean_psnr == pytest.approx(28.634, abs=0.01)
    assert abs(mean_psnr - 28.43) < 0.3
    assert float(np.mean(ssims)) == pytest.approx(0.8138, abs=0.002)
