"""Named attack settings: the paper's evaluation attacks and its adversarial fine-tuning attacks.

Evaluation (CertSR paper): FGSM/BIM/PGD with eps = 10/255; CW with Adam lr 1e-2, 6 iterations, c = 0.01.
The paper does not give iteration counts for evaluation; we take 10. BIM steps by alpha = eps / T (Kurakin
et al.; 1/255 here), PGD by the torchattacks default 2/255 from a random start. The adaptive attacks on the
smoothed model, ``pgd-eot`` and ``pgd-median`` (:mod:`certsr_rt.attacks.smoothed`), use PGD's settings.

Training (the paper's AD-L baselines): FGSM eps = 9/255; BIM eps = 9/255 with 2 iterations; CW c = 1e-2,
4 iterations, Adam lr 1e-2; PGD after Castillo et al.: 2 steps, eps = 14/255, random start. Step sizes are
not given; we use ``eps / steps`` so that the iterates can reach the boundary of the ball.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from certsr_rt.attacks._common import SRLossFn, SRModule, check_positive, check_steps
from certsr_rt.attacks.cw import cw
from certsr_rt.attacks.gradient import bim, fgsm, pgd
from certsr_rt.attacks.smoothed import SmoothingTarget, pgd_eot, pgd_median
from certsr_rt.errors import InputError

__all__ = [
    "ATTACK_METHODS",
    "EVAL_ATTACKS",
    "SMOOTHED_METHODS",
    "TRAIN_ATTACKS",
    "AttackConfig",
    "attack_preset",
    "run_attack",
]

ATTACK_METHODS = ("fgsm", "bim", "pgd", "cw", "pgd-eot", "pgd-median")

SMOOTHED_METHODS = frozenset({"pgd-eot", "pgd-median"})
"""The adaptive attacks, aimed at the smoothed model itself (plain target: identical to ``pgd``)."""


@dataclass(frozen=True)
class AttackConfig:
    """One attack and its hyper-parameters; :func:`run_attack` executes it."""

    method: str
    """``fgsm``, ``bim``, ``pgd``, ``cw``, or an attack on the smoothed model: ``pgd-eot``, ``pgd-median``."""

    eps: float = 10 / 255
    """L-infinity budget of FGSM/BIM/PGD in [0, 1] image units (unused by CW, which is L2-penalised)."""

    steps: int = 1
    """Iterations of BIM/PGD, Adam iterations of CW (FGSM is always one step)."""

    step_size: float | None = None
    """Sign-step size of BIM/PGD; ``None`` means ``eps / steps``."""

    random_start: bool = False
    """PGD (and pgd-eot / pgd-median) only: start from a uniform random point of the eps-ball."""

    eot_samples: int = 8
    """pgd-eot only: fresh noise draws per step in the expectation."""

    c: float = 0.01
    """CW only: weight of the SR loss against the mean squared perturbation."""

    learning_rate: float = 1e-2
    """CW only: Adam learning rate on the tanh-space variable."""

    def __post_init__(self) -> None:
        if self.method not in ATTACK_METHODS:
            raise InputError(f"attack method must be one of {', '.join(ATTACK_METHODS)}, got {self.method!r}")
        check_positive("eps", self.eps)
        check_steps(self.steps)
        if self.step_size is not None:
            check_positive("step_size", self.step_size)
        check_positive("c", self.c, allow_zero=False)
        check_positive("learning_rate", self.learning_rate, allow_zero=False)
        if (
            isinstance(self.eot_samples, bool)
            or not isinstance(self.eot_samples, int)
            or self.eot_samples < 1
        ):
            raise InputError(f"eot_samples must be an integer >= 1, got {self.eot_samples!r}")

    def replace(self, **changes: object) -> AttackConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def describe(self) -> str:
        """One line for reports, e.g. ``PGD eps=10/255, 10 steps of 2/255, random start``."""

        def in_255(v: float) -> str:
            return f"{v * 255:.3g}/255"

        if self.method == "fgsm":
            return f"FGSM eps={in_255(self.eps)}"
        if self.method == "cw":
            return f"CW (tanh, Adam lr {self.learning_rate:g}) c={self.c:g}, {self.steps} iterations"
        alpha = self.eps / self.steps if self.step_size is None else self.step_size
        kind = "BIM" if self.method == "bim" else "PGD"
        text = f"{kind} eps={in_255(self.eps)}, {self.steps} steps of {in_255(alpha)}"
        if self.method != "bim":
            text += ", random start" if self.random_start else ", no random start"
        if self.method == "pgd-eot":
            text += (
                f", on the mean SR loss over {self.eot_samples} fresh noise draws per step at the entry's "
                "sigma (attacker knows the model and sigma, not the seed)"
            )
        elif self.method == "pgd-median":
            text += (
                ", through the entry's deployed n-sample median with its exact noise "
                "(attacker knows the seed); per image and metric the worse of it and the transferred "
                "pgd input"
            )
        return text


EVAL_ATTACKS: dict[str, AttackConfig] = {
    "fgsm": AttackConfig("fgsm", eps=10 / 255),
    "bim": AttackConfig("bim", eps=10 / 255, steps=10),
    "pgd": AttackConfig("pgd", eps=10 / 255, steps=10, step_size=2 / 255, random_start=True),
    "cw": AttackConfig("cw", steps=6, c=0.01, learning_rate=1e-2),
    "pgd-eot": AttackConfig("pgd-eot", eps=10 / 255, steps=10, step_size=2 / 255, random_start=True),
    "pgd-median": AttackConfig("pgd-median", eps=10 / 255, steps=10, step_size=2 / 255, random_start=True),
}
"""The paper's evaluation attacks (BIM alpha = eps / T; PGD 2/255 steps as torchattacks, see the module doc)
and the adaptive attacks on the smoothed model with PGD's settings."""

