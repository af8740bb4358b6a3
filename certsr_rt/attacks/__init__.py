"""Adversarial attacks on the SR loss (FGSM, BIM, PGD, CW) and common corruptions (noise, blur, JPEG).

Shared by adversarial fine-tuning (:mod:`certsr_rt.train`) and evaluation (:mod:`certsr_rt.evaluation`).
Every attack takes ``(model, x, hr, loss_fn, ...)`` with ``x`` an ``N x C x H x W`` LR batch in [0, 1],
``hr`` its ground truth and ``loss_fn(sr, hr, reduction="none")`` a per-image SR loss (normally
:class:`certsr_rt.losses.SRLoss`), and returns the adversarial LR batch, detached. Attacks are white-box
against the model they are given and leave its parameter gradients untouched.
"""

from certsr_rt.attacks.corruptions import gaussian_blur, gaussian_kernel1d, jpeg_compress, sensor_noise
from certsr_rt.attacks.cw import cw
from certsr_rt.attacks.gradient import bim, fgsm, pgd, project
from certsr_rt.attacks.presets import (
    ATTACK_METHODS,
    EVAL_ATTACKS,
    TRAIN_ATTACKS,
    AttackConfig,
    attack_preset,
    run_attack,
)

__all__ = [
    "ATTACK_METHODS",
    "EVAL_ATTACKS",
    "TRAIN_ATTACKS",
    "AttackConfig",
    "attack_preset",
    "bim",
    "cw",
    "fgsm",
    "gaussian_blur",
    "gaussian_kernel1d",
    "jpeg_compress",
    "pgd",
    "project",
    "run_attack",
    "sensor_noise",
]
