"""The fine-tuning loop: MRS fine-tuning and adversarial fine-tuning of an SR generator.

One iteration (global batch of ``B`` LR/HR crop pairs; with ``N`` processes each takes ``B / N``):

``mrs``
    Each LR crop is copied ``mrs_draws`` times per sigma in ``mrs_sigmas`` and, with ``mrs_clean``, once
    more unchanged (the paper: 2 x sigma 0.03, 2 x sigma 0.2, 1 clean = 5 copies). Noisy copies get
    ``N(0, sigma^2)`` noise, not clamped (the smoothing theory is for unclipped noise). All copies go
    through the generator as one batch. Each sigma group's predictions are reduced by the per-pixel median
    over its draws (:func:`certsr_rt.smoothing.median`: the mean for 2 draws); the clean copy is its own
    group. The ESRGAN generator loss is computed for each group's reduced prediction as if it were a batch
    of its own, and **the group losses are averaged** (equal weight per group).
``ad-fgsm`` / ``ad-bim`` / ``ad-pgd`` / ``ad-cw``
    The attack (the paper's training settings, :data:`certsr_rt.attacks.TRAIN_ATTACKS`, overridable) is run
    against the current generator on the SR loss ``L1 + L_percep`` (unit weights, equations 1-2 of the
    paper) and the generator is trained on the adversarial LR crops only.

Generator loss per group: ``pixel_weight * L1 + perceptual_weight * L_percep + gan_weight * L_RaGAN``.
With ``gan_weight > 0`` a VGG-style discriminator is trained after each generator update on the HR crops
(real) against every group's reduced prediction (fake), the group losses again averaged. It takes 128 or
256 pixel inputs (256 when ``hr_crop >= 256``), so larger HR crops are sub-cropped to that size at one
random position per iteration, the same for real and fake. ``gan_weight = 0`` skips it entirely.

Randomness, and why resume is exact:

* data — a pure function of ``(seed, sample index)`` (:mod:`certsr_rt.train.data`); iteration ``i`` reads
  samples ``i*B ..``;
* MRS noise and discriminator sub-crop positions — a CPU ``torch.Generator`` owned by the trainer, seeded
  with ``seed``, drawing the *global* batch's noise on every process (each keeps its slice), so its state is
  the same on all processes and is saved in each checkpoint; CPU draws make the noise the same on any device;
* attacks (PGD's random start) — a generator seeded from ``(seed, iteration, rank)`` each iteration.

Every checkpoint stores the generator (``params``), its EMA (``params_ema``), both optimizers, the
discriminator, the loss scaler, the noise generator's state and the partial loss-log window, so a run that
is killed and resumed from its last checkpoint produces bit-identical weights on the same device.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from certsr_rt._device import resolve_device
from certsr_rt.errors import InputError
from certsr_rt.train.checkpoint import (
    STATE_FORMAT,
    atomic_save,
    checkpoint_paths,
    find_latest_state,
    generator_payload,
    load_state_file,
    prune_checkpoints,
    publish_latest,
)
from certsr_rt.train.config import TrainConfig
from certsr_rt.train.data import CropStream, StreamBatchSampler
from certsr_rt.train.distributed import (
    DistInfo,
    all_reduce_grads,
    all_reduce_mean,
    any_true,
    barrier,
    cleanup_distributed,
    init_distributed,
)

__all__ = ["LOG_KEYS", "TrainResult", "Trainer", "train"]

LOG_KEYS = ("l_g", "l_pix", "l_percep", "l_gan", "l_d")
"""Losses recorded per iteration: generator total, its L1 / perceptual / GAN parts (weighted, averaged
over groups), and the discriminator loss (0 without a discriminator)."""

# Settings that define the optimisation trajectory: a resume must not change them.
_TRAJECTORY_KEYS = (
    "mode",
    "hr_crop",
    "augment",
    "quantize_lr",
    "batch_size",
    "lr",
    "betas",
    "lr_milestones",
    "lr_gamma",
    "ema_decay",
    "pixel_weight",
    "perceptual_weight",
    "perceptual_layers",
    "gan_weight",
    "disc_lr",
    "disc_num_feat",
    "mrs_sigmas",
    "mrs_draws",
    "mrs_clean",
    "attack_eps",
    "attack_steps",
    "attack_step_size",
    "attack_c",
    "attack_lr",
    "seed",
)


@dataclass(frozen=True)
class TrainResult:
    """What a call of :meth:`Trainer.run` did.

    Attributes:
        iteration: generator updates completed in total (including those before a resume).
        generator_file: the newest generator checkpoint (loader format), or ``None`` if none was written.
        state_file: the matching training-state file, or ``None``.
        stop_reason: ``"done"``, ``"time limit"``, ``"signal"`` or ``"stop_after"``.
        elapsed_s: wall time of this call.
        iterations_run: updates done by this call.
        signal: for ``"signal"``, the signal's number (``SIGINT`` 2, ``SIGTERM`` 15); the CLI exits with
            128 + it after the checkpoint is written.
    """

    iteration: int
    generator_file: Path | None
    state_file: Path | None
    stop_reason: str
    elapsed_s: float
    iterations_run: int
    signal: int | None = None


def _resolve_device(name: str, dist_info: DistInfo) -> torch.device:
    """The shared resolution, then under DDP each process on its local rank's GPU."""
    device = resolve_device(name)
    if device.type == "cuda" and (dist_info.enabled or device.index is None):
        device = torch.device("cuda", dist_info.local_rank if dist_info.enabled else 0)
    return device