TRAIN_ATTACKS: dict[str, AttackConfig] = {
    "fgsm": AttackConfig("fgsm", eps=9 / 255),
    "bim": AttackConfig("bim", eps=9 / 255, steps=2),
    "pgd": AttackConfig("pgd", eps=14 / 255, steps=2, random_start=True),
    "cw": AttackConfig("cw", steps=4, c=1e-2, learning_rate=1e-2),
}
"""The paper's adversarial fine-tuning attacks (AD-L-FGSM/BIM/PGD/CW)."""


def attack_preset(name: str, purpose: str = "eval") -> AttackConfig:
    """The named preset.

    Args:
        name: ``fgsm``, ``bim``, ``pgd`` or ``cw`` (and ``pgd-eot`` / ``pgd-median`` for evaluation).
        purpose: ``"eval"`` (:data:`EVAL_ATTACKS`) or ``"train"`` (:data:`TRAIN_ATTACKS`).

    Returns:
        The frozen config (use :meth:`AttackConfig.replace` to change a field).
    """
    table = {"eval": EVAL_ATTACKS, "train": TRAIN_ATTACKS}.get(purpose)
    if table is None:
        raise InputError(f"purpose must be 'eval' or 'train', got {purpose!r}")
    if name not in table:
        raise InputError(f"{purpose} attack must be one of {', '.join(table)}, got {name!r}")
    return table[name]


def run_attack(
    config: AttackConfig,
    model: SRModule,
    x: torch.Tensor,
    hr: torch.Tensor,
    loss_fn: SRLossFn,
    *,
    generator: torch.Generator | None = None,
    target: SmoothingTarget | None = None,
    noise_generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Run ``config`` against ``model`` on the LR batch ``x`` with targets ``hr``.

    Args:
        config: the attack and its settings.
        model: the generator (white-box: its gradients are used).
        x: ``N x C x H x W`` LR batch in [0, 1].
        hr: ``N x C x sH x sW`` ground truth.
        loss_fn: per-image SR loss, ``loss_fn(sr, hr, reduction="none")``.
        generator: random source of PGD's random start (pgd-eot and pgd-median start from the same point).
        target: the smoothed model that ``pgd-eot`` / ``pgd-median`` aim at; ``None`` (a plain model) makes
            both plain ``pgd``. The other attacks ignore it: they only ever see ``model``.
        noise_generator: random source of pgd-eot's fresh noise draws.
        chunk_size: noisy copies per autograd pass of pgd-eot / pgd-median (memory; same result).

    Returns:
        The adversarial LR batch (detached, in [0, 1]).
    """
    if config.method == "fgsm":
        return fgsm(model, x, hr, loss_fn, config.eps)
    if config.method == "bim":
        return bim(model, x, hr, loss_fn, config.eps, config.steps, config.step_size)
    if config.method == "pgd" or (config.method in SMOOTHED_METHODS and (target is None or target.plain)):
        return pgd(
            model,
            x,
            hr,
            loss_fn,
            config.eps,
            config.steps,
            config.step_size,
            random_start=config.random_start,
            generator=generator,
        )
    if config.method == "pgd-eot":
        return pgd_eot(
            model,
            x,
            hr,
            loss_fn,
            config.eps,
            config.steps,
            config.step_size,
            target=target,  # type: ignore[arg-type]
            eot_samples=config.eot_samples,
            random_start=config.random_start,
            generator=generator,
            noise_generator=noise_generator,
            chunk_size=chunk_size,
        )
    if config.method == "pgd-median":
        return pgd_median(
            model,
            x,
            hr,
            loss_fn,
            config.eps,
            config.steps,
            config.step_size,
            target=target,  # type: ignore[arg-type]
            random_start=config.random_start,
            generator=generator,
            chunk_size=chunk_size,
        )
    return cw(model, x, hr, loss_fn, c=config.c, steps=config.steps, learning_rate=config.learning_rate)
