"""Training configuration: one frozen dataclass, loaded from a YAML/JSON file plus overrides.

Precedence, lowest to highest: the field defaults below (the paper's settings), the config file, the
overrides (the CLI options that were given). Unknown keys are an error that lists the known ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from certsr_rt.errors import InputError

__all__ = ["ADVERSARIAL_MODES", "MODES", "TrainConfig"]

MODES = ("mrs", "ad-fgsm", "ad-bim", "ad-pgd", "ad-cw")
"""Training modes: median-randomized-smoothing fine-tuning, and adversarial fine-tuning with one attack."""

ADVERSARIAL_MODES = MODES[1:]
_AMP = ("auto", "off", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a fine-tuning run. Defaults are the paper's settings.

    Batch sizes are **global**: with several processes each one takes an equal slice of the batch, so a
    run gives the same result (up to float summation order) on 1, 2 or 8 devices.
    """

    # --- what to train -------------------------------------------------------------------------------
    model: str = "realesrgan-x4plus"
    """Generator to start from: a registered name or a checkpoint path (anything ``load_model`` reads)."""

    mode: str = "mrs"
    """``mrs`` (median-randomized-smoothing fine-tuning) or ``ad-fgsm``/``ad-bim``/``ad-pgd``/``ad-cw``."""

    name: str | None = None
    """Model name written into the checkpoints' metadata; ``None`` gives ``<model>-<mode>``."""

    default_sigma: float | None = None
    """Recommended smoothing sigma written into the checkpoints' metadata; ``None``: in ``mrs`` mode the
    smallest training sigma (0.03 by default), in adversarial modes the starting model's. Re-choose it
    with an LPIPS sweep on validation data before relying on it."""

    # --- data ------------------------------------------------------------------------------------------
    hr_dir: str | None = None
    """Folder of high-resolution training images (png/jpg/bmp/tif/webp). Required."""

    lr_dir: str | None = None
    """Optional folder of matching low-resolution images, paired by name as ``evaluate --lr`` pairs them
    (:func:`certsr_rt.io.pairs.pair_lr_files`: same stem, or the stem plus ``x4`` / ``_LR`` / ``_LRx4``).
    Without it, LR crops are made from the HR crops by antialiased bicubic downscaling."""

    hr_crop: int = 480
    """Side of the square HR training crop, a multiple of the model's scale (LR crop = hr_crop / scale)."""

    augment: bool = True
    """Random horizontal flip, vertical flip and 90-degree rotation of each crop (BasicSR's ``augment``)."""

    quantize_lr: bool = True
    """Round synthesized LR crops to 8 bits, like LR images stored as PNG (paired LR is used as read)."""

    batch_size: int = 5
    """Global number of LR crops per iteration (the paper: 5), before MRS duplication."""

    num_workers: int | None = None
    """DataLoader worker processes per training process; ``None``: 0 on CPU, 4 on GPU."""

    # --- optimisation ----------------------------------------------------------------------------------
    iterations: int = 59_000
    """Total generator updates (the paper fine-tunes for 59k)."""

    lr: float = 1e-4
    """Adam learning rate of the generator."""

    betas: tuple[float, float] = (0.9, 0.99)
    """Adam betas of the generator and the discriminator."""

    lr_milestones: tuple[int, ...] = ()
    """Iterations at which both learning rates are multiplied by ``lr_gamma`` (MultiStepLR)."""

    lr_gamma: float = 0.5
    """Learning-rate decay factor at each milestone."""

    ema_decay: float = 0.999
    """Decay of the exponential moving average of the generator weights (``params_ema``); 0 disables it
    (``params_ema`` is then a copy of ``params``). Short runs want a smaller decay, e.g. 0.99."""

    # --- losses ----------------------------------------------------------------------------------------
    pixel_weight: float = 1e-2
    """Weight of the L1 loss (ESRGAN: 1e-2)."""

    perceptual_weight: float = 1.0
    """Weight of the VGG perceptual loss (ESRGAN: 1); 0 disables it."""

    perceptual_weights: str | None = None
    """Local VGG features file for the perceptual loss (e.g. ``vgg16_features_imagenet1k_v1.pth``);
    ``None`` uses torchvision's VGG19 ImageNet weights (downloaded by torchvision on first use), or where they
    cannot be had the bundled VGG16 ImageNet features, with a warning."""

    perceptual_layers: tuple[str, ...] = ()
    """VGG layers compared by the perceptual loss, each ``"name"`` (weight 1) or ``"name=weight"``, e.g.
    ``("conv5_4",)``; empty means ESRGAN's choice: ``conv5_4`` for VGG19, ``conv5_3`` for VGG16."""

    gan_weight: float = 5e-3
    """Weight of the relativistic-average GAN loss (ESRGAN: 5e-3); 0 disables the discriminator."""

    disc_lr: float = 1e-4
    """Adam learning rate of the discriminator."""

    disc_num_feat: int = 64
    """Base channel count of the VGG-style discriminator."""

    # --- MRS mode --------------------------------------------------------------------------------------
    mrs_sigmas: tuple[float, ...] = (0.03, 0.2)
    """Noise levels of the MRS groups (the paper: 0.03 and 0.2)."""

    mrs_draws: int = 2
    """Noisy copies per sigma group; their predictions are reduced by the median (mean for 2)."""

    mrs_clean: bool = True
    """Add one clean copy as its own group (the paper's 5th copy)."""

    # --- adversarial modes (None = the attack's training preset, i.e. the paper's setting) -------------
    attack_eps: float | None = None
    """L-inf budget in [0, 1] units (presets: FGSM/BIM 9/255, PGD 14/255; unused by CW)."""

    attack_steps: int | None = None
    """Attack iterations (presets: BIM 2, PGD 2, CW 4; FGSM is one step)."""

    attack_step_size: float | None = None
    """Step size of BIM/PGD (preset: eps / steps)."""

    attack_c: float | None = None
    """CW trade-off constant c (preset 1e-2)."""

    attack_lr: float | None = None
    """CW Adam learning rate (preset 1e-2)."""

    # --- runtime ---------------------------------------------------------------------------------------
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``. Under torchrun each process uses
    ``cuda:LOCAL_RANK``."""

    amp: str = "auto"
    """Mixed precision: ``auto`` (on CUDA bf16 when supported, else fp16 with loss scaling; fp32 on the
    CPU), ``bf16`` (CUDA or CPU autocast), ``fp16`` (CUDA only) or ``off``."""

    seed: int = 0
    """Seeds the data stream (image order, crops, flips), the training noise and the attacks."""

    output_dir: str = "runs/train"
    """Where checkpoints, the loss log and the resolved config go."""

    save_every: int = 1000
    """Write a checkpoint every this many iterations (and always at the end)."""

    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep; 0 keeps all."""

    log_every: int = 10
    """Append the averaged losses to ``loss_log.jsonl`` every this many iterations."""

    resume: str | None = None
    """``auto`` (newest checkpoint in ``output_dir``, else start fresh) or a training-state file path."""

    max_minutes: float | None = None
    """Stop (with a checkpoint) after this many minutes of wall time; ``None``: no limit."""

    progress: bool = True
    """Show a progress bar on stderr (rank 0 only)."""

    def __post_init__(self) -> None:
        def need(ok: bool, what: str, value: Any) -> None:
            if not ok:
                raise InputError(f"training config: {what}, got {value!r}")

        need(self.mode in MODES, f"mode must be one of {', '.join(MODES)}", self.mode)
        need(
            self.default_sigma is None or 0.0 <= self.default_sigma <= 1.0,
            "default_sigma must be in [0, 1]",
            self.default_sigma,
        )
        need(self.hr_crop >= 4, "hr_crop must be >= 4", self.hr_crop)
        need(self.batch_size >= 1, "batch_size must be >= 1", self.batch_size)
        need(self.iterations >= 0, "iterations must be >= 0", self.iterations)
        need(self.num_workers is None or self.num_workers >= 0, "num_workers must be >= 0", self.num_workers)
        need(self.lr > 0 and math.isfinite(self.lr), "lr must be a positive number", self.lr)
        need(
            self.disc_lr > 0 and math.isfinite(self.disc_lr),
            "disc_lr must be a positive number",
            self.disc_lr,
        )
        need(
            len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
            "betas must be two numbers in [0, 1)",
            self.betas,
        )
        need(all(m > 0 for m in self.lr_milestones), "lr_milestones must be positive", self.lr_milestones)
        need(0.0 < self.lr_gamma <= 1.0, "lr_gamma must be in (0, 1]", self.lr_gamma)
        need(0.0 <= self.ema_decay < 1.0, "ema_decay must be in [0, 1)", self.ema_decay)
        for key in ("pixel_weight", "perceptual_weight", "gan_weight"):
            value = getattr(self, key)
            need(value >= 0 and math.isfinite(value), f"{key} must be >= 0", value)
        need(
            self.pixel_weight + self.perceptual_weight + self.gan_weight > 0,
            "at least one of pixel_weight, perceptual_weight, gan_weight must be > 0",
            (self.pixel_weight, self.perceptual_weight, self.gan_weight),
        )
        self.perceptual_layer_weights()  # validates the syntax
        need(self.disc_num_feat >= 1, "disc_num_feat must be >= 1", self.disc_num_feat)
        need(all(s > 0 for s in self.mrs_sigmas), "mrs_sigmas must be positive", self.mrs_sigmas)
        need(self.mrs_draws >= 1, "mrs_draws must be >= 1", self.mrs_draws)
        need(
            len(self.mrs_sigmas) > 0 or self.mrs_clean,
            "MRS needs at least one group (mrs_sigmas or mrs_clean)",
            (self.mrs_sigmas, self.mrs_clean),
        )
        need(
            self.attack_eps is None or 0 <= self.attack_eps <= 1,
            "attack_eps must be in [0, 1]",
            self.attack_eps,
        )
        need(
            self.attack_steps is None or self.attack_steps >= 1,
            "attack_steps must be >= 1",
            self.attack_steps,
        )
        for key in ("attack_step_size", "attack_c", "attack_lr"):
            value = getattr(self, key)
            need(value is None or value > 0, f"{key} must be > 0", value)
        need(self.amp in _AMP, f"amp must be one of {', '.join(_AMP)}", self.amp)
        need(0 <= self.seed < 2**31, "seed must be in [0, 2**31)", self.seed)
        need(self.save_every >= 1, "save_every must be >= 1", self.save_every)
        need(self.keep_checkpoints >= 0, "keep_checkpoints must be >= 0", self.keep_checkpoints)
        need(self.log_every >= 1, "log_every must be >= 1", self.log_every)
        need(self.max_minutes is None or self.max_minutes > 0, "max_minutes must be > 0", self.max_minutes)

    # --- construction ----------------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The settable keys, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """Build a config from plain values (from a file or the CLI), converting lists to tuples.

        Args:
            values: key -> value; keys are the field names (``-`` is accepted for ``_``).
            source: where the values came from, for error messages.

        Returns:
            The validated config.

        Raises:
            InputError: an unknown key, or a value of the wrong type or range.
        """
        known = cls.field_names()
        kwargs: dict[str, Any] = {}
        for raw_key, value in values.items():
            key = str(raw_key).replace("-", "_")
            if key not in known:
                raise InputError(f"{source}: unknown key {raw_key!r}; expected one of: {', '.join(known)}")
            kwargs[key] = _coerce(key, value, source)
        try:
            return cls(**kwargs)
        except TypeError as exc:  # pragma: no cover - guarded by _coerce
            raise InputError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
        """Defaults, then the config file at ``path`` (YAML or JSON), then ``overrides``.

        Args:
            path: a ``.yaml``/``.yml``/``.json`` file holding a mapping of field -> value, or ``None``.
            overrides: values that win over the file (``None`` values are ignored: "not given").

        Returns:
            The validated config.
        """
        values: dict[str, Any] = {}
        if path is not None:
            values.update(read_config_file(path))
        for key, value in (overrides or {}).items():
            if value is not None:
                values[key.replace("-", "_")] = value
        return cls.from_mapping(values, source=str(path) if path is not None else "config")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-safe values (tuples become lists)."""
        out: dict[str, Any] = {}
        for key in self.field_names():
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    # --- derived values --------------------------------------------------------------------------------

    def perceptual_layer_weights(self) -> dict[str, float] | None:
        """``perceptual_layers`` as ``{layer: weight}``, or ``None`` for the loss's default layer."""
        if not self.perceptual_layers:
            return None
        out: dict[str, float] = {}
        for item in self.perceptual_layers:
            name, sep, weight = item.partition("=")
            try:
                value = float(weight) if sep else 1.0
            except ValueError:
                value = float("nan")
            if not name.strip() or not math.isfinite(value) or value < 0:
                raise InputError(
                    f"training config: perceptual_layers items must be 'name' or 'name=weight' with a "
                    f"weight >= 0, got {item!r}"
                )
            out[name.strip()] = value
        return out

    @property
    def adversarial(self) -> bool:
        """Whether this is an adversarial fine-tuning mode."""
        return self.mode in ADVERSARIAL_MODES

    @property
    def attack_name(self) -> str | None:
        """``fgsm``/``bim``/``pgd``/``cw`` for adversarial modes, else ``None``."""
        return self.mode[3:] if self.adversarial else None

    @property
    def use_gan(self) -> bool:
        """Whether the discriminator is built and trained."""
        return self.gan_weight > 0

    @property
    def mrs_group_sigmas(self) -> tuple[float, ...]:
        """Sigma of each MRS group in batch order; the clean group (if any) is last, with sigma 0."""
        return tuple(self.mrs_sigmas) + ((0.0,) if self.mrs_clean else ())

    @property
    def mrs_copies(self) -> int:
        """Copies of each LR crop that go through the generator in MRS mode (the paper: 5)."""
        return len(self.mrs_sigmas) * self.mrs_draws + (1 if self.mrs_clean else 0)