def _wants_cuda(name: str) -> bool:
    return name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())


def _hms(seconds: float) -> str:
    """``H:MM:SS`` with unbounded hours (``time.strftime`` would wrap at one day)."""
    total = int(seconds)
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


class _Progress:
    """A one-line progress bar on a terminal, or one line per log interval when redirected to a file."""

    def __init__(self, total: int, start: int, enabled: bool, every: int) -> None:
        self.total = total
        self.start = start
        self.enabled = enabled
        self.every = every
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()

    def update(self, done: int, logs: dict[str, float]) -> None:
        if not self.enabled or (not self.tty and done % self.every and done != self.total):
            return
        elapsed = time.monotonic() - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        eta_s = "--:--:--" if not math.isfinite(eta) else _hms(eta)
        frac = done / self.total if self.total else 1.0
        bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
        losses = " ".join(f"{k} {v:.4g}" for k, v in logs.items() if k in ("l_g", "l_d"))
        line = f"[{bar}] {done}/{self.total} {rate:.2f} it/s ETA {eta_s} {losses}"
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr, flush=True)


class Trainer:
    """Builds everything a run needs from a :class:`TrainConfig` and runs the loop.

    Under ``torchrun`` each process builds its own trainer; the generator is wrapped in
    DistributedDataParallel, the discriminator's gradients are averaged by hand (see
    :func:`certsr_rt.train.distributed.all_reduce_grads`), and rank 0 writes checkpoints and logs.

    Args:
        config: the run's settings.
        log: where rank 0's messages go (default: stderr).

    Raises:
        InputError: bad settings or data; ``ModelLoadError`` for a model or VGG file that cannot be read.
    """

    def __init__(self, config: TrainConfig, *, log: Callable[[str], None] | None = None) -> None:
        from certsr_rt.models import load_model

        if config.hr_dir is None:
            raise InputError("training needs HR images: set hr_dir (--hr-dir) to a folder of images")
        self.config = config
        self.dist = init_distributed(_wants_cuda(config.device))
        self._log_fn = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.device = _resolve_device(config.device, self.dist)
        self.output_dir = Path(config.output_dir)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        # --- generator and its EMA -------------------------------------------------------------------
        base = load_model(config.model, device="cpu")
        self.architecture = base.architecture
        self.hyperparameters = dict(base.hyperparameters)
        self.scale = int(base.scale)
        self.in_channels = int(base.in_channels)
        self.base_default_sigma = base.default_sigma
        stem = Path(config.model).stem if _is_path(config.model) else config.model
        self.model_name = config.name or f"{stem}-{config.mode}"
        self.net_g: nn.Module = base.module.float().to(self.device).train().requires_grad_(True)
        self.net_g_ema: nn.Module = copy.deepcopy(self.net_g).eval().requires_grad_(False)
        del base

        # --- data (checked before the slow parts: VGG weights, discriminator) -------------------------
        self.dataset = CropStream(
            config.hr_dir,
            scale=self.scale,
            hr_crop=config.hr_crop,
            lr_dir=config.lr_dir,
            augment=config.augment,
            quantize_lr=config.quantize_lr,
            seed=config.seed,
            channels=self.in_channels,
            log=self.log,
        )
        if config.batch_size % self.dist.world_size:
            raise InputError(
                "the global batch_size must be divisible by the number of processes "
                f"({self.dist.world_size}), got {config.batch_size}"
            )
        self.local_batch = config.batch_size // self.dist.world_size
        if config.use_gan and config.hr_crop < 128:
            raise InputError(
                f"the VGG-style discriminator needs HR crops of at least 128 pixels, got hr_crop="
                f"{config.hr_crop} (raise hr_crop or disable the GAN with gan_weight 0)"
            )

        # --- losses ----------------------------------------------------------------------------------
        from certsr_rt.losses import PerceptualLoss, RelativisticAverageGANLoss, SRLoss

        self.perceptual: nn.Module | None = None
        if config.perceptual_weight > 0 or config.adversarial:
            self.perceptual = PerceptualLoss(
                config.perceptual_weights, config.perceptual_layer_weights(), device=self.device
            )
        self.attack_loss = SRLoss(self.perceptual, l1_weight=1.0, perceptual_weight=1.0)
        self.gan_loss = RelativisticAverageGANLoss(config.gan_weight) if config.use_gan else None

        # --- discriminator (built from the seed, so every process starts from the same weights) ------
        self.net_d: nn.Module | None = None
        self.d_size = 0
        if config.use_gan:
            from certsr_rt.models.discriminator import VGGStyleDiscriminator

            self.d_size = 256 if config.hr_crop >= 256 else 128
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                self.net_d = VGGStyleDiscriminator(self.in_channels, config.disc_num_feat, self.d_size)
            self.net_d.to(self.device).train()

        # --- optimisers, mixed precision ---------------------------------------------------------------
        self.opt_g = torch.optim.Adam(self.net_g.parameters(), lr=config.lr, betas=config.betas)
        self.opt_d = (
            torch.optim.Adam(self.net_d.parameters(), lr=config.disc_lr, betas=config.betas)
            if self.net_d is not None
            else None
        )
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        # --- attacks -----------------------------------------------------------------------------------
        self.attack_config = None
        if config.adversarial:
            from certsr_rt.attacks import attack_preset

            preset = attack_preset(str(config.attack_name), "train")
            changes: dict[str, Any] = {}
            for key, field_name in (
                ("attack_eps", "eps"),
                ("attack_steps", "steps"),
                ("attack_step_size", "step_size"),
                ("attack_c", "c"),
                ("attack_lr", "learning_rate"),
            ):
                value = getattr(config, key)
                if value is not None:
                    changes[field_name] = value
            self.attack_config = preset.replace(**changes) if changes else preset

        self.noise_generator = torch.Generator(device="cpu")
        self.noise_generator.manual_seed(config.seed)

        self.iteration = 0
        self.elapsed_total_s = 0.0
        self._window: dict[str, float] = dict.fromkeys(LOG_KEYS, 0.0)
        self._window_count = 0
        self.stop_signal: int | None = None  # the signal number that stopped the run, if any
        self.last_generator_file: Path | None = None
        self.last_state_file: Path | None = None

        self._maybe_resume()

        self.g_train: nn.Module = self.net_g
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_train = DistributedDataParallel(self.net_g, device_ids=ids)

    # ------------------------------------------------------------------------------------------------
    # small helpers

    def log(self, message: str) -> None:
        """Print ``message`` on rank 0."""
        if self.dist.is_main:
            self._log_fn(message)

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.config.amp
        if amp == "off":
            return None
        if self.device.type != "cuda":
            # CPU autocast is bfloat16 only, and opt-in: 'auto' keeps fp32 on the CPU.
            if amp == "fp16":
                raise InputError("amp 'fp16' is for CUDA; on the CPU use 'bf16' or 'off'")
            return torch.bfloat16 if amp == "bf16" else None
        if amp == "fp16":
            return torch.float16
        if amp == "bf16":
            if not torch.cuda.is_bf16_supported():
                raise InputError("amp 'bf16' requested but this GPU does not support bfloat16 (use fp16)")
            return torch.bfloat16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def lr_factor(self, iteration: int) -> float:
        """Learning-rate multiplier for the update with 0-based index ``iteration`` (MultiStepLR)."""
        passed = sum(1 for m in self.config.lr_milestones if iteration >= m)
        return self.config.lr_gamma**passed

    @property
    def recommended_sigma(self) -> float | None:
        """The sigma written into the checkpoints' metadata (see ``TrainConfig.default_sigma``)."""
        if self.config.default_sigma is not None:
            return self.config.default_sigma
        if self.config.mode == "mrs" and self.config.mrs_sigmas:
            return min(self.config.mrs_sigmas)
        return self.base_default_sigma

    # ------------------------------------------------------------------------------------------------
    # data

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's slice of the global batch of ``iteration``, on the training device."""
        first = iteration * self.config.batch_size + self.dist.rank * self.local_batch
        pairs = [self.dataset[k] for k in range(first, first + self.local_batch)]
        lr = torch.stack([p[0] for p in pairs]).to(self.device)
        hr = torch.stack([p[1] for p in pairs]).to(self.device)
        return lr, hr

    def _batches(self, start: int, stop: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from torch.utils.data import DataLoader

        workers = self.config.num_workers
        if workers is None:
            workers = 4 if self.device.type == "cuda" else 0
        sampler = StreamBatchSampler(
            self.config.batch_size, start, stop, self.dist.rank, self.dist.world_size
        )
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=2 if workers > 0 else None,
        )
        for lr, hr in loader:
            yield lr.to(self.device, non_blocking=True), hr.to(self.device, non_blocking=True)

    # ------------------------------------------------------------------------------------------------
    # the step

    def _mrs_predictions(self, lr: torch.Tensor) -> list[torch.Tensor]:
        """Generator outputs reduced per MRS group: one ``b x C x H x W`` tensor per group."""
        from certsr_rt.smoothing.aggregate import median

        cfg = self.config
        b = lr.shape[0]
        n_sigma, draws = len(cfg.mrs_sigmas), cfg.mrs_draws
        parts = []
        if n_sigma:
            # The global batch's noise on every process (same generator state everywhere), then our slice.
            shape = (n_sigma * draws, cfg.batch_size, *lr.shape[1:])
            noise = torch.randn(shape, generator=self.noise_generator, dtype=torch.float32)
            start = self.dist.rank * self.local_batch
            noise = noise[:, start : start + b].to(self.device, non_blocking=True)
            sigmas = torch.tensor(cfg.mrs_sigmas, dtype=torch.float32, device=self.device)
            sigmas = sigmas.repeat_interleave(draws).view(-1, 1, 1, 1, 1)
            parts.append((lr.unsqueeze(0) + sigmas * noise).flatten(0, 1))
        if cfg.mrs_clean:
            parts.append(lr)
        out = self.g_train(torch.cat(parts) if len(parts) > 1 else parts[0])
        preds = []
        if n_sigma:
            noisy = out[: n_sigma * draws * b].view(n_sigma, draws, b, *out.shape[1:])
            preds += [median(noisy[k], dim=0) for k in range(n_sigma)]
        if cfg.mrs_clean:
            preds.append(out[n_sigma * draws * b :])
        return preds

    def _adversarial_predictions(
        self, lr: torch.Tensor, hr: torch.Tensor, iteration: int
    ) -> list[torch.Tensor]:
        from certsr_rt.attacks import run_attack

        assert self.attack_config is not None
        gen = torch.Generator(device="cpu")
        gen.manual_seed((self.config.seed * 1_000_003 + iteration * 1009 + self.dist.rank) % (2**63 - 1))
        # The attack runs on the bare module: its input gradients must not trigger DDP's reducer.
        x_adv = run_attack(self.attack_config, self.net_g, lr, hr, self.attack_loss, generator=gen)
        return [self.g_train(x_adv)]

    def _disc_crop_position(self) -> tuple[int, int]:
        """One random sub-crop position for the discriminator per iteration (drawn even if unused)."""
        span = self.config.hr_crop - self.d_size + 1
        pos = torch.randint(0, span, (2,), generator=self.noise_generator)
        return int(pos[0]), int(pos[1])

    def _disc_view(self, t: torch.Tensor, pos: tuple[int, int]) -> torch.Tensor:
        top, left = pos
        return t[..., top : top + self.d_size, left : left + self.d_size]

    def generator_backward(
        self, lr: torch.Tensor, hr: torch.Tensor, iteration: int
    ) -> tuple[dict[str, float], list[torch.Tensor], tuple[int, int]]:
        """Zero the generator's gradients, compute its loss on this batch slice, and backpropagate.

        Args:
            lr: this process's LR crops.
            hr: the matching HR crops.
            iteration: 0-based index of the update (seeds the attack).

        Returns:
            The per-iteration losses, the groups' detached predictions (for the discriminator) and the
            discriminator sub-crop position.
        """
        cfg = self.config
        self.opt_g.zero_grad(set_to_none=True)
        if self.net_d is not None:
            self.net_d.requires_grad_(False)
            pos = self._disc_crop_position()
        else:
            pos = (0, 0)
        with self._autocast():
            if cfg.mode == "mrs":
                preds = self._mrs_predictions(lr)
            else:
                preds = self._adversarial_predictions(lr, hr, iteration)
            real_pred = None
            if self.net_d is not None:
                real_pred = self.net_d(self._disc_view(hr, pos)).detach()
            l_pix = l_percep = l_gan = hr.new_zeros((), dtype=torch.float32)
            if cfg.perceptual_weight > 0:
                # All groups through VGG as one batch, the HR features once (not once per group).
                assert self.perceptual is not None
                l_percep = cfg.perceptual_weight * self.perceptual.group_losses(preds, hr).float().sum()
            for pred in preds:
                if cfg.pixel_weight > 0:
                    l_pix = l_pix + cfg.pixel_weight * F.l1_loss(pred.float(), hr)
                if self.net_d is not None:
                    assert self.gan_loss is not None and real_pred is not None
                    fake_pred = self.net_d(self._disc_view(pred, pos))
                    l_gan = l_gan + self.gan_loss.generator_loss(real_pred.float(), fake_pred.float())
            groups = len(preds)
            l_pix, l_percep, l_gan = l_pix / groups, l_percep / groups, l_gan / groups
            l_g = l_pix + l_percep + l_gan
        if not torch.isfinite(l_g):
            raise FloatingPointError(f"generator loss became {l_g.item()} at iteration {iteration + 1}")
        self.scaler.scale(l_g).backward()
        logs = {"l_g": l_g.item(), "l_pix": l_pix.item(), "l_percep": l_percep.item(), "l_gan": l_gan.item()}
        return logs, [p.detach() for p in preds], pos

    def _discriminator_step(self, hr: torch.Tensor, preds: list[torch.Tensor], pos: tuple[int, int]) -> float:
        assert self.net_d is not None and self.opt_d is not None and self.gan_loss is not None
        self.net_d.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        with self._autocast():
            real_pred = self.net_d(self._disc_view(hr, pos)).float()
            l_d = real_pred.new_zeros(())
            for pred in preds:
                fake_pred = self.net_d(self._disc_view(pred, pos)).float()
                l_d = l_d + self.gan_loss.discriminator_loss(real_pred, fake_pred)
            l_d = l_d / len(preds)
        self.scaler.scale(l_d).backward()
        all_reduce_grads(self.net_d.parameters(), self.dist)
        self.scaler.step(self.opt_d)
        return float(l_d.item())

    @torch.no_grad()
    def _update_ema(self) -> None:
        weight = 1.0 - self.config.ema_decay
        for p_ema, p in zip(self.net_g_ema.parameters(), self.net_g.parameters(), strict=True):
            p_ema.lerp_(p.detach(), weight)
        for b_ema, b in zip(self.net_g_ema.buffers(), self.net_g.buffers(), strict=True):
            b_ema.copy_(b)

    def train_step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        """One generator update (and one discriminator update with the GAN on) on this batch slice.

        Args:
            lr: this process's LR crops of the current iteration (``self.iteration``).
            hr: the matching HR crops.

        Returns:
            This process's losses of the iteration (keys :data:`LOG_KEYS`).
        """
        it = self.iteration
        factor = self.lr_factor(it)
        for group in self.opt_g.param_groups:
            group["lr"] = self.config.lr * factor
        if self.opt_d is not None:
            for group in self.opt_d.param_groups:
                group["lr"] = self.config.disc_lr * factor
        logs, preds, pos = self.generator_backward(lr, hr, it)
        self.scaler.step(self.opt_g)
        logs["l_d"] = self._discriminator_step(hr, preds, pos) if self.net_d is not None else 0.0
        self.scaler.update()
        self._update_ema()
        self.iteration = it + 1
        return logs

    # ------------------------------------------------------------------------------------------------
    # checkpoints

    def state_dict(self) -> dict[str, Any]:
        """The training state (everything but the generator weights), plain types and tensors only."""
        return {
            "format": STATE_FORMAT,
            "iteration": self.iteration,
            "generator_file": checkpoint_paths(self.output_dir, self.iteration)[0].name,
            "config": self.config.to_dict(),
            "world_size": self.dist.world_size,
            "elapsed_s": float(self.elapsed_total_s),
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "net_d": {k: v.detach().cpu().clone() for k, v in self.net_d.state_dict().items()}
            if self.net_d is not None
            else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "noise_rng": self.noise_generator.get_state(),
            "data": {"seed": self.config.seed, "next_sample": self.iteration * self.config.batch_size},
            "log_window": {"sums": dict(self._window), "count": self._window_count},
        }

    def save_checkpoint(self) -> tuple[Path, Path] | None:
        """Write the generator file, then the state file (rank 0); prune old ones; update ``net_g_latest``.

        Returns:
            ``(generator file, state file)`` on rank 0, ``None`` elsewhere.
        """
        if not self.dist.is_main:
            return None
        gen_file, state_file = checkpoint_paths(self.output_dir, self.iteration)
        payload = generator_payload(
            self.net_g.state_dict(),
            self.net_g_ema.state_dict(),
            architecture=self.architecture,
            hyperparameters=self.hyperparameters,
            scale=self.scale,
            default_sigma=self.recommended_sigma,
            name=self.model_name,
        )
        atomic_save(payload, gen_file)
        atomic_save(self.state_dict(), state_file)
        publish_latest(gen_file, self.output_dir)
        prune_checkpoints(self.output_dir, self.config.keep_checkpoints)
        self.last_generator_file, self.last_state_file = gen_file, state_file
        return gen_file, state_file

    def _maybe_resume(self) -> None:
        cfg = self.config
        if cfg.resume is None:
            return
        if cfg.resume == "auto":
            path = find_latest_state(self.output_dir)
            if path is None:
                self.log(f"resume auto: no checkpoint in {self.output_dir}, starting from {cfg.model}")
                return
        else:
            path = Path(cfg.resume)
        state = load_state_file(path)
        self.load_state(state, path)

    def load_state(self, state: dict[str, Any], path: Path) -> None:
        """Restore a training state read by :func:`load_state_file` (and its generator file beside it).

        Raises:
            InputError: the state was made with settings that define another trajectory, its generator
                file is missing, or the architecture differs.
        """
        saved = state["config"]
        mine = self.config.to_dict()
        diffs = [
            f"{k}: checkpoint {saved.get(k)!r}, now {mine[k]!r}"
            for k in _TRAJECTORY_KEYS
            if saved.get(k) != mine[k]
        ]
        if diffs:
            raise InputError(
                f"resume from {path}: these settings differ from the checkpoint's run, so it would not "
                f"continue the same training (start a new output_dir instead): {'; '.join(diffs)}"
            )
        gen_path = Path(path).parent / state["generator_file"]
        if not gen_path.is_file():
            raise InputError(f"resume: expected the generator file {gen_path} beside {path}, it is missing")
        gen = torch.load(gen_path, map_location="cpu", weights_only=True)
        meta = gen.get("certsr_meta", {})
        if (
            meta.get("architecture") != self.architecture
            or meta.get("hyperparameters") != self.hyperparameters
        ):
            raise InputError(
                f"resume: {gen_path} holds {meta.get('architecture')} {meta.get('hyperparameters')}, "
                f"expected {self.architecture} {self.hyperparameters} (the model this config starts from)"
            )
        self.net_g.load_state_dict(gen["params"])
        self.net_g_ema.load_state_dict(gen["params_ema"])
        self.opt_g.load_state_dict(state["optimizer_g"])
        if self.net_d is not None:
            assert self.opt_d is not None
            self.net_d.load_state_dict(state["net_d"])
            self.opt_d.load_state_dict(state["optimizer_d"])
        if state.get("scaler") is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.noise_generator.set_state(state["noise_rng"])
        self.iteration = int(state["iteration"])
        self.elapsed_total_s = float(state.get("elapsed_s", 0.0))
        window = state.get("log_window") or {}
        self._window = {k: float(window.get("sums", {}).get(k, 0.0)) for k in LOG_KEYS}
        self._window_count = int(window.get("count", 0))
        self.last_generator_file, self.last_state_file = gen_path, Path(path)
        self.log(f"resumed from {path} at iteration {self.iteration}")

    # ------------------------------------------------------------------------------------------------
    # the loop

    def _write_log(self, iteration: int) -> None:
        values = torch.tensor([self._window[k] for k in LOG_KEYS], dtype=torch.float64, device=self.device)
        values = all_reduce_mean(values, self.dist) / max(self._window_count, 1)
        if self.dist.is_main and self._window_count:
            record = {"iteration": iteration, "lr": self.config.lr * self.lr_factor(iteration - 1)}
            record.update({k: float(v) for k, v in zip(LOG_KEYS, values.tolist(), strict=True)})
            record["elapsed_s"] = round(self.elapsed_total_s, 3)
            with open(self.output_dir / "loss_log.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        self._window = dict.fromkeys(LOG_KEYS, 0.0)
        self._window_count = 0

    def _trim_log(self) -> None:
        """Drop log lines past the resume point (written after the checkpoint by a killed run)."""
        log_file = self.output_dir / "loss_log.jsonl"
        if not self.dist.is_main or not log_file.is_file():
            return
        kept = []
        for line in log_file.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["iteration"] <= self.iteration:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        log_file.write_text("".join(k + "\n" for k in kept), encoding="utf-8")

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM finish the current iteration, write a checkpoint and stop (a 2nd SIGINT aborts)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop_signal = signum
            what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted (Ctrl-C)"
            self.log(f"{what}: stopping after this iteration with a checkpoint")

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train until ``config.iterations`` (or the time limit, a signal, or ``stop_after`` updates).

        Args:
            stop_after: stop after this many updates of this call, with a checkpoint (tests use it to
                simulate an interrupted run).

        Returns:
            What was done; the newest checkpoint's files.
        """
        cfg = self.config
        start = self.iteration
        t0 = time.monotonic()
        if start >= cfg.iterations:
            self.log(f"nothing to do: {start} of {cfg.iterations} iterations already done")
            return TrainResult(start, self.last_generator_file, self.last_state_file, "done", 0.0, 0)
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
            self._trim_log()
        self.log(
            f"training {self.model_name}: {cfg.mode}, {self.architecture} from {cfg.model}, "
            f"device {self.device}"
            f"{f' x{self.dist.world_size} processes' if self.dist.enabled else ''}, amp "
            f"{self.amp_dtype or 'off'}, iterations {start}->{cfg.iterations}, batch {cfg.batch_size} x "
            f"{cfg.mrs_copies if cfg.mode == 'mrs' else 1} copies of {cfg.hr_crop // self.scale}px LR, "
            f"GAN {'on' if self.net_d is not None else 'off'}"
        )
        stop = cfg.iterations if stop_after is None else min(cfg.iterations, start + stop_after)
        progress = _Progress(cfg.iterations, start, cfg.progress and self.dist.is_main, cfg.log_every)
        reason = "done"
        last_tick = time.monotonic()
        with self._signals():
            for lr, hr in self._batches(start, stop):
                logs = self.train_step(lr, hr)
                now = time.monotonic()
                self.elapsed_total_s += now - last_tick
                last_tick = now
                for k in LOG_KEYS:
                    self._window[k] += logs[k]
                self._window_count += 1
                if self.iteration % cfg.log_every == 0:
                    self._write_log(self.iteration)
                progress.update(self.iteration, logs)
                timed_out = cfg.max_minutes is not None and (now - t0) > cfg.max_minutes * 60
                halt = any_true(self.stop_signal is not None or timed_out, self.dist, self.device)
                if halt or self.iteration == stop or self.iteration % cfg.save_every == 0:
                    self.save_checkpoint()
                if halt:
                    reason = "signal" if self.stop_signal is not None else "time limit"
                    break
        progress.close()
        if reason == "done" and self.iteration < cfg.iterations:
            reason = "stop_after"
        if reason == "done" and self._window_count:
            self._write_log(self.iteration)  # the last, partial window of a finished run
        barrier(self.dist)
        elapsed = time.monotonic() - t0
        done = self.iteration - start
        self.log(
            f"stopped ({reason}) at iteration {self.iteration}: {done} updates in {elapsed:.1f} s"
            + (f" ({done / elapsed:.3f} it/s)" if elapsed > 0 else "")
            + (f"; generator: {self.last_generator_file}" if self.last_generator_file else "")
        )
        return TrainResult(
            self.iteration,
            self.last_generator_file,
            self.last_state_file,
            reason,
            elapsed,
            done,
            signal=self.stop_signal if reason == "signal" else None,
        )

    def close(self) -> None:
        """Leave the process group if this trainer joined it."""
        cleanup_distributed(self.dist)


def _is_path(model: str) -> bool:
    return any(sep in model for sep in ("/", "\\")) or model.endswith((".pth", ".pt", ".safetensors"))


def train(config: TrainConfig, *, log: Callable[[str], None] | None = None) -> TrainResult:
    """Run a fine-tuning job described by ``config`` (one process, or one rank under ``torchrun``).

    Args:
        config: the settings.
        log: where rank 0's messages go (default: stderr).

    Returns:
        What was done and the newest checkpoint files.
    """
    trainer = Trainer(config, log=log)
    try:
        return trainer.run()
    finally:
        trainer.close()
