"""``certsr-rt train``: fine-tune a generator with MRS or adversarial fine-tuning.

The app registers :func:`train_command` as ``app.command("train")``. Settings come from the defaults of
:class:`~certsr_rt.train.TrainConfig` (the paper's), then ``--config FILE`` (YAML or JSON), then the options
given on the command line; an option left out does not override the file. Heavy imports (torch, the
trainer) happen inside the command so that ``certsr-rt --help`` stays instant.

Several GPUs (or CPU processes with gloo): ``torchrun --nproc_per_node N -m certsr_rt.cli.app train ...``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from certsr_rt.cli.progress import ProgressDisplay, ProgressState, clock, text_bar

__all__ = ["AmpChoice", "ModeChoice", "train_command"]


class ModeChoice(str, Enum):
    """Fine-tuning method."""

    mrs = "mrs"
    ad_fgsm = "ad-fgsm"
    ad_bim = "ad-bim"
    ad_pgd = "ad-pgd"
    ad_cw = "ad-cw"


class AmpChoice(str, Enum):
    """Mixed precision on CUDA."""

    auto = "auto"
    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"


_DATA = "Data"
_OPT = "Optimisation"
_LOSS = "Losses"
_MRS = "MRS mode"
_ADV = "Adversarial modes"
_RUN = "Run"


def train_command(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="YAML or JSON file of settings (keys as in docs/training.md).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Generator to start from: registered name or checkpoint. [default: realesrgan-x4plus]",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        ModeChoice | None,
        typer.Option(
            help="mrs, or adversarial fine-tuning ad-fgsm/ad-bim/ad-pgd/ad-cw. [default: mrs]",
            show_default=False,
        ),
    ] = None,
    hr_dir: Annotated[
        Path | None,
        typer.Option(help="Folder of HR training images.", rich_help_panel=_DATA, show_default=False),
    ] = None,
    lr_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder of paired LR images, matched by name as evaluate --lr does (same stem, or the stem "
            "+ x4 / _LR / _LRx4); default: bicubic x4 of the HR crops.",
            rich_help_panel=_DATA,
            show_default=False,
        ),
    ] = None,
    hr_crop: Annotated[
        int | None,
        typer.Option(
            help="HR crop side; LR crop = HR / scale. [default: 480]",
            rich_help_panel=_DATA,
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Global LR crops per iteration, before MRS copies. [default: 5]",
            rich_help_panel=_DATA,
            show_default=False,
        ),
    ] = None,
    augment: Annotated[
        bool | None,
        typer.Option(
            "--augment/--no-augment",
            help="Random flips and rotations. [default: augment]",
            rich_help_panel=_DATA,
            show_default=False,
        ),
    ] = None,
    num_workers: Annotated[
        int | None,
        typer.Option(
            help="DataLoader workers per process. [default: 0 on CPU, 4 on GPU]",
            rich_help_panel=_DATA,
            show_default=False,
        ),
    ] = None,
    iterations: Annotated[
        int | None,
        typer.Option(
            help="Total generator updates. [default: 59000]", rich_help_panel=_OPT, show_default=False
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(help="Adam learning rate. [default: 1e-4]", rich_help_panel=_OPT, show_default=False),
    ] = None,
    lr_milestone: Annotated[
        list[int] | None,
        typer.Option(
            help="Iteration at which the learning rates are multiplied by --lr-gamma (repeatable).",
            rich_help_panel=_OPT,
            show_default=False,
        ),
    ] = None,
    lr_gamma: Annotated[
        float | None,
        typer.Option(
            help="Decay at each milestone. [default: 0.5]", rich_help_panel=_OPT, show_default=False
        ),
    ] = None,
    ema_decay: Annotated[
        float | None,
        typer.Option(
            help="EMA decay of params_ema; 0 = no averaging. [default: 0.999]",
            rich_help_panel=_OPT,
            show_default=False,
        ),
    ] = None,
    pixel_weight: Annotated[
        float | None,
        typer.Option(help="L1 weight. [default: 0.01]", rich_help_panel=_LOSS, show_default=False),
    ] = None,
    perceptual_weight: Annotated[
        float | None,
        typer.Option(help="Perceptual weight. [default: 1]", rich_help_panel=_LOSS, show_default=False),
    ] = None,
    perceptual_weights: Annotated[
        Path | None,
        typer.Option(
            help="Local VGG16/VGG19 features file; default: torchvision VGG19, or where it cannot be had the "
            "bundled VGG16 ImageNet features (with a warning).",
            rich_help_panel=_LOSS,
            show_default=False,
        ),
    ] = None,
    perceptual_layer: Annotated[
        list[str] | None,
        typer.Option(
            help="VGG layer 'name' or 'name=weight' (repeatable); default conv5_4 / conv5_3.",
            rich_help_panel=_LOSS,
            show_default=False,
        ),
    ] = None,
    gan_weight: Annotated[
        float | None,
        typer.Option(
            help="Relativistic GAN weight; 0 disables the discriminator. [default: 0.005]",
            rich_help_panel=_LOSS,
            show_default=False,
        ),
    ] = None,
    disc_lr: Annotated[
        float | None,
        typer.Option(
            help="Discriminator learning rate. [default: 1e-4]", rich_help_panel=_LOSS, show_default=False
        ),
    ] = None,
    mrs_sigma: Annotated[
        list[float] | None,
        typer.Option(
            help="Sigma of an MRS noise group (repeatable). [default: 0.03 and 0.2]",
            rich_help_panel=_MRS,
            show_default=False,
        ),
    ] = None,
    mrs_draws: Annotated[
        int | None,
        typer.Option(
            help="Noisy copies per sigma group. [default: 2]", rich_help_panel=_MRS, show_default=False
        ),
    ] = None,
    mrs_clean: Annotated[
        bool | None,
        typer.Option(
            "--mrs-clean/--no-mrs-clean",
            help="Add one clean copy as a group. [default: on]",
            rich_help_panel=_MRS,
            show_default=False,
        ),
    ] = None,
    attack_eps: Annotated[
        float | None,
        typer.Option(
            help="L-inf budget (preset: 9/255, PGD 14/255).", rich_help_panel=_ADV, show_default=False
        ),
    ] = None,
    attack_steps: Annotated[
        int | None,
        typer.Option(
            help="Attack iterations (preset: BIM/PGD 2, CW 4).", rich_help_panel=_ADV, show_default=False
        ),
    ] = None,
    attack_step_size: Annotated[
        float | None,
        typer.Option(help="BIM/PGD step (preset: eps/steps).", rich_help_panel=_ADV, show_default=False),
    ] = None,
    attack_c: Annotated[
        float | None,
        typer.Option(help="CW constant c (preset 0.01).", rich_help_panel=_ADV, show_default=False),
    ] = None,
    attack_lr: Annotated[
        float | None,
        typer.Option(help="CW Adam learning rate (preset 0.01).", rich_help_panel=_ADV, show_default=False),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            help="Checkpoints, loss log and config go here. [default: runs/train]",
            rich_help_panel=_RUN,
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Model name in the checkpoint metadata.", rich_help_panel=_RUN, show_default=False),
    ] = None,
    default_sigma: Annotated[
        float | None,
        typer.Option(
            help="Recommended sigma stored in the checkpoint. [default: mrs: smallest training sigma]",
            rich_help_panel=_RUN,
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="auto, cpu, cuda or cuda:N. [default: auto]", rich_help_panel=_RUN, show_default=False
        ),
    ] = None,
    amp: Annotated[
        AmpChoice | None,
        typer.Option(
            help="Mixed precision: auto = bf16/fp16 on CUDA, fp32 on the CPU; bf16 also on the CPU. "
            "[default: auto]",
            rich_help_panel=_RUN,
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed. [default: 0]", rich_help_panel=_RUN, show_default=False)
    ] = None,
    save_every: Annotated[
        int | None,
        typer.Option(help="Checkpoint interval. [default: 1000]", rich_help_panel=_RUN, show_default=False),
    ] = None,
    keep_checkpoints: Annotated[
        int | None,
        typer.Option(
            help="Newest checkpoints kept; 0 = all. [default: 3]", rich_help_panel=_RUN, show_default=False
        ),
    ] = None,
    log_every: Annotated[
        int | None,
        typer.Option(help="Loss-log interval. [default: 10]", rich_help_panel=_RUN, show_default=False),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="'auto' (newest checkpoint in --output-dir) or a state_*.pth file.",
            rich_help_panel=_RUN,
            show_default=False,
        ),
    ] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option(
            help="Stop with a checkpoint after this wall time.", rich_help_panel=_RUN, show_default=False
        ),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bar. [default: on]",
            rich_help_panel=_RUN,
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads for torch (torch.set_num_threads).", rich_help_panel=_RUN, show_default=False
        ),
    ] = None,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config", help="Print the resolved settings as JSON and exit.", rich_help_panel=_RUN
        ),
    ] = False,
) -> None:
    """Fine-tune a super-resolution generator with median randomized smoothing (mrs) or adversarially.

    mrs: every LR crop goes through the generator 5 times (2 x noise sigma 0.03, 2 x sigma 0.2, 1 clean); each
    sigma group's outputs are reduced by the median and the ESRGAN loss (L1 + VGG perceptual + relativistic
    GAN) of the groups is averaged. ad-*: the generator is trained on adversarial LR crops made by the attack
    with the paper's training settings. Checkpoints load anywhere a model is accepted (--model PATH).
    """
    import json
    import os

    overrides: dict[str, Any] = {
        "model": model,
        "mode": mode.value if mode is not None else None,
        "hr_dir": str(hr_dir) if hr_dir is not None else None,
        "lr_dir": str(lr_dir) if lr_dir is not None else None,
        "hr_crop": hr_crop,
        "batch_size": batch_size,
        "augment": augment,
        "num_workers": num_workers,
        "iterations": iterations,
        "lr": lr,
        "lr_milestones": lr_milestone or None,
        "lr_gamma": lr_gamma,
        "ema_decay": ema_decay,
        "pixel_weight": pixel_weight,
        "perceptual_weight": perceptual_weight,
        "perceptual_weights": str(perceptual_weights) if perceptual_weights is not None else None,
        "perceptual_layers": perceptual_layer or None,
        "gan_weight": gan_weight,
        "disc_lr": disc_lr,
        "mrs_sigmas": mrs_sigma or None,
        "mrs_draws": mrs_draws,
        "mrs_clean": mrs_clean,
        "attack_eps": attack_eps,
        "attack_steps": attack_steps,
        "attack_step_size": attack_step_size,
        "attack_c": attack_c,
        "attack_lr": attack_lr,
        "output_dir": str(output_dir) if output_dir is not None else None,
        "name": name,
        "default_sigma": default_sigma,
        "device": device,
        "amp": amp.value if amp is not None else None,
        "seed": seed,
        "save_every": save_every,
        "keep_checkpoints": keep_checkpoints,
        "log_every": log_every,
        "resume": resume,
        "max_minutes": max_minutes,
        "progress": progress,
    }
    from certsr_rt.errors import InputError
    from certsr_rt.train.config import TrainConfig

    cfg = TrainConfig.load(config, overrides)
    if print_config:
        typer.echo(json.dumps(cfg.to_dict(), indent=2))
        return
    if cfg.hr_dir is None:
        raise InputError("training needs HR images: pass --hr-dir FOLDER (or hr_dir in --config)")
    import torch

    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)

    from certsr_rt.train.trainer import train

    with _train_display(cfg.progress and os.environ.get("RANK", "0") == "0", cfg.log_every) as display:
        result = train(cfg, progress=_train_progress(display))
    if result.generator_file is not None and os.environ.get("RANK", "0") == "0":
        typer.echo(str(result.generator_file))
    if result.signal is not None:
        # Stopped by a signal after writing the checkpoint: exit as the shell does for that signal
        # (130 Ctrl-C, 143 SIGTERM), so that a script can tell a stop from a finished run.
        raise typer.Exit(128 + result.signal)


def _train_line(s: ProgressState) -> str:
    """``[####......] 120/1000 2.31 it/s ETA 6:21 l_g 0.0123 l_d 0.456``: a plain progress line."""
    rate = s.rate or 0.0
    eta = clock(s.remaining) if s.remaining is not None else "--:--"
    return f"[{text_bar(s.fraction or 0.0)}] {s.completed:g}/{s.total:g} {rate:.2f} it/s ETA {eta} {s.status}"


def _train_display(enabled: bool, every: int) -> ProgressDisplay:
    """The training bar: a plain line every ``every`` iterations (the loss-log interval) and at the end."""
    return ProgressDisplay("training", enabled=enabled, line=_train_line, line_seconds=None, line_every=every)


def _train_progress(display: ProgressDisplay) -> Callable[[int, int, Mapping[str, float]], None]:
    """The trainer's ``progress(done, total, losses)`` callback, drawn on ``display``."""

    def show(done: int, total: int, losses: Mapping[str, float]) -> None:
        shown = " ".join(f"{k} {v:.4g}" for k, v in losses.items() if k in ("l_g", "l_d"))
        display.update(done, total, status=shown)

    return show
