"""The adaptive attacks on the smoothed model: pgd-eot (expectation over fresh noise) and pgd-median."""

from __future__ import annotations

import pytest
import torch
from helpers import attack_batch, attack_rrdbnet, attack_srvgg

from certsr_rt.attacks import (
    EVAL_ATTACKS,
    AttackConfig,
    SmoothingTarget,
    deployed_noise,
    pgd,
    pgd_eot,
    pgd_median,
    run_attack,
    smoothed_forward,
)
from certsr_rt.attacks.smoothed import eot_gradient, median_gradient
from certsr_rt.errors import InputError
from certsr_rt.losses import SRLoss

EPS = 10 / 255
LOSS = SRLoss(None)
TARGET = SmoothingTarget(sigma=0.06, samples=5, seed=11, noise_key=2)


tiny_rrdbnet, tiny_srvgg = attack_rrdbnet, attack_srvgg


def batch(n: int = 2, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return attack_batch(n, size, seed)


def smoothed_loss(
    model: torch.nn.Module, x: torch.Tensor, hr: torch.Tensor, target: SmoothingTarget
) -> torch.Tensor:
    """Per-image SR loss of the deployed smoothed model (exact deployed noise)."""
    noise = deployed_noise(target, tuple(x.shape[1:]), x.device)
    with torch.no_grad():
        return LOSS(smoothed_forward(model, x, target.sigma, noise), hr, reduction="none")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_smoothed_forward_with_deployed_noise_is_what_the_upscaler_computes() -> None:
    from certsr_rt.models import load_model
    from certsr_rt.runtime.upscaler import Upscaler
    from certsr_rt.smoothing.config import SmoothingConfig

    model = load_model("tiny-srvgg", "cpu")
    x, _ = batch(n=1, size=10)
    up = Upscaler(
        model,
        SmoothingConfig(sigma=TARGET.sigma, samples=TARGET.samples, seed=TARGET.seed, chunk_size=2),
        device="cpu",
        precision="fp32",
        tile=0,
    )
    deployed = up(x, noise_key=TARGET.noise_key)
    noise = deployed_noise(TARGET, (3, 10, 10), "cpu")
    with torch.no_grad():
        ours = smoothed_forward(model, x, TARGET.sigma, noise)
    torch.testing.assert_close(ours.clamp(0, 1), deployed, atol=1e-5, rtol=1e-5)  # torch out: clamped
    # A different key or seed is a different field: the attack really uses this one.
    other = deployed_noise(
        SmoothingTarget(TARGET.sigma, TARGET.samples, TARGET.seed, noise_key=3), (3, 10, 10), "cpu"
    )
    assert not torch.allclose(other, noise)


@pytest.mark.parametrize("make_model", [tiny_rrdbnet, tiny_srvgg])
@pytest.mark.parametrize("attack", ["eot", "median"])
def test_adaptive_attacks_raise_the_smoothed_loss_and_stay_in_the_ball(make_model, attack: str) -> None:
    model = make_model()
    x, hr = batch()
    if attack == "eot":
        x_adv = pgd_eot(
            model, x, hr, LOSS, EPS, 4, target=TARGET, eot_samples=4, generator=gen(1), noise_generator=gen(2)
        )
    else:
        x_adv = pgd_median(model, x, hr, LOSS, EPS, 4, target=TARGET, generator=gen(1))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert bool((smoothed_loss(model, x_adv, hr, TARGET) > smoothed_loss(model, x, hr, TARGET)).all())


@pytest.mark.parametrize("make_model", [tiny_rrdbnet, tiny_srvgg])
def test_pgd_median_is_at_least_as_strong_as_transfer_pgd_on_the_smoothed_model(make_model) -> None:
    model = make_model()
    x, hr = batch(n=3, seed=4)
    transfer = pgd(model, x, hr, LOSS, EPS, 5, 2 / 255, generator=gen(1))
    adaptive = pgd_median(model, x, hr, LOSS, EPS, 5, 2 / 255, target=TARGET, generator=gen(1))
    assert bool(
        (smoothed_loss(model, adaptive, hr, TARGET) >= smoothed_loss(model, transfer, hr, TARGET)).all()
    )


def test_on_a_plain_model_both_adaptive_attacks_are_pgd() -> None:
    model = tiny_srvgg()
    x, hr = batch()
    reference = pgd(model, x, hr, LOSS, EPS, 3, 2 / 255, generator=gen(5))
    for target in (SmoothingTarget(0.0, 21, seed=3), SmoothingTarget(0.06, 1, seed=3)):
        assert target.plain
        eot = pgd_eot(
            model, x, hr, LOSS, EPS, 3, 2 / 255, target=target, generator=gen(5), noise_generator=gen(9)
        )
        median = pgd_median(model, x, hr, LOSS, EPS, 3, 2 / 255, target=target, generator=gen(5))
        assert torch.equal(eot, reference) and torch.equal(median, reference)
    for name in ("pgd-eot", "pgd-median"):
        config = EVAL_ATTACKS[name].replace(steps=3)
        out = run_attack(config, model, x, hr, LOSS, generator=gen(5))  # target None: a plain model
        assert torch.equal(out, pgd(model, x, hr, LOSS, EPS, 3, 2 / 255, generator=gen(5)))


def test_chunked_median_gradient_equals_one_pass() -> None:
    model = tiny_rrdbnet()
    x, hr = batch()
    for n in (5, 4):  # odd: one middle sample; even: the mean of two
        target = SmoothingTarget(0.06, n, seed=1)
        noise = deployed_noise(target, (3, 12, 12), "cpu")
        whole = median_gradient(model, x, hr, LOSS, 0.06, noise)
        assert float(whole.abs().sum()) > 0
        for chunk in (1, 2, 3):
            torch.testing.assert_close(
                median_gradient(model, x, hr, LOSS, 0.06, noise, chunk_size=chunk),
                whole,
                atol=1e-6,
                rtol=1e-4,
            )


def test_chunked_eot_gradient_equals_one_pass_and_is_the_mean_of_the_draws() -> None:
    model = tiny_srvgg()
    x, hr = batch()
    noise = torch.randn(4, *x.shape, generator=gen(3))
    whole = eot_gradient(model, x, hr, LOSS, 0.06, noise)
    torch.testing.assert_close(eot_gradient(model, x, hr, LOSS, 0.06, noise, chunk_size=3), whole)
    singles = sum(eot_gradient(model, x, hr, LOSS, 0.06, noise[j : j + 1]) for j in range(4)) / 4
    torch.testing.assert_close(whole, singles, atol=1e-7, rtol=1e-5)


def test_pgd_eot_does_not_depend_on_the_deployed_seed_and_draws_fresh_noise() -> None:
    model = tiny_srvgg()
    x, hr = batch()

    def run(seed: int, noise_seed: int) -> torch.Tensor:
        target = SmoothingTarget(0.06, 5, seed=seed)
        return pgd_eot(
            model,
            x,
            hr,
            LOSS,
            EPS,
            3,
            target=target,
            eot_samples=2,
            generator=gen(1),
            noise_generator=gen(noise_seed),
        )

    assert torch.equal(run(0, 7), run(12345, 7))  # the attacker does not know the seed
    assert not torch.equal(run(0, 7), run(0, 8))  # the draws matter
    # pgd-median does use the seed: another seed, another noise field, another attack.
    a = pgd_median(model, x, hr, LOSS, EPS, 3, target=SmoothingTarget(0.06, 5, seed=0), generator=gen(1))
    b = pgd_median(model, x, hr, LOSS, EPS, 3, target=SmoothingTarget(0.06, 5, seed=1), generator=gen(1))
    assert not torch.equal(a, b)


def test_adaptive_attacks_leave_model_gradients_alone_and_validate() -> None:
    model = tiny_srvgg()
    x, hr = batch()
    pgd_median(model, x, hr, LOSS, EPS, 2, target=TARGET, generator=gen(0), chunk_size=2)
    pgd_eot(model, x, hr, LOSS, EPS, 2, target=TARGET, eot_samples=2, noise_generator=gen(0), chunk_size=1)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(InputError, match="samples"):
        SmoothingTarget(0.06, 0)
    with pytest.raises(InputError, match="sigma"):
        SmoothingTarget(-0.1, 5)
    with pytest.raises(InputError, match="eot_samples"):
        pgd_eot(model, x, hr, LOSS, EPS, 2, target=TARGET, eot_samples=0)
    with pytest.raises(InputError, match="eot_samples"):
        AttackConfig("pgd-eot", eot_samples=0)
    with pytest.raises(InputError, match=r"values in \[0, 1\]"):
        pgd_median(model, x + 2, hr, LOSS, EPS, 2, target=TARGET)


def test_presets_give_the_adaptive_attacks_pgds_settings() -> None:
    base = EVAL_ATTACKS["pgd"]
    for name in ("pgd-eot", "pgd-median"):
        c = EVAL_ATTACKS[name]
        assert (c.eps, c.steps, c.step_size, c.random_start) == (base.eps, base.steps, base.step_size, True)
    assert EVAL_ATTACKS["pgd-eot"].eot_samples == 8
    assert "8 fresh noise draws" in EVAL_ATTACKS["pgd-eot"].describe()
    assert "knows the seed" in EVAL_ATTACKS["pgd-median"].describe()
    bim = EVAL_ATTACKS["bim"]
    assert bim.step_size is None and bim.describe() == "BIM eps=10/255, 10 steps of 1/255"  # alpha = eps / T


def test_pgd_eot_draws_new_noise_at_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    import certsr_rt.attacks.smoothed as smoothed_module

    seen: list[torch.Tensor] = []
    original = smoothed_module.eot_gradient

    def recording(model, x, hr, loss_fn, sigma, noise, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append(noise.clone())
        return original(model, x, hr, loss_fn, sigma, noise, **kwargs)

    monkeypatch.setattr(smoothed_module, "eot_gradient", recording)
    model = tiny_srvgg()
    x, hr = batch()
    pgd_eot(model, x, hr, LOSS, EPS, 3, target=TARGET, eot_samples=2, noise_generator=gen(0))
    assert len(seen) == 3 and all(s.shape == (2, *x.shape) for s in seen)
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    # ... and none of them is the deployed field the attacker does not know.
    deployed = deployed_noise(TARGET, tuple(x.shape[1:]), "cpu")
    assert all(not torch.allclose(s[:, 0], deployed[:2]) for s in seen)
