"""The evaluation loop: every image x model x condition, measured with PSNR, SSIM and LPIPS.

Protocol (what the numbers mean, also written into every report):

* Conditions transform the LR input: ``clean``; ``noisy`` (sensor noise N(0, 0.03^2), clipped to [0, 1]);
  ``blurry`` (Gaussian blur, kernel 10, sigma 0.3); ``jpeg`` (OpenCV JPEG, quality 75); ``fgsm``, ``bim``,
  ``pgd``, ``cw`` (the paper's evaluation attacks, :data:`certsr_rt.attacks.EVAL_ATTACKS`); ``pgd-eot`` and
  ``pgd-median`` (adaptive attacks on the smoothed model, :mod:`certsr_rt.attacks.smoothed`).
* ``fgsm``, ``bim``, ``pgd`` and ``cw`` are **transfer attacks**: the adversarial LR is crafted with the
  gradients of the plain generator on the SR loss ``L1 + L_percep`` and the HR ground truth; every entry
  built on that generator, plain or median-smoothed, is then evaluated on that same adversarial LR.
  ``pgd-eot`` and ``pgd-median`` attack each smoothed entry itself, through its own sigma and n: PGD on the
  mean loss over fresh noise draws (the attacker knows sigma, not the seed), and PGD through the deployed
  median with the exact noise the evaluation uses (the attacker knows the seed). ``pgd-median`` scores, per
  image and metric, the worse of that result and the transferred ``pgd`` input (the seed-knowing attacker
  computes the deployed output exactly and keeps whichever hurts more), so it is never weaker than ``pgd``.
  On plain entries both are ``pgd``, and all three start from the same random point.
* Random draws are seeded from ``seed`` and the image index, so runs repeat exactly, the noisy input of an
  image is the same for every model, and the smoothing noise of an image is the same under every condition.
* Metrics compare the SR output, clamped to [0, 1] and rounded to 8 bits (BasicSR's ``tensor2img``), with
  the HR image rounded to 8 bits: PSNR and SSIM on the Y channel (BT.601) with ``scale`` pixels shaved from
  each border (:mod:`certsr_rt.metrics.psnr_ssim`), LPIPS v0.1 AlexNet on RGB. Per model and condition the
  report gives the mean over images of each per-image value.
* PSNR is capped at :data:`PSNR_CAP_DB` (100 dB) per image: an SR output identical to the HR (MSE 0, for
  which BasicSR and scikit-image give ``inf``) counts as 100 dB in every file and in the means, which
  stay finite. The report says how many per-image values reached the cap.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from certsr_rt.attacks import (
    EVAL_ATTACKS,
    SMOOTHED_METHODS,
    AttackConfig,
    SmoothingTarget,
    gaussian_blur,
    jpeg_compress,
    run_attack,
    sensor_noise,
)
from certsr_rt.errors import InputError
from certsr_rt.evaluation.data import ImagePair, min_hr_size
from certsr_rt.evaluation.specs import BICUBIC, ModelEntry, default_label

if TYPE_CHECKING:
    from certsr_rt.attacks._common import SRLossFn
    from certsr_rt.runtime.upscaler import Upscaler

__all__ = [
    "ATTACK_CONDITIONS",
    "CONDITIONS",
    "DEFAULT_CONDITIONS",
    "Bicubic",
    "CorruptionSettings",
    "EvaluationResult",
    "Measurement",
    "MetricMeans",
    "PSNR_CAP_DB",
    "evaluate",
    "load_generators",
    "parse_conditions",
    "sweep_entries",
]

CONDITIONS = ("clean", "noisy", "blurry", "jpeg", "fgsm", "bim", "pgd", "cw", "pgd-eot", "pgd-median")
"""Every condition :func:`evaluate` knows."""

DEFAULT_CONDITIONS = ("clean", "noisy", "blurry", "fgsm", "bim", "pgd", "cw")
"""The paper's conditions (JPEG is extra and off by default)."""

ATTACK_CONDITIONS = frozenset({"fgsm", "bim", "pgd", "cw", "pgd-eot", "pgd-median"})

