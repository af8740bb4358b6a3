"""FGSM / BIM / PGD / CW on the SR loss, presets, and the corruptions (noise, blur, JPEG)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import attack_batch, attack_rrdbnet, attack_srvgg

from certsr_rt.attacks import (
    EVAL_ATTACKS,
    TRAIN_ATTACKS,
    AttackConfig,
    attack_preset,
    bim,
    cw,
    fgsm,
    gaussian_blur,
    gaussian_kernel1d,
    jpeg_compress,
    pgd,
    run_attack,
    sensor_noise,
)
from certsr_rt.errors import InputError
from certsr_rt.losses import SRLoss

EPS = 10 / 255


tiny_rrdbnet, tiny_srvgg, batch = attack_rrdbnet, attack_srvgg, attack_batch


LOSS = SRLoss(None)


def per_image(model: torch.nn.Module, x: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return LOSS(model(x), hr, reduction="none")


GRADIENT_ATTACKS = {
    "fgsm": lambda m, x, hr: fgsm(m, x, hr, LOSS, EPS),
    "bim": lambda m, x, hr: bim(m, x, hr, LOSS, EPS, steps=3),
    "pgd": lambda m, x, hr: pgd(m, x, hr, LOSS, EPS, steps=3, generator=torch.Generator().manual_seed(1)),
}


@pytest.mark.parametrize("name", sorted(GRADIENT_ATTACKS))
@pytest.mark.parametrize("make_model", [tiny_rrdbnet, tiny_srvgg])
def test_gradient_attacks_raise_loss_and_respect_eps_and_range(name: str, make_model) -> None:
    model = make_model()
    x, hr = batch()
    x_adv = GRADIENT_ATTACKS[name](model, x, hr)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert bool((per_image(model, x_adv, hr) > per_image(model, x, hr)).all())


def test_fgsm_moves_every_free_pixel_by_exactly_eps() -> None:
    model = tiny_srvgg()
    x, hr = batch()
    delta = (fgsm(model, x, hr, LOSS, EPS) - x).abs()
    interior = (x > EPS) & (x < 1 - EPS)
    torch.testing.assert_close(delta[interior], torch.full_like(delta[interior], EPS), atol=1e-6, rtol=0)


def test_iterations_increase_the_loss_beyond_one_step() -> None:
    model = tiny_srvgg()
    x, hr = batch()
    one = per_image(model, fgsm(model, x, hr, LOSS, EPS), hr)
    many = per_image(model, bim(model, x, hr, LOSS, EPS, steps=10, step_size=2 / 255), hr)
    assert bool((many >= one - 1e-6).all())


@pytest.mark.parametrize("name", sorted(GRADIENT_ATTACKS))
def test_batch_attack_equals_attacking_each_image_alone(name: str) -> None:
    model = tiny_rrdbnet()
    x, hr = batch(3)
    if name == "pgd":

        def attack(m, xs, hs):  # noqa: ANN001, ANN202 - same random start either way
            return pgd(m, xs, hs, LOSS, EPS, steps=3, random_start=False)
    else:
        attack = GRADIENT_ATTACKS[name]
    together = attack(model, x, hr)
    alone = torch.cat([attack(model, x[i : i + 1], hr[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)


def test_attacks_leave_model_gradients_and_mode_alone() -> None:
    model = tiny_rrdbnet()
    x, hr = batch()
    with torch.no_grad():  # evaluation code calls attacks under no_grad: they must still work
        x_adv = bim(model, x, hr, LOSS, EPS, steps=2)
        x_cw = cw(model, x, hr, LOSS, c=1.0, steps=2)
    assert float((x_adv - x).abs().max()) > 0 and float((x_cw - x).abs().max()) > 0
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_pgd_random_start_is_seeded() -> None:
    model = tiny_rrdbnet()
    x, hr = batch()

    def run(seed: int) -> torch.Tensor:
        return pgd(
            model, x, hr, LOSS, EPS, steps=1, step_size=1 / 255, generator=torch.Generator().manual_seed(seed)
        )

    torch.testing.assert_close(run(3), run(3))
    assert not torch.equal(run(3), run(4))
    no_start = pgd(model, x, hr, LOSS, EPS, steps=2, step_size=EPS / 2, random_start=False)
    torch.testing.assert_close(no_start, bim(model, x, hr, LOSS, EPS, steps=2))


def test_cw_uses_tanh_space_and_raises_loss() -> None:
    model = tiny_srvgg()
    x, hr = batch()
    x_adv = cw(model, x, hr, LOSS)  # the paper's setting: c = 0.01, 6 Adam steps of lr 1e-2
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert bool((per_image(model, x_adv, hr) > per_image(model, x, hr)).all())
    # A larger c buys a larger perturbation (and loss).
    strong = cw(model, x, hr, LOSS, c=10.0)
    assert float((strong - x).pow(2).mean()) > float((x_adv - x).pow(2).mean())
    assert bool((per_image(model, strong, hr) > per_image(model, x_adv, hr)).all())


def test_cw_never_returns_a_lower_loss_than_the_start() -> None:
    """A nearly input-independent network: the distance penalty wins; the start itself is returned."""
    model = tiny_rrdbnet()
    x, hr = batch()
    x_adv = cw(model, x, hr, LOSS, c=0.01, steps=6)
    assert bool((per_image(model, x_adv, hr) >= per_image(model, x, hr) - 1e-6).all())
    assert float((x_adv - x).abs().max()) < 1e-5


def test_attack_input_validation() -> None:
    model = tiny_rrdbnet()
    x, hr = batch()
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        fgsm(model, x + 0.5, hr, LOSS, EPS)
    with pytest.raises(InputError, match="N x C x H x W"):
        fgsm(model, x[0], hr, LOSS, EPS)
    with pytest.raises(InputError, match="HR targets"):
        fgsm(model, x, hr[:1], LOSS, EPS)
    with pytest.raises(InputError, match="eps"):
        fgsm(model, x, hr, LOSS, -0.1)
    with pytest.raises(InputError, match="steps"):
        bim(model, x, hr, LOSS, EPS, steps=0)
    with pytest.raises(InputError, match="one loss per image"):
        fgsm(model, x, hr, lambda sr, h, reduction="mean": (sr - h).abs().mean(), EPS)


# ---------------------------------------------------------------------------------------------- presets
def test_presets_hold_the_paper_settings() -> None:
    for name in ("fgsm", "bim", "pgd"):
        assert EVAL_ATTACKS[name].eps == pytest.approx(10 / 255)
    assert EVAL_ATTACKS["pgd"].random_start
    cw_eval = EVAL_ATTACKS["cw"]
    assert (cw_eval.c, cw_eval.steps, cw_eval.learning_rate) == (0.01, 6, 0.01)
    assert TRAIN_ATTACKS["fgsm"].eps == pytest.approx(9 / 255)
    assert (TRAIN_ATTACKS["bim"].eps, TRAIN_ATTACKS["bim"].steps) == (pytest.approx(9 / 255), 2)
    cw_train = TRAIN_ATTACKS["cw"]
    assert (cw_train.c, cw_train.steps, cw_train.learning_rate) == (0.01, 4, 0.01)
    pgd_train = TRAIN_ATTACKS["pgd"]
    assert (pgd_train.eps, pgd_train.steps, pgd_train.random_start) == (pytest.approx(14 / 255), 2, True)
    assert attack_preset("bim", "train") is TRAIN_ATTACKS["bim"]
    assert EVAL_ATTACKS["pgd"].describe() == "PGD eps=10/255, 10 steps of 2/255, random start"
    with pytest.raises(InputError, match="purpose"):
        attack_preset("bim", "test")
    with pytest.raises(InputError, match="attack method"):
        AttackConfig("deepfool")
    with pytest.raises(InputError, match="steps"):
        EVAL_ATTACKS["bim"].replace(steps=0)


@pytest.mark.parametrize("name", ["fgsm", "bim", "pgd", "cw"])
def test_run_attack_dispatches_presets(name: str) -> None:
    model = tiny_srvgg()
    x, hr = batch()
    config = TRAIN_ATTACKS[name]
    x_adv = run_attack(config, model, x, hr, LOSS, generator=torch.Generator().manual_seed(0))
    if name != "cw":
        assert float((x_adv - x).abs().max()) <= config.eps + 1e-6
    assert bool((per_image(model, x_adv, hr) > per_image(model, x, hr)).all())


# ----------------------------------------------------------------------------------------- corruptions
def test_sensor_noise_statistics_seed_and_clip() -> None:
    x = torch.full((1, 3, 128, 128), 0.5)
    noisy = sensor_noise(x, 0.03, generator=torch.Generator().manual_seed(0))
    assert float((noisy - x).std()) == pytest.approx(0.03, rel=0.05)
    torch.testing.assert_close(noisy, sensor_noise(x, 0.03, generator=torch.Generator().manual_seed(0)))
    edge = torch.zeros(1, 3, 32, 32)
    assert float(sensor_noise(edge, 0.1).min()) == 0.0
    assert float(sensor_noise(edge, 0.1, clip=False).min()) < 0.0


def test_blur_kernel_even_size_is_centred_between_pixels() -> None:
    k = gaussian_kernel1d(10, 0.3)
    assert float(k.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(k, k.flip(0))
    assert float(k[4] + k[5]) > 0.9999  # sigma 0.3: almost all weight on the two central taps
    odd = gaussian_kernel1d(11, 0.3)
    assert int(odd.argmax()) == 5
    with pytest.raises(InputError):
        gaussian_kernel1d(0, 0.3)


def test_gaussian_blur_is_a_half_pixel_box_average_at_paper_settings() -> None:
    x = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    out = gaussian_blur(x, 10, 0.3)
    assert out.shape == x.shape
    box = F.avg_pool2d(x, 2, stride=1)  # mean of x[y:y+2, x:x+2]
    torch.testing.assert_close(out[:, :, :-1, :-1], box, atol=1e-4, rtol=0)
    flat = torch.full((1, 1, 12, 12), 0.25)
    torch.testing.assert_close(gaussian_blur(flat, 10, 0.3), flat)
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[0, 0, 4, 4] = 1.0
    spread = gaussian_blur(impulse, 5, 1.0)[0, 0]
    torch.testing.assert_close(spread, spread.flip(0).flip(1))  # odd kernel: centred, symmetric
    assert float(spread.sum()) == pytest.approx(1.0, abs=1e-6)


def test_jpeg_round_trip() -> None:
    smooth = F.interpolate(
        torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)), size=32, mode="bilinear"
    )
    high, low = jpeg_compress(smooth, 95), jpeg_compress(smooth, 10)
    assert high.shape == smooth.shape and high.dtype == smooth.dtype
    torch.testing.assert_close(high * 255, torch.round(high * 255))  # 8-bit values
    assert float((high - smooth).abs().mean()) < float((low - smooth).abs().mean()) < 0.1
    gray = jpeg_compress(smooth[:, :1], 90)
    assert gray.shape == (2, 1, 32, 32)
    with pytest.raises(InputError, match="quality"):
        jpeg_compress(smooth, 0)
    with pytest.raises(InputError, match="1 \\(gray\\) or 3"):
        jpeg_compress(torch.rand(1, 2, 8, 8), 90)


@pytest.mark.gpu
def test_attacks_run_on_cuda_like_on_cpu() -> None:
    model = tiny_srvgg()
    x, hr = batch()
    cpu = bim(model, x, hr, LOSS, EPS, steps=2)
    gpu = bim(model.cuda(), x.cuda(), hr.cuda(), LOSS, EPS, steps=2)
    assert gpu.device.type == "cuda"
    # Sign steps can flip where the gradient is ~0; nearly every pixel must agree.
    assert float((gpu.cpu() - cpu).abs().gt(1e-5).float().mean()) < 0.01
    noisy = sensor_noise(x.cuda(), 0.03, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(noisy.cpu(), sensor_noise(x, 0.03, generator=torch.Generator().manual_seed(0)))
