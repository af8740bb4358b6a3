"""The image layout layer: dtype -> peak, gray and alpha, float policies, and the round trip to numpy."""

import numpy as np
import pytest
import torch

from certsr_rt.errors import InputError
from certsr_rt.runtime.layout import alpha_of, from_batch, numpy_layout, peak_of, to_batch


def test_peaks_by_dtype_and_the_float_policy_refuse():
    assert peak_of(np.uint8) == 255.0 and peak_of(np.uint16) == 65535.0
    assert peak_of(np.float32) == peak_of(np.float64) == 1.0
    with pytest.raises(InputError, match="expected an 8- or 16-bit image, got float32 samples"):
        peak_of(np.float32, "refuse")
    with pytest.raises(InputError, match="Expected uint8, uint16 or float image data, but got int32"):
        peak_of(np.int32)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (5, 7, 2), (5, 7, 3), (5, 7, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_round_trip_keeps_dtype_and_layout(shape, dtype):
    rng = np.random.default_rng(0)
    if dtype == np.float32:
        image = rng.random(shape, dtype=np.float32)
    else:
        image = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    x, layout = to_batch(image)
    color = 1 if len(shape) == 2 else (shape[2] - 1 if shape[2] in (2, 4) else shape[2])
    assert x.shape == (1, color, 5, 7) and x.dtype == torch.float32 and x.is_contiguous()
    assert layout.has_alpha == (len(shape) == 3 and shape[2] in (2, 4))
    back = from_batch(x.clone(), layout, alpha_of([image], layout))[0]
    assert back.dtype == image.dtype and back.shape == image.shape
    np.testing.assert_array_equal(back, image)  # value / peak, then rint(value * peak): exact


def test_several_images_of_one_shape_make_one_batch():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (4, 6, 3), dtype=np.uint8) for _ in range(3)]
    x, _ = to_batch(images)
    assert x.shape == (3, 3, 4, 6)
    for i, im in enumerate(images):
        torch.testing.assert_close(x[i], to_batch(im)[0][0], rtol=0, atol=0)
    with pytest.raises(InputError, match="Expected images of one shape and dtype"):
        to_batch([images[0], images[0][:3]])
    with pytest.raises(InputError, match="Expected an H x W or H x W x C image"):
        to_batch(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(InputError, match="non-empty"):
        numpy_layout(np.zeros((0, 3, 3), np.uint8))


def test_float_policies_check_clip_and_refuse():
    near = np.full((2, 2, 3), 1.004, np.float32)
    far = np.full((2, 2, 3), 200.0, np.float32)
    assert float(to_batch(near)[0].max()) == 1.0  # rounding: clipped
    with pytest.raises(InputError, match=r"values in \[0, 1\], but got \[200, 200\] \(it looks like 0..255"):
        to_batch(far)
    with pytest.raises(InputError, match="NaN or inf"):
        to_batch(np.full((2, 2, 3), np.nan, np.float32))
    assert float(to_batch(far, floats="clip")[0].max()) == 1.0  # evaluation: clipped silently
    with pytest.raises(InputError, match="8- or 16-bit"):
        to_batch(near, floats="refuse")


def test_channel_policies_keep_replicate_or_luma():
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, (4, 5), dtype=np.uint8)
    rgb = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    assert to_batch(gray)[0].shape == (1, 1, 4, 5)  # the Upscaler smooths gray as gray
    rep = to_batch(gray, channels=3)[0]
    assert rep.shape == (1, 3, 4, 5) and torch.equal(rep[0, 0], rep[0, 2])
    luma = to_batch(rgb, channels=1)[0]
    expected = (rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(luma[0, 0].numpy(), expected)
    rgba = np.concatenate([rgb, np.full((4, 5, 1), 9, np.uint8)], axis=2)
    torch.testing.assert_close(to_batch(rgba, channels=3)[0], to_batch(rgb)[0], rtol=0, atol=0)
