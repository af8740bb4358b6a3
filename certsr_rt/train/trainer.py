"""The fine-tuning loop: MRS fine-tuning and adversarial fine-tuning of an SR generator.

:class:`Trainer` builds a run from a :class:`TrainConfig` and composes its parts:

* :mod:`certsr_rt.train.steps` — one update: the paper's MRS step, the adversarial step, the loss, the
  discriminator update and the EMA;
* :mod:`certsr_rt.train.checkpoint` — the checkpoint files: save, resume, the loss-log trimming of a resume;
* :mod:`certsr_rt.train.control` — run control: time limit, signals, the loss log, the progress callback;
* :mod:`certsr_rt.train.data` and :mod:`certsr_rt.train.distributed` — the crops and the processes.

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

import copy
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from certsr_rt._device import resolve_device
from certsr_rt.errors import InputError
from certsr_rt.io.atomic import write_atomic
from certsr_rt.train import steps
from certsr_rt.train.checkpoint import (
    generator_payload,
    read_resume,
    resume_path,
    save_checkpoint,
    training_state,
    trim_log,
)
from certsr_rt.train.config import TrainConfig
from certsr_rt.train.control import LOG_KEYS, LOSS_LOG, LossLog, ProgressFn, StopControl
from certsr_rt.train.data import CropStream, StreamBatchSampler
from certsr_rt.train.distributed import DistInfo, barrier, cleanup_distributed, init_distributed

__all__ = ["LOG_KEYS", "TrainResult", "Trainer", "train"]


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
        self.mrs_groups = steps.MRSGroups(config.mrs_sigmas, config.mrs_draws, config.mrs_clean)

        self.iteration = 0
        self.elapsed_total_s = 0.0
        self.loss_log = LossLog(self.output_dir / LOSS_LOG, config.log_every, self.dist, self.device)
        self._control: StopControl | None = None
        self.last_generator_file: Path | None = None
        self.last_state_file: Path | None = None

        self._maybe_resume()

        self.g_train: nn.Module = self.net_g
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_train = DistributedDataParallel(self.net_g, device_ids=ids)
        gan = None
        if self.net_d is not None:
            assert self.opt_d is not None and self.gan_loss is not None
            gan = steps.GAN(self.net_d, self.opt_d, self.gan_loss, self.d_size, config.hr_crop)
        self.parts = steps.StepParts(
            generator=self.g_train,
            module=self.net_g,
            ema=self.net_g_ema,
            optimizer=self.opt_g,
            scaler=self.scaler,
            weights=steps.LossWeights(config.pixel_weight, config.perceptual_weight),
            perceptual=self.perceptual,
            gan=gan,
            noise_generator=self.noise_generator,
            amp_dtype=self.amp_dtype,
            device=self.device,
            dist=self.dist,
            ema_decay=config.ema_decay,
        )

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

    def _predict(self, lr: torch.Tensor, hr: torch.Tensor, iteration: int) -> steps.Predict:
        if self.config.mode == "mrs":
            return steps.mrs_predict(self.parts, lr, self.mrs_groups, global_batch=self.config.batch_size)
        assert self.attack_config is not None
        return steps.adversarial_predict(
            self.parts, lr, hr, iteration, self.attack_config, self.attack_loss, seed=self.config.seed
        )

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
            discriminator sub-crop position (see :func:`certsr_rt.train.steps.generator_backward`).
        """
        return steps.generator_backward(self.parts, self._predict(lr, hr, iteration), hr, iteration)

    def train_step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        """One generator update (and one discriminator update with the GAN on) on this batch slice.

        Args:
            lr: this process's LR crops of the current iteration (``self.iteration``).
            hr: the matching HR crops.

        Returns:
            This process's losses of the iteration (keys :data:`LOG_KEYS`).
        """
        cfg, it = self.config, self.iteration
        factor = self.lr_factor(it)
        for group in self.opt_g.param_groups:
            group["lr"] = cfg.lr * factor
        if self.opt_d is not None:
            for group in self.opt_d.param_groups:
                group["lr"] = cfg.disc_lr * factor
        if cfg.mode == "mrs":
            logs = steps.mrs_step(self.parts, lr, hr, it, self.mrs_groups, global_batch=cfg.batch_size)
        else:
            assert self.attack_config is not None
            logs = steps.adversarial_step(
                self.parts, lr, hr, it, self.attack_config, self.attack_loss, seed=cfg.seed
            )
        self.iteration = it + 1
        return logs

    # ------------------------------------------------------------------------------------------------
    # checkpoints (the files: certsr_rt.train.checkpoint)

    def state_dict(self) -> dict[str, Any]:
        """The training state (everything but the generator weights), plain types and tensors only."""
        return training_state(
            iteration=self.iteration,
            config=self.config.to_dict(),
            world_size=self.dist.world_size,
            elapsed_s=self.elapsed_total_s,
            optimizer_g=self.opt_g,
            optimizer_d=self.opt_d,
            net_d=self.net_d,
            scaler=self.scaler,
            noise_generator=self.noise_generator,
            log_window=self.loss_log.state(),
            output_dir=self.output_dir,
        )

    def save_checkpoint(self) -> tuple[Path, Path] | None:
        """Write the generator file, then the state file (rank 0); prune old ones; update ``net_g_latest``.

        Returns:
            ``(generator file, state file)`` on rank 0, ``None`` elsewhere.
        """
        if not self.dist.is_main:
            return None
        payload = generator_payload(
            self.net_g.state_dict(),
            self.net_g_ema.state_dict(),
            architecture=self.architecture,
            hyperparameters=self.hyperparameters,
            scale=self.scale,
            default_sigma=self.recommended_sigma,
            name=self.model_name,
        )
        files = save_checkpoint(
            self.output_dir, self.iteration, payload, self.state_dict(), keep=self.config.keep_checkpoints
        )
        self.last_generator_file, self.last_state_file = files
        return files

    def _maybe_resume(self) -> None:
        cfg = self.config
        path = resume_path(cfg.resume, self.output_dir)
        if path is None:
            if cfg.resume == "auto":
                self.log(f"resume auto: no checkpoint in {self.output_dir}, starting from {cfg.model}")
            return
        self.load_state(path)

    def load_state(self, path: str | Path) -> None:
        """Restore the training state of the checkpoint whose state file is ``path``.

        Raises:
            InputError: not a training-state file, made with settings that define another trajectory, its
                generator file is missing, or the architecture differs
                (:func:`certsr_rt.train.checkpoint.read_resume`).
        """
        found = read_resume(
            path,
            config=self.config.to_dict(),
            architecture=self.architecture,
            hyperparameters=self.hyperparameters,
        )
        state = found.state
        self.net_g.load_state_dict(found.params)
        self.net_g_ema.load_state_dict(found.params_ema)
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
        self.loss_log.load(state.get("log_window"))
        self.last_generator_file, self.last_state_file = found.generator_file, found.state_file
        self.log(f"resumed from {found.state_file} at iteration {self.iteration}")

    # ------------------------------------------------------------------------------------------------
    # the loop

    @property
    def stop_signal(self) -> int | None:
        """The number of the signal that stopped the current or last run, if any."""
        return self._control.stop_signal if self._control is not None else None

    def run(self, stop_after: int | None = None, *, progress: ProgressFn | None = None) -> TrainResult:
        """Train until ``config.iterations`` (or the time limit, a signal, or ``stop_after`` updates).

        Args:
            stop_after: stop after this many updates of this call, with a checkpoint (tests use it to
                simulate an interrupted run).
            progress: the progress callback (see :data:`certsr_rt.train.control.ProgressFn`), called on
                rank 0 when ``config.progress`` is on; ``None`` shows nothing (the ``train`` command
                passes its bar).

        Returns:
            What was done; the newest checkpoint's files.
        """
        cfg = self.config
        start = self.iteration
        control = self._control = StopControl(cfg.max_minutes, self.log)
        t0 = control.started
        if start >= cfg.iterations:
            self.log(f"nothing to do: {start} of {cfg.iterations} iterations already done")
            return TrainResult(start, self.last_generator_file, self.last_state_file, "done", 0.0, 0)
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(
                self.output_dir / "config.json", (json.dumps(cfg.to_dict(), indent=2) + "\n").encode()
            )
            trim_log(self.loss_log.path, self.iteration)
        self.log(
            f"training {self.model_name}: {cfg.mode}, {self.architecture} from {cfg.model}, "
            f"device {self.device}"
            f"{f' x{self.dist.world_size} processes' if self.dist.enabled else ''}, amp "
            f"{self.amp_dtype or 'off'}, iterations {start}->{cfg.iterations}, batch {cfg.batch_size} x "
            f"{cfg.mrs_copies if cfg.mode == 'mrs' else 1} copies of {cfg.hr_crop // self.scale}px LR, "
            f"GAN {'on' if self.net_d is not None else 'off'}"
        )
        stop = cfg.iterations if stop_after is None else min(cfg.iterations, start + stop_after)
        show = progress if cfg.progress and self.dist.is_main else None
        if show is not None:
            show(start, cfg.iterations, {})
        reason = "done"
        last_tick = time.monotonic()
        with control.signals():
            for lr, hr in self._batches(start, stop):
                logs = self.train_step(lr, hr)
                now = time.monotonic()
                self.elapsed_total_s += now - last_tick
                last_tick = now
                self.loss_log.add(logs)
                if self.loss_log.due(self.iteration):
                    self._write_log()
                if show is not None:
                    show(self.iteration, cfg.iterations, logs)
                halt = control.halt(now, self.dist, self.device)
                if halt or self.iteration == stop or self.iteration % cfg.save_every == 0:
                    self.save_checkpoint()
                if halt:
                    reason = control.reason
                    break
        if reason == "done" and self.iteration < cfg.iterations:
            reason = "stop_after"
        if reason == "done" and self.loss_log.count:
            self._write_log()  # the last, partial window of a finished run
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
            signal=control.stop_signal if reason == "signal" else None,
        )

    def _write_log(self) -> None:
        """One loss-log line for the window ending at ``self.iteration``."""
        lr = self.config.lr * self.lr_factor(self.iteration - 1)
        self.loss_log.write(self.iteration, lr, self.elapsed_total_s)

    def close(self) -> None:
        """Leave the process group if this trainer joined it."""
        cleanup_distributed(self.dist)


def _is_path(model: str) -> bool:
    return any(sep in model for sep in ("/", "\\")) or model.endswith((".pth", ".pt", ".safetensors"))


def train(
    config: TrainConfig,
    *,
    log: Callable[[str], None] | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Run a fine-tuning job described by ``config`` (one process, or one rank under ``torchrun``).

    Args:
        config: the settings.
        log: where rank 0's messages go (default: stderr).
        progress: the progress display (see :meth:`Trainer.run`).

    Returns:
        What was done and the newest checkpoint files.
    """
    trainer = Trainer(config, log=log)
    try:
        return trainer.run(progress=progress)
    finally:
        trainer.close()