_TUPLE_FIELDS = {"betas": float, "lr_milestones": int, "mrs_sigmas": float, "perceptual_layers": str}


def _scalar_kind(key: str) -> type:
    """The scalar type of a non-tuple field, read from its annotation (``"float | None"`` -> float)."""
    hint = str(next(f.type for f in fields(TrainConfig) if f.name == key))
    for kind in (bool, float, int):
        if kind.__name__ in hint:
            return kind
    return str


def _coerce(key: str, value: Any, source: str) -> Any:
    """Check one value's type and normalise it (lists -> tuples, int -> float where a float is wanted)."""
    if key in _TUPLE_FIELDS:
        kind = _TUPLE_FIELDS[key]
        if kind is not str and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if kind is not str and not isinstance(value, (list, tuple)):
            raise InputError(f"{source}: {key} must be a list of {kind.__name__}, got {value!r}")
        if kind is str:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise InputError(f"{source}: {key} must be a list of strings, got {value!r}")
            return tuple(value)
        out = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise InputError(f"{source}: {key} must be a list of {kind.__name__}, got {value!r}")
            if kind is int and float(item) != int(item):
                raise InputError(f"{source}: {key} must be a list of integers, got {value!r}")
            out.append(kind(item))
        return tuple(out)
    if value is None:
        return None
    kind = _scalar_kind(key)
    if kind is bool:
        if not isinstance(value, bool):
            raise InputError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise InputError(f"{source}: {key} must be a string, got {value!r}")
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or JSON (``.json``) mapping.

    Args:
        path: the file.

    Returns:
        The mapping (may be empty).

    Raises:
        InputError: missing file, unknown suffix, a parse error, or a top level that is not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file not found: expected a YAML or JSON file at {p}")
    text = p.read_text(encoding="utf-8")
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        from certsr_rt._deps import require

        yaml = require("yaml", "train", "reading YAML training configs")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"{p}: not valid YAML ({exc})") from None
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}: not valid JSON ({exc})") from None
    else:
        raise InputError(f"config file must end in .yaml, .yml or .json, got {p.name}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(
            f"{p}: expected a mapping of setting -> value at the top level, got {type(data).__name__}"
        )
    return data
