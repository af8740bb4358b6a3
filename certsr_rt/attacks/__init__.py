"""Adversarial attacks on the SR loss (FGSM, BIM, PGD, CW, PGD-EOT, PGD-median) and common corruptions.

The corruptions are sensor noise, blur and JPEG; PGD-EOT and PGD-median attack the smoothed model itself.

Shared by adversarial fine-tuning (:mod:`certsr_rt.train`) and evaluation (:mod:`certsr_rt.evaluation`).
Every attack takes ``(model, x, hr, loss_fn, ...)`` with ``x`` an ``N x C x H x W`` LR batch in [0, 1],
``hr`` its ground truth and ``loss_fn(sr, hr, reduction="none")`` a per-image SR loss (normally
:class:`certsr_rt.losses.SRLoss`), and returns the adversarial LR batch, detached. Attacks are white-box
against the model they are given and leave its parameter gradients untouched. ``pgd_eot`` and ``pgd_median``
(:mod:`certsr_rt.attacks.smoothed`) also take the :class:`SmoothingTarget` they aim at.
"""

from certsr_rt.attacks.corruptions import gaussian_blur, gaussian_kernel1d, jpeg_compress, sensor_noise
from certsr_rt.attacks.cw import cw
from certsr_rt.attacks.gradient import bim, fgsm, pgd, project
from certsr_rt.attacks.presets import (
    ATTACK_METHODS,
    EVAL_ATTACKS,
    SMOOTHED_METHODS,
    TRAIN_ATTACKS,
    AttackConfig,
    attack_preset,
    run_attack,
)
from certsr_rt.attacks.smoothed import SmoothingTarget, deployed_noise, pgd_eot, pgd_median, smoothed_forward

__all__ = [
    "ATTACK_METHODS",
    "EVAL_ATTACKS",
    "SMOOTHED_METHODS",
    "SmoothingTarget",
    "TRAIN_ATTACKS",
    "AttackConfig",
    "attack_preset",
    "bim",
    "cw",
    "deployed_noise",
    "fgsm",
    "gaussian_blur",
    "gaussian_kernel1d",
    "jpeg_compress",
    "pgd",
    "pgd_eot",
    "pgd_median",
    "project",
    "run_attack",
    "sensor_noise",
    "smoothed_forward",
]