THREAT_MODEL = (
    "fgsm, bim, pgd and cw are transfer attacks: the adversarial LR is crafted white-box with the plain "
    "generator's gradients of the SR loss against the HR ground truth, and every entry built on that "
    "generator (plain or MRS) is scored on that same input. "
    "pgd-eot attacks each MRS entry itself with PGD's budget, steps and start, following the gradient of the "
    "mean SR loss over fresh N(0, sigma^2) noise draws at that entry's sigma, new at every step and "
    "independent of the deployed seed (the attacker knows the model and sigma, not the seed). "
    "pgd-median attacks each MRS entry through its deployed n-sample median with the exact noise field the "
    "evaluation uses for it (the attacker also knows the seed, so the smoothed model is deterministic to "
    "it), and since it can compute the deployed output exactly it also tries the transferred pgd input and "
    "keeps, per image and per metric, whichever input scores worse: never weaker than pgd. "
    "On plain entries and bicubic, pgd-eot and pgd-median are exactly pgd."
)
"""The report's threat-model statement: one sentence per attack kind."""

PSNR_CAP_DB = 100.0
"""Ceiling of a per-image PSNR in an evaluation. Identical images have MSE 0 and an infinite PSNR, which would
make the mean of the cell infinite and cannot be written as a JSON number, so every per-image PSNR is
``min(psnr, PSNR_CAP_DB)`` before it is stored, written or averaged. 100 dB is above what any real
restoration reaches (one 8-bit level of error in a single pixel of a 32 x 32 image is about 96 dB on Y)."""

ProgressFn = Callable[[int, int, str], None]
"""``progress(done, total, description)``, called after each image x model x condition cell."""


@dataclass(frozen=True)
class CorruptionSettings:
    """Parameters of the non-adversarial conditions."""

    noise_sigma: float = 0.03
    """Standard deviation of the ``noisy`` condition's Gaussian noise, in [0, 1] image units."""

    blur_kernel_size: int = 10
    """Taps per axis of the ``blurry`` condition's Gaussian kernel (even: centred between pixels)."""

    blur_sigma: float = 0.3
    """Standard deviation, in pixels, of the ``blurry`` condition's Gaussian kernel."""

    jpeg_quality: int = 75
    """Quality of the ``jpeg`` condition."""

    def describe(self, condition: str) -> str:
        """One line for reports."""
        if condition == "noisy":
            return f"additive Gaussian noise N(0, {self.noise_sigma:g}^2) on the LR, clipped to [0, 1]"
        if condition == "blurry":
            return (
                f"Gaussian blur of the LR, {self.blur_kernel_size}-tap kernel, sigma {self.blur_sigma:g} px"
                + (" (even size: centred between pixels)" if self.blur_kernel_size % 2 == 0 else "")
            )
        if condition == "jpeg":
            return f"JPEG round trip of the LR (OpenCV, quality {self.jpeg_quality})"
        return "the LR as given"


def parse_conditions(text: str | Sequence[str]) -> list[str]:
    """``"clean,noisy,pgd"`` -> ``["clean", "noisy", "pgd"]``, checked against :data:`CONDITIONS`."""
    items = [c.strip().lower() for c in (text.split(",") if isinstance(text, str) else text) if c.strip()]
    if not items:
        raise InputError(f"--conditions needs at least one of {', '.join(CONDITIONS)}, got {text!r}")
    unknown = [c for c in items if c not in CONDITIONS]
    if unknown:
        raise InputError(f"unknown condition {unknown[0]!r}; expected some of {', '.join(CONDITIONS)}")
    return list(dict.fromkeys(items))


