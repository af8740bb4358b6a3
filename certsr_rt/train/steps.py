"""One training update: the paper's MRS step and the adversarial step, sharing the loss and the GAN update.

One iteration (global batch of ``B`` LR/HR crop pairs; with ``N`` processes each takes ``B / N``):

:func:`mrs_step`
    Each LR crop is copied ``draws`` times per sigma in ``sigmas`` and, with ``clean``, once more
    unchanged (the paper: 2 x sigma 0.03, 2 x sigma 0.2, 1 clean = 5 copies). Noisy copies get
    ``N(0, sigma^2)`` noise, not clamped (the smoothing theory is for unclipped noise). All copies go
    through the generator as one batch. Each sigma group's predictions are reduced by the per-pixel median
    over its draws (:func:`certsr_rt.smoothing.median`: the mean for 2 draws); the clean copy is its own
    group. The ESRGAN generator loss is computed for each group's reduced prediction as if it were a batch
    of its own, and **the group losses are averaged** (equal weight per group).
:func:`adversarial_step` (``ad-fgsm`` / ``ad-bim`` / ``ad-pgd`` / ``ad-cw``)
    The attack is run against the current generator on the SR loss ``L1 + L_percep`` (unit weights,
    equations 1-2 of the paper) and the generator is trained on the adversarial LR crops only: one group.

Both then make the same update (:func:`update`): generator loss per group
``pixel_weight * L1 + perceptual_weight * L_percep + gan_weight * L_RaGAN`` averaged over the groups,
backward, the generator's optimiser step, with a discriminator (:class:`GAN`) its update on the HR crops
(real) against every group's reduced prediction (fake), the loss scaler's update and the EMA update.

Random draws, in this order per iteration: the discriminator's sub-crop position (with a GAN), then the MRS
noise, both from the caller's CPU ``noise_generator``; attacks draw from their own generator
(:func:`attack_generator`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from certsr_rt.train.distributed import DistInfo, all_reduce_grads

if TYPE_CHECKING:
    from certsr_rt.attacks import AttackConfig
    from certsr_rt.losses import PerceptualLoss, RelativisticAverageGANLoss, SRLoss

__all__ = [
    "GAN",
    "GeneratorPass",
    "LossWeights",
    "MRSGroups",
    "Predict",
    "StepParts",
    "adversarial_predict",
    "adversarial_predictions",
    "adversarial_step",
    "attack_generator",
    "discriminator_update",
    "generator_backward",
    "mrs_predict",
    "mrs_predictions",
    "mrs_step",
    "update",
    "update_ema",
]

Predict = Callable[[], list[torch.Tensor]]
"""Makes one iteration's group predictions (called under autocast, after the sub-crop draw)."""


@dataclass(frozen=True)
class MRSGroups:
    """The MRS copies of each LR crop: ``draws`` noisy copies per sigma, and one clean copy if ``clean``."""

    sigmas: tuple[float, ...]
    draws: int
    clean: bool


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator loss's L1 and perceptual terms (the GAN weight lives in :class:`GAN`)."""

    pixel: float
    perceptual: float


@dataclass
class GAN:
    """ESRGAN's VGG-style discriminator, its optimiser and the relativistic average GAN loss.

    Attributes:
        net: the discriminator; it takes ``size`` x ``size`` inputs.
        optimizer: its optimiser.
        loss: the RaGAN loss (its weight is the generator term's ``gan_weight``).
        size: the discriminator's input size (128 or 256).
        hr_crop: the HR crop size; larger crops are sub-cropped to ``size`` at one position per iteration.
    """

    net: nn.Module
    optimizer: torch.optim.Optimizer
    loss: RelativisticAverageGANLoss
    size: int
    hr_crop: int

    def crop_position(self, noise_generator: torch.Generator) -> tuple[int, int]:
        """One random sub-crop position per iteration, the same for real and fake (drawn even if unused)."""
        span = self.hr_crop - self.size + 1
        pos = torch.randint(0, span, (2,), generator=noise_generator)
        return int(pos[0]), int(pos[1])

    def view(self, t: torch.Tensor, pos: tuple[int, int]) -> torch.Tensor:
        """The discriminator's sub-crop of ``t`` at ``pos``."""
        top, left = pos
        return t[..., top : top + self.size, left : left + self.size]