class Bicubic:
    """The bicubic baseline, as MATLAB's ``imresize`` (differentiable, so it can be attacked too).

    MATLAB's ``imresize`` bicubic, which the published bicubic numbers use (Set5 x4: 28.42 dB PSNR-Y,
    tested), is Keys' kernel with a = -0.5 over a symmetrically padded input (the edge pixel repeated, then
    mirrored). Torch's antialiased bicubic has that kernel but drops and renormalises the taps outside the
    image instead, which differs in the outer 2 LR pixels; so the input is padded by 2 pixels MATLAB's way
    first and the result cropped: equal to MATLAB's everywhere (tested against a reference
    implementation). Plain ``mode="bicubic"`` is a = -0.75 and scores about 0.2 dB higher on Set5.
    """

    name = BICUBIC
    default_sigma: float | None = None

    def __init__(self, scale: int = 4) -> None:
        self.scale = scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``N x C x H x W`` -> ``N x C x sH x sW``, MATLAB-style bicubic (a = -0.5), not clamped."""
        pad, s = _BICUBIC_PAD, self.scale
        if min(x.shape[-2:]) < pad:
            raise InputError(
                f"bicubic needs an input of at least {pad}x{pad} pixels, got {tuple(x.shape[-2:])}"
            )
        x = _pad_symmetric(_pad_symmetric(x, pad, -1), pad, -2)
        up = F.interpolate(x, scale_factor=s, mode="bicubic", antialias=True, align_corners=False)
        return up[..., pad * s : up.shape[-2] - pad * s, pad * s : up.shape[-1] - pad * s]


_BICUBIC_PAD = 2
"""LR pixels beyond the border that the a = -0.5 kernel (support 2) reads when upscaling."""


def _pad_symmetric(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """``x`` padded by ``pad`` along ``dim`` with mirrored copies that repeat the edge (MATLAB, numpy)."""
    n = x.shape[dim]
    return torch.cat([x.narrow(dim, 0, pad).flip(dim), x, x.narrow(dim, n - pad, pad).flip(dim)], dim=dim)


SRGenerator = Any
"""An :class:`~certsr_rt.models.SRModel` or :class:`Bicubic`: callable, with ``scale``, ``default_sigma``."""


def load_generators(entries: Sequence[ModelEntry], device: torch.device | str) -> dict[str, SRGenerator]:
    """Load each distinct source once (``bicubic`` -> :class:`Bicubic`).

    Raises:
        ModelLoadError: a name or checkpoint that cannot be loaded.
    """
    from certsr_rt.models import load_model

    generators: dict[str, SRGenerator] = {}
    for entry in entries:
        if entry.source not in generators:
            generators[entry.source] = (
                Bicubic() if entry.source == BICUBIC else load_model(entry.source, device)
            )
    return generators


def _resolve(entries: Sequence[ModelEntry], generators: Mapping[str, SRGenerator]) -> list[ModelEntry]:
    """Fill in ``sigma=default`` from the models, check labels are unique."""
    resolved = []
    for entry in entries:
        if entry.use_default_sigma:
            sigma = generators[entry.source].default_sigma
            if sigma is None:
                raise InputError(
                    f"{entry.source} carries no recommended sigma; give one, e.g. "
                    f"{entry.source}@sigma=0.03, or choose it with --sigma-sweep"
                )
            entry = entry.with_sigma(sigma)
        resolved.append(entry)
    labels = [e.label for e in resolved]
    for label in labels:
        if labels.count(label) > 1:
            raise InputError(f"two --models entries have the same label {label!r}; add label=... to one")
    return resolved


def sweep_entries(entries: Sequence[ModelEntry], sigmas: Sequence[float], samples: int) -> list[ModelEntry]:
    """The entries of a sigma sweep: every non-bicubic source of ``entries`` at every sigma (0 = plain)."""
    out = []
    for source in dict.fromkeys(e.source for e in entries if e.source != BICUBIC):
        for sigma in sigmas:
            if not 0.0 <= sigma <= 1.0:
                raise InputError(f"sweep sigmas must be in [0, 1], got {sigma}")
            smoothed = sigma > 0
            n = samples if smoothed else 1
            label = f"{default_label(source, None, 1)} σ={sigma:g}"
            out.append(ModelEntry(source, sigma if smoothed else None, n, label))
    return out


@dataclass(frozen=True)
class Measurement:
    """The three metrics of one image under one condition for one entry."""

    image: str
    condition: str
    psnr: float
    ssim: float
    lpips: float


@dataclass(frozen=True)
class MetricMeans:
    """Means over images of the per-image metrics."""

    psnr: float
    ssim: float
    lpips: float
    images: int


@dataclass
class EvaluationResult:
    """Everything an evaluation measured, and how.

    Attributes:
        entries: the table's rows (``--models``), with recommended sigmas resolved.
        sweep: the sigma-sweep entries (empty without a sweep).
        conditions: the table's columns.
        images: names of the evaluated images.
        measurements: per entry key (:attr:`ModelEntry.key`), the per-image measurements.
        settings: the protocol and options, for the report (JSON-serialisable).
    """

    entries: list[ModelEntry]
    sweep: list[ModelEntry]
    conditions: list[str]
    images: list[str]
    measurements: dict[tuple[str, float | None, int], list[Measurement]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def psnr_at_cap(self) -> int:
        """How many per-image PSNR values of the table's entries reached :data:`PSNR_CAP_DB`."""
        return sum(m.psnr >= PSNR_CAP_DB for e in self.entries for m in self.measurements.get(e.key, []))

    def cell(self, entry: ModelEntry, condition: str) -> MetricMeans:
        """Means for one entry under one condition."""
        rows = [m for m in self.measurements.get(entry.key, []) if m.condition == condition]
        if not rows:
            return MetricMeans(math.nan, math.nan, math.nan, 0)
        return MetricMeans(
            float(np.mean([m.psnr for m in rows])),
            float(np.mean([m.ssim for m in rows])),
            float(np.mean([m.lpips for m in rows])),
            len(rows),
        )