@dataclass
class StepParts:
    """What a step reads and updates (the trainer builds it once).

    Attributes:
        generator: the generator that is trained (DistributedDataParallel-wrapped under ``torchrun``).
        module: the same generator unwrapped: attacks run on it (their input gradients must not trigger
            DDP's reducer) and the EMA follows it.
        ema: the generator's exponential moving average.
        optimizer: the generator's optimiser.
        scaler: the loss scaler (enabled for fp16 autocast only).
        weights: the L1 and perceptual weights.
        perceptual: the perceptual loss, or ``None`` when its weight is 0 and no attack needs it.
        gan: the discriminator part, or ``None`` with ``gan_weight`` 0.
        noise_generator: the CPU generator of the MRS noise and the sub-crop positions.
        amp_dtype: the autocast dtype, or ``None`` for fp32.
        device: the training device.
        dist: this process's place in the group.
        ema_decay: the EMA's decay per update.
    """

    generator: nn.Module
    module: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    weights: LossWeights
    perceptual: PerceptualLoss | None
    gan: GAN | None
    noise_generator: torch.Generator
    amp_dtype: torch.dtype | None
    device: torch.device
    dist: DistInfo
    ema_decay: float

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to ``amp_dtype`` on the training device, or nothing for fp32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


class GeneratorPass(NamedTuple):
    """What :func:`generator_backward` leaves for the rest of the update."""

    logs: dict[str, float]
    """The generator's losses ``l_g``, ``l_pix``, ``l_percep``, ``l_gan`` (weighted, group-averaged)."""
    preds: list[torch.Tensor]
    """The groups' predictions, detached (the discriminator's fakes)."""
    pos: tuple[int, int]
    """The discriminator's sub-crop position (``(0, 0)`` without a GAN)."""


# --- the two ways of making the groups' predictions -----------------------------------------------------


def mrs_predictions(
    generator: nn.Module,
    lr: torch.Tensor,
    groups: MRSGroups,
    noise_generator: torch.Generator,
    *,
    global_batch: int,
    offset: int = 0,
) -> list[torch.Tensor]:
    """Generator outputs of the MRS copies of ``lr``, reduced per group: one ``b x C x H x W`` per group.

    Args:
        generator: the generator.
        lr: this process's LR crops (``b`` of them).
        groups: the sigmas, draws per sigma and the clean copy.
        noise_generator: the CPU generator the noise is drawn from.
        global_batch: the global batch size: every process draws the whole global batch's noise (so the
            generator's state is the same everywhere) and keeps its slice.
        offset: the index of this process's first crop in the global batch.

    Returns:
        The sigma groups' per-pixel medians over their draws, in ``groups.sigmas`` order, then the clean
        copy's prediction.
    """
    from certsr_rt.smoothing.aggregate import median

    b = lr.shape[0]
    n_sigma, draws = len(groups.sigmas), groups.draws
    parts = []
    if n_sigma:
        shape = (n_sigma * draws, global_batch, *lr.shape[1:])
        noise = torch.randn(shape, generator=noise_generator, dtype=torch.float32)
        noise = noise[:, offset : offset + b].to(lr.device, non_blocking=True)
        sigmas = torch.tensor(groups.sigmas, dtype=torch.float32, device=lr.device)
        sigmas = sigmas.repeat_interleave(draws).view(-1, 1, 1, 1, 1)
        parts.append((lr.unsqueeze(0) + sigmas * noise).flatten(0, 1))
    if groups.clean:
        parts.append(lr)
    out = generator(torch.cat(parts) if len(parts) > 1 else parts[0])
    preds = []
    if n_sigma:
        noisy = out[: n_sigma * draws * b].view(n_sigma, draws, b, *out.shape[1:])
        preds += [median(noisy[k], dim=0) for k in range(n_sigma)]
    if groups.clean:
        preds.append(out[n_sigma * draws * b :])
    return preds


def attack_generator(seed: int, iteration: int, rank: int) -> torch.Generator:
    """The attack's random generator of one iteration on one process (PGD's random start)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed((seed * 1_000_003 + iteration * 1009 + rank) % (2**63 - 1))
    return gen


def adversarial_predictions(
    generator: nn.Module,
    module: nn.Module,
    lr: torch.Tensor,
    hr: torch.Tensor,
    attack: AttackConfig,
    attack_loss: SRLoss,
    rng: torch.Generator,
) -> list[torch.Tensor]:
    """The generator's output on adversarial LR crops: one group.

    Args:
        generator: the generator that is trained (possibly DDP-wrapped).
        module: the same generator unwrapped, which the attack runs against.
        lr: this process's LR crops.
        hr: the matching HR crops (the attack's targets).
        attack: the attack and its settings.
        attack_loss: the attack objective (the paper's ``L1 + L_percep``).
        rng: the attack's random generator (:func:`attack_generator`).
    """
    from certsr_rt.attacks import run_attack

    x_adv = run_attack(attack, module, lr, hr, attack_loss, generator=rng)
    return [generator(x_adv)]


# --- the update, written once ---------------------------------------------------------------------------


def generator_backward(parts: StepParts, predict: Predict, hr: torch.Tensor, iteration: int) -> GeneratorPass:
    """Zero the generator's gradients, compute its loss on the groups ``predict`` makes, backpropagate.

    Args:
        parts: the step's modules.
        predict: makes the groups' predictions (:func:`mrs_predictions`, :func:`adversarial_predictions`).
        hr: this process's HR crops.
        iteration: 0-based index of the update (for the error message).

    Raises:
        FloatingPointError: the loss is not finite.
    """
    gan, w = parts.gan, parts.weights
    parts.optimizer.zero_grad(set_to_none=True)
    if gan is not None:
        gan.net.requires_grad_(False)
        pos = gan.crop_position(parts.noise_generator)
    else:
        pos = (0, 0)
    with parts.autocast():
        preds = predict()
        real_pred = gan.net(gan.view(hr, pos)).detach() if gan is not None else None
        l_pix = l_percep = l_gan = hr.new_zeros((), dtype=torch.float32)
        if w.perceptual > 0:
            # All groups through VGG as one batch, the HR features once (not once per group).
            assert parts.perceptual is not None
            l_percep = w.perceptual * parts.perceptual.group_losses(preds, hr).float().sum()
        for pred in preds:
            if w.pixel > 0:
                l_pix = l_pix + w.pixel * F.l1_loss(pred.float(), hr)
            if gan is not None:
                assert real_pred is not None
                fake_pred = gan.net(gan.view(pred, pos))
                l_gan = l_gan + gan.loss.generator_loss(real_pred.float(), fake_pred.float())
        groups = len(preds)
        l_pix, l_percep, l_gan = l_pix / groups, l_percep / groups, l_gan / groups
        l_g = l_pix + l_percep + l_gan
    if not torch.isfinite(l_g):
        raise FloatingPointError(f"generator loss became {l_g.item()} at iteration {iteration + 1}")
    parts.scaler.scale(l_g).backward()
    logs = {"l_g": l_g.item(), "l_pix": l_pix.item(), "l_percep": l_percep.item(), "l_gan": l_gan.item()}
    return GeneratorPass(logs, [p.detach() for p in preds], pos)


def discriminator_update(
    parts: StepParts, hr: torch.Tensor, preds: Sequence[torch.Tensor], pos: tuple[int, int]
) -> float:
    """One discriminator update: HR crops real, every group's prediction fake, the group losses averaged.

    The gradients are averaged over the processes by hand (:func:`all_reduce_grads`): the discriminator
    runs several forward passes before one backward, which DistributedDataParallel does not allow.

    Returns:
        The discriminator loss.
    """
    gan = parts.gan
    assert gan is not None
    gan.net.requires_grad_(True)
    gan.optimizer.zero_grad(set_to_none=True)
    with parts.autocast():
        real_pred = gan.net(gan.view(hr, pos)).float()
        l_d = real_pred.new_zeros(())
        for pred in preds:
            fake_pred = gan.net(gan.view(pred, pos)).float()
            l_d = l_d + gan.loss.discriminator_loss(real_pred, fake_pred)
        l_d = l_d / len(preds)
    parts.scaler.scale(l_d).backward()
    all_reduce_grads(gan.net.parameters(), parts.dist)
    parts.scaler.step(gan.optimizer)
    return float(l_d.item())


@torch.no_grad()
def update_ema(ema: nn.Module, module: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * module`` for the parameters; buffers are copied."""
    weight = 1.0 - decay
    for p_ema, p in zip(ema.parameters(), module.parameters(), strict=True):
        p_ema.lerp_(p.detach(), weight)
    for b_ema, b in zip(ema.buffers(), module.buffers(), strict=True):
        b_ema.copy_(b)


def update(parts: StepParts, predict: Predict, hr: torch.Tensor, iteration: int) -> dict[str, float]:
    """The whole update on the groups ``predict`` makes: generator, discriminator, loss scaler, EMA.

    Returns:
        This process's losses of the iteration: ``l_g``, ``l_pix``, ``l_percep``, ``l_gan``, ``l_d``.
    """
    logs, preds, pos = generator_backward(parts, predict, hr, iteration)
    parts.scaler.step(parts.optimizer)
    logs["l_d"] = discriminator_update(parts, hr, preds, pos) if parts.gan is not None else 0.0
    parts.scaler.update()
    update_ema(parts.ema, parts.module, parts.ema_decay)
    return logs


# --- the two steps --------------------------------------------------------------------------------------


def mrs_predict(parts: StepParts, lr: torch.Tensor, groups: MRSGroups, *, global_batch: int) -> Predict:
    """The :data:`Predict` of the MRS step: :func:`mrs_predictions` of this process's crops ``lr``."""
    offset = parts.dist.rank * lr.shape[0]

    def predict() -> list[torch.Tensor]:
        return mrs_predictions(
            parts.generator, lr, groups, parts.noise_generator, global_batch=global_batch, offset=offset
        )

    return predict


def adversarial_predict(
    parts: StepParts,
    lr: torch.Tensor,
    hr: torch.Tensor,
    iteration: int,
    attack: AttackConfig,
    attack_loss: SRLoss,
    *,
    seed: int,
) -> Predict:
    """The :data:`Predict` of the adversarial step: :func:`adversarial_predictions` of ``lr``.

    The attack's generator is seeded from ``(seed, iteration, rank)`` (:func:`attack_generator`).
    """

    def predict() -> list[torch.Tensor]:
        rng = attack_generator(seed, iteration, parts.dist.rank)
        return adversarial_predictions(parts.generator, parts.module, lr, hr, attack, attack_loss, rng)

    return predict


def mrs_step(
    parts: StepParts,
    lr: torch.Tensor,
    hr: torch.Tensor,
    iteration: int,
    groups: MRSGroups,
    *,
    global_batch: int,
) -> dict[str, float]:
    """The paper's MRS fine-tuning step on this process's slice of the global batch.

    The generator is trained on the per-group medians of its predictions for noisy copies of ``lr``
    (:func:`mrs_predictions`), each group's loss against ``hr`` weighing the same (:func:`update`).

    Args:
        parts: the step's modules.
        lr: this process's LR crops.
        hr: the matching HR crops.
        iteration: 0-based index of the update.
        groups: the MRS copies.
        global_batch: the global batch size (see :func:`mrs_predictions`).

    Returns:
        This process's losses of the iteration.
    """
    return update(parts, mrs_predict(parts, lr, groups, global_batch=global_batch), hr, iteration)


def adversarial_step(
    parts: StepParts,
    lr: torch.Tensor,
    hr: torch.Tensor,
    iteration: int,
    attack: AttackConfig,
    attack_loss: SRLoss,
    *,
    seed: int,
) -> dict[str, float]:
    """The adversarial fine-tuning step: the generator is trained on attacked LR crops only.

    Args:
        parts: the step's modules.
        lr: this process's LR crops.
        hr: the matching HR crops.
        iteration: 0-based index of the update (seeds the attack with ``seed`` and the rank).
        attack: the attack and its settings.
        attack_loss: the attack objective.
        seed: the run's seed.

    Returns:
        This process's losses of the iteration.
    """
    predict = adversarial_predict(parts, lr, hr, iteration, attack, attack_loss, seed=seed)
    return update(parts, predict, hr, iteration)