def _derived_seed(*parts: object) -> int:
    """A 63-bit seed from the run seed and a position (image index, model, purpose)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _cpu_generator(*parts: object) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(_derived_seed(*parts))


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """``1 x 3 x H x W`` float -> ``H x W x 3`` uint8 (clamped, rounded)."""
    array = image[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return np.rint(array * 255.0).astype(np.uint8)


def _settings(
    conditions: Sequence[str],
    attacks: Mapping[str, AttackConfig],
    corruptions: CorruptionSettings,
    attack_loss: Any,
    scale: int,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    described = {}
    for c in conditions:
        described[c] = attacks[c].describe() if c in ATTACK_CONDITIONS else corruptions.describe(c)
    settings: dict[str, Any] = {
        "conditions": described,
        "threat_model": THREAT_MODEL,
        "metrics": {
            "psnr": f"PSNR in dB on the BT.601 Y channel, {scale}-pixel border shaved, 8-bit images, "
            f"capped at {PSNR_CAP_DB:g} dB per image (identical images, infinite PSNR, count as "
            f"{PSNR_CAP_DB:g} dB in every file and in the means) (higher is better)",
            "ssim": f"SSIM (Wang et al. 2004, 11x11 Gaussian window, sigma 1.5) on Y, {scale}-pixel border "
            "shaved (higher is better)",
            "lpips": "LPIPS v0.1 AlexNet on RGB (lower is better)",
            "aggregation": "mean over images of the per-image values",
            "output": "SR output clamped to [0, 1] and rounded to 8 bits before measuring",
        },
        "seed": seed,
        "device": str(device),
        "torch": torch.__version__,
    }
    if attack_loss is not None and any(c in ATTACK_CONDITIONS for c in conditions):
        settings["attack_loss"] = _describe_loss(attack_loss)
    return settings


def _describe_loss(loss: Any) -> str:
    perceptual = getattr(loss, "perceptual", None)
    l1 = getattr(loss, "l1_weight", None)
    if l1 is None:
        return type(loss).__name__
    if perceptual is None or getattr(loss, "perceptual_weight", 0) == 0:
        return f"{l1:g} * L1 (no perceptual term)"
    layers = ", ".join(f"{k} x {v:g}" for k, v in perceptual.layer_weights.items())
    return (
        f"{l1:g} * L1 + {loss.perceptual_weight:g} * perceptual ({perceptual.vgg_type} ImageNet features, "
        f"{layers}, pre-activation, from {perceptual.weights_source})"
    )


def evaluate(
    entries: Sequence[ModelEntry],
    pairs: Sequence[ImagePair],
    conditions: Sequence[str] = DEFAULT_CONDITIONS,
    *,
    generators: Mapping[str, SRGenerator],
    attack_loss: SRLossFn | None = None,
    attacks: Mapping[str, AttackConfig] = EVAL_ATTACKS,
    corruptions: CorruptionSettings | None = None,
    sweep_sigmas: Sequence[float] = (),
    sweep_samples: int = 21,
    device: torch.device | str = "cpu",
    seed: int = 0,
    attack_chunk: int | None = None,
    lpips_metric: Any = None,
    progress: ProgressFn | None = None,
) -> EvaluationResult:
    """Measure every entry on every image under every condition.

    Args:
        entries: the models to compare (see :func:`certsr_rt.evaluation.parse_model_specs`).
        pairs: the images (see :func:`certsr_rt.evaluation.load_image_pairs`), with ``scale`` matching the
            models'.
        conditions: subset of :data:`CONDITIONS`.
        generators: ``source -> model`` for every entry's source (:func:`load_generators`).
        attack_loss: the per-image SR loss the attacks maximise (normally ``SRLoss(PerceptualLoss(...))``);
            required when an attack condition is requested.
        attacks: settings per attack name (default: the paper's evaluation settings).
        corruptions: settings of ``noisy`` / ``blurry`` / ``jpeg``.
        sweep_sigmas: also evaluate every non-bicubic source with MRS at each of these sigmas (0 = plain).
        sweep_samples: n of the sweep's smoothed entries.
        device: where models, attacks and metrics run.
        seed: seed of every random draw (noise corruption, PGD start, smoothing noise, pgd-eot's draws).
        attack_chunk: noisy copies per autograd pass of pgd-eot / pgd-median (bounds their memory; the
            result does not depend on it); ``None`` runs all copies of an image in one pass.
        lpips_metric: a ready :class:`certsr_rt.metrics.LPIPSMetric` (built on ``device`` when ``None``).
        progress: called after each image x entry x condition cell.

    Returns:
        The measurements and the protocol.

    Raises:
        InputError: an unknown condition, an attack without ``attack_loss``, scale mismatches, an image
            smaller than :func:`~certsr_rt.evaluation.data.min_hr_size`, or no recommended sigma for
            ``sigma=default``.
    """
    from certsr_rt._device import resolve_device
    from certsr_rt.metrics import LPIPSMetric
    from certsr_rt.runtime.upscaler import Upscaler
    from certsr_rt.smoothing.config import SmoothingConfig

    conditions = parse_conditions(conditions)
    corruptions = corruptions or CorruptionSettings()
    dev = resolve_device(device)
    if not pairs:
        raise InputError("no images to evaluate")
    if any(c in ATTACK_CONDITIONS for c in conditions) and attack_loss is None:
        raise InputError("attack conditions need an attack loss (SRLoss); none was given")
    missing = [c for c in conditions if c in ATTACK_CONDITIONS and c not in attacks]
    if missing:
        raise InputError(f"no attack settings for {missing[0]!r}; got settings for {sorted(attacks)}")
    for entry in entries:
        if entry.source not in generators:
            raise InputError(f"no loaded model for {entry.source!r}")
    table = _resolve(entries, generators)
    sweep = sweep_entries(table, sweep_sigmas, sweep_samples)
    if sweep_sigmas and not sweep:
        raise InputError("a sigma sweep needs at least one generator in --models (bicubic has no sigma)")
    scales = {generators[e.source].scale for e in table}
    if len(scales) != 1:
        raise InputError(f"all models must have the same scale, got scales {sorted(scales)}")
    scale = scales.pop()
    min_side = min_hr_size(scale)
    for pair in pairs:
        if pair.hr.shape[2:] != (pair.lr.shape[2] * scale, pair.lr.shape[3] * scale):
            raise InputError(
                f"{pair.name}: HR {tuple(pair.hr.shape[2:])} is not {scale} x LR {tuple(pair.lr.shape[2:])}"
            )
        if min(pair.hr.shape[2:]) < min_side:
            raise InputError(
                f"{pair.name}: HR is {pair.hr.shape[2]} x {pair.hr.shape[3]}, expected at least {min_side} x "
                f"{min_side} at scale {scale} (the smallest PSNR/SSIM with a {scale}-pixel border and LPIPS "
                "measure)"
            )

    # One computation per distinct (source, sigma, n): table and sweep share rows.
    unique: dict[tuple[str, float | None, int], ModelEntry] = {}
    for entry in [*table, *sweep]:
        unique.setdefault(entry.key, entry)
    by_source: dict[str, list[ModelEntry]] = {}
    for entry in unique.values():
        by_source.setdefault(entry.source, []).append(entry)
    upscalers = {}
    for key, entry in unique.items():
        if entry.smoothed:
            smoothing = SmoothingConfig(sigma=entry.sigma, samples=entry.samples, seed=seed)
            # fp32: the backend casts the module in place, and the attacks share it.
            upscalers[key] = Upscaler(
                generators[entry.source], smoothing, device=dev, precision="fp32", tile=0
            )

    metric = lpips_metric if lpips_metric is not None else LPIPSMetric(dev)
    result = EvaluationResult(
        entries=table,
        sweep=sweep,
        conditions=list(conditions),
        images=[p.name for p in pairs],
        measurements={key: [] for key in unique},
        settings=_settings(conditions, attacks, corruptions, attack_loss, scale, seed, dev),
    )
    total = len(pairs) * len(unique) * len(conditions)
    done = 0
    started = time.perf_counter()
    for index, pair in enumerate(pairs):
        lr = pair.lr.to(dev)
        hr = pair.hr.to(dev)
        hr_u8 = _to_uint8(hr)
        shared: dict[str, torch.Tensor] = {}
        for source, group in by_source.items():
            model = generators[source]
            transferred: dict[AttackConfig, torch.Tensor] = {}
            for condition in conditions:
                for entry in group:
                    # Crafted on the plain generator once per image (cached in ``transferred``), when used.
                    transfer = functools.partial(
                        _transfer,
                        attacks.get(condition),
                        model,
                        lr,
                        hr,
                        attack_loss,
                        transferred,
                        (seed, index, source),
                    )
                    if condition in SMOOTHED_METHODS and entry.smoothed:
                        target = SmoothingTarget(entry.sigma, entry.samples, seed, noise_key=index)  # type: ignore[arg-type]
                        try:
                            adaptive = run_attack(
                                attacks[condition],
                                model,
                                lr,
                                hr,
                                attack_loss,  # type: ignore[arg-type]
                                generator=_cpu_generator(seed, index, source, "pgd"),
                                target=target,
                                noise_generator=_cpu_generator(seed, index, entry.key, condition, "noise"),
                                chunk_size=attack_chunk,
                            )
                        except (RuntimeError, MemoryError) as exc:
                            raise _attack_memory_error(exc, condition, entry.label, attack_chunk) from None
                        # The seed-knowing attacker computes the deployed output exactly, so it also tries the
                        # transferred pgd input and keeps whichever hurts more (_worst).
                        candidates = [adaptive, transfer()] if condition == "pgd-median" else [adaptive]
                    elif condition in ATTACK_CONDITIONS:
                        candidates = [transfer()]
                    else:
                        if condition not in shared:
                            shared[condition] = _corrupt(condition, lr, corruptions, seed, index)
                        candidates = [shared[condition]]
                    scores = [
                        _measure(
                            pair.name, condition, entry, x, model, upscalers, index, hr_u8, metric, scale
                        )
                        for x in candidates
                    ]
                    result.measurements[entry.key].append(_worst(scores))
                    done += 1
                    if progress is not None:
                        progress(done, total, f"{pair.name} · {entry.label} · {condition}")
    result.settings["seconds"] = round(time.perf_counter() - started, 2)
    result.settings["images"] = len(pairs)
    return result


def _measure(
    name: str,
    condition: str,
    entry: ModelEntry,
    x: torch.Tensor,
    model: SRGenerator,
    upscalers: Mapping[tuple[str, float | None, int], Upscaler],
    index: int,
    hr_u8: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], Any],
    scale: int,
) -> Measurement:
    """The three metrics of one entry's SR output for the LR input ``x`` (MRS with the image's noise)."""
    from certsr_rt.metrics import psnr, ssim

    if entry.smoothed:
        sr = upscalers[entry.key](x, noise_key=index)
    else:
        with torch.inference_mode():
            sr = model(x)
    sr_u8 = _to_uint8(sr)
    return Measurement(
        name,
        condition,
        min(psnr(sr_u8, hr_u8, crop_border=scale), PSNR_CAP_DB),
        ssim(sr_u8, hr_u8, crop_border=scale),
        float(metric(sr_u8, hr_u8)),
    )


def _worst(scores: Sequence[Measurement]) -> Measurement:
    """Per metric, the worst of several attack points' scores (lowest PSNR and SSIM, highest LPIPS).

    ``pgd-median`` on an MRS entry scores two inputs, its own median-gradient PGD result and the transferred
    ``pgd`` input: an attacker who knows the seed evaluates the deployed output exactly and keeps, for the
    quantity it wants to damage, whichever input damages it more. So the cell is never better than ``pgd``.
    """
    first = scores[0]
    if len(scores) == 1:
        return first
    return Measurement(
        first.image,
        first.condition,
        min(s.psnr for s in scores),
        min(s.ssim for s in scores),
        max(s.lpips for s in scores),
    )


def _attack_memory_error(
    exc: RuntimeError | MemoryError, condition: str, label: str, chunk: int | None
) -> BaseException:
    """An adaptive attack's allocation failure as one line saying what to change; other errors as they are.

    pgd-eot / pgd-median send every noisy copy of the image through autograd at once unless
    ``--attack-chunk`` says otherwise, so large n or large models run out of memory there first.
    """
    from certsr_rt.errors import first_line
    from certsr_rt.runtime.upscaler import _is_allocation_failure

    if not _is_allocation_failure(exc):
        return exc
    advice = "a smaller --attack-chunk" if chunk is not None and chunk > 1 else "--attack-chunk 4 (or fewer)"
    return InputError(
        f"{condition} against {label} ran out of memory ({first_line(exc)}); use {advice} to send fewer "
        "noisy copies through autograd at a time, or a smaller --crop"
    )


def _transfer(
    config: AttackConfig,
    model: SRGenerator,
    lr: torch.Tensor,
    hr: torch.Tensor,
    loss: SRLossFn | None,
    cache: dict[AttackConfig, torch.Tensor],
    position: tuple[object, ...],
) -> torch.Tensor:
    """The attack crafted on the plain generator, computed once per image and generator.

    ``pgd-eot`` / ``pgd-median`` on a plain model are its ``pgd`` (same settings, same random start), so they
    share its result.
    """
    if config.method in SMOOTHED_METHODS:
        config = config.replace(method="pgd", eot_samples=AttackConfig.eot_samples)
    if config not in cache:
        cache[config] = run_attack(
            config,
            model,
            lr,
            hr,
            loss,
            generator=_cpu_generator(*position, config.method),  # type: ignore[arg-type]
        )
    return cache[config]


def _corrupt(
    condition: str, lr: torch.Tensor, settings: CorruptionSettings, seed: int, index: int
) -> torch.Tensor:
    if condition == "noisy":
        return sensor_noise(lr, settings.noise_sigma, generator=_cpu_generator(seed, index, "noisy"))
    if condition == "blurry":
        return gaussian_blur(lr, settings.blur_kernel_size, settings.blur_sigma)
    if condition == "jpeg":
        return jpeg_compress(lr, settings.jpeg_quality)
    return lr
