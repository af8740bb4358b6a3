"""Checkpoint files of a training run: atomic writes, the two file kinds, finding the newest, pruning.

Each checkpoint is a pair in ``<output_dir>/checkpoints/``:

* ``net_g_<iteration>.pth`` — the generator in the format :func:`certsr_rt.models.load_model` reads:
  ``{"params": state_dict, "params_ema": state_dict, "certsr_meta": {"architecture", "hyperparameters",
  "scale", "default_sigma", "name"}}``. Usable directly as ``--model path/to/net_g_....pth``.
* ``state_<iteration>.pth`` — everything else an exact resume needs (optimizers, discriminator, loss scaler,
  noise-generator state, iteration, the config). It names its generator file.

Both hold plain Python types and tensors only, so ``torch.load(weights_only=True)`` reads them. Each file is
written atomically (:mod:`certsr_rt.io.atomic`: a temporary name in the same folder, flushed to disk and
renamed over the target), so a kill leaves either the old file or the new one. The
state file is written last: its presence means the pair is complete. ``net_g_latest.pth`` in the output
folder always points at the newest generator (a hard link where the file system allows, else a copy).

A resume (:func:`resume_path`, :func:`read_resume`) refuses a checkpoint whose run had other settings that
define the trajectory (:data:`TRAJECTORY_KEYS`) or another architecture, and :func:`trim_log` drops the loss
log's lines past the resume point.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from certsr_rt.errors import InputError
from certsr_rt.io.atomic import AtomicFile, write_atomic

__all__ = [
    "STATE_FORMAT",
    "TRAJECTORY_KEYS",
    "Resume",
    "atomic_save",
    "checkpoint_paths",
    "find_latest_state",
    "generator_payload",
    "load_state_file",
    "prune_checkpoints",
    "publish_latest",
    "read_resume",
    "resume_path",
    "save_checkpoint",
    "training_state",
    "trim_log",
]

STATE_FORMAT = "certsr-train-state/1"
"""Value of the ``"format"`` key of a training-state file."""

_STATE_RE = re.compile(r"^state_(\d+)\.pth$")

TRAJECTORY_KEYS = (
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
"""Settings that define the optimisation trajectory: a resume must not change them."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (:mod:`certsr_rt.io.atomic`).

    Args:
        obj: what to save.
        path: the destination (its folder is created).

    Returns:
        The destination path.
    """
    with AtomicFile(path) as f, open(f.temporary, "wb") as fh:
        torch.save(obj, fh)
    return f.target


def _cpu_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def generator_payload(
    params: Mapping[str, torch.Tensor],
    params_ema: Mapping[str, torch.Tensor],
    *,
    architecture: str,
    hyperparameters: Mapping[str, Any],
    scale: int,
    default_sigma: float | None,
    name: str,
) -> dict[str, Any]:
    """The generator checkpoint dict in the loader's format (CPU tensors, plain-typed metadata).

    Args:
        params: the trained generator's state dict.
        params_ema: the EMA generator's state dict (what the loader prefers).
        architecture: ``"RRDBNet"`` or ``"SRVGGNetCompact"``.
        hyperparameters: keyword arguments that rebuild the module.
        scale: the upscaling factor.
        default_sigma: recommended smoothing sigma, or ``None``.
        name: the model's name.

    Returns:
        ``{"params", "params_ema", "certsr_meta"}``.
    """
    meta = {
        "architecture": str(architecture),
        "hyperparameters": {str(k): _plain(v) for k, v in hyperparameters.items()},
        "scale": int(scale),
        "default_sigma": None if default_sigma is None else float(default_sigma),
        "name": str(name),
    }
    return {"params": _cpu_state_dict(params), "params_ema": _cpu_state_dict(params_ema), "certsr_meta": meta}


def _plain(value: Any) -> Any:
    """Python scalars/containers only, so that ``weights_only`` loading accepts the metadata."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    raise TypeError(f"checkpoint metadata must be plain Python values, got {type(value).__name__}")


def checkpoint_paths(output_dir: str | Path, iteration: int) -> tuple[Path, Path]:
    """``(generator file, state file)`` of the checkpoint after ``iteration`` updates."""
    folder = Path(output_dir) / "checkpoints"
    return folder / f"net_g_{iteration:08d}.pth", folder / f"state_{iteration:08d}.pth"


def publish_latest(generator_file: Path, output_dir: str | Path) -> Path:
    """Atomically point ``<output_dir>/net_g_latest.pth`` at ``generator_file`` (hard link, else copy)."""
    with AtomicFile(Path(output_dir) / "net_g_latest.pth") as f:
        f.temporary.unlink()  # a hard link needs a free name
        try:
            os.link(generator_file, f.temporary)
        except OSError:
            shutil.copyfile(generator_file, f.temporary)
    return f.target


def _state_files(output_dir: str | Path) -> list[tuple[int, Path]]:
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for f in folder.iterdir():
        m = _STATE_RE.match(f.name)
        if m:
            found.append((int(m.group(1)), f))
    return sorted(found)


def find_latest_state(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint's state file in ``output_dir``, or ``None`` when there is none."""
    for iteration, state in reversed(_state_files(output_dir)):
        gen, _ = checkpoint_paths(output_dir, iteration)
        if gen.is_file():
            return state
    return None


def prune_checkpoints(output_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoint pairs (``keep == 0`` keeps all).

    Returns:
        The deleted files.
    """
    if keep <= 0:
        return []
    removed = []
    for iteration, state in _state_files(output_dir)[:-keep]:
        gen, _ = checkpoint_paths(output_dir, iteration)
        for f in (state, gen):  # state first: a half-pruned pair is never mistaken for complete
            if f.exists():
                f.unlink()
                removed.append(f)
    return removed


def load_state_file(path: str | Path) -> dict[str, Any]:
    """Read a training-state file (``weights_only``) and check its format.

    Raises:
        InputError: missing file, not a training-state file, or an unknown format version.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"resume: expected a training-state file (state_<iteration>.pth), got {str(p)!r}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds for a bad file
        raise InputError(
            f"resume: cannot read {p} as a training-state file ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise InputError(f"resume: {p} is not a training-state file of format {STATE_FORMAT!r}, got {got!r}")
    return state


def training_state(
    *,
    iteration: int,
    config: Mapping[str, Any],
    world_size: int,
    elapsed_s: float,
    optimizer_g: torch.optim.Optimizer,
    optimizer_d: torch.optim.Optimizer | None,
    net_d: torch.nn.Module | None,
    scaler: torch.amp.GradScaler,
    noise_generator: torch.Generator,
    log_window: Mapping[str, Any],
    output_dir: str | Path,
) -> dict[str, Any]:
    """The training-state file's dict (everything but the generator weights), plain types and tensors only.

    Args:
        iteration: updates done.
        config: the run's settings (``TrainConfig.to_dict()``).
        world_size: the number of processes.
        elapsed_s: training wall time so far, over all resumes.
        optimizer_g: the generator's optimiser.
        optimizer_d: the discriminator's, or ``None``.
        net_d: the discriminator, or ``None``.
        scaler: the loss scaler (saved only when enabled).
        noise_generator: the MRS-noise generator.
        log_window: the loss log's partial window.
        output_dir: the run's folder (names the generator file).
    """
    return {
        "format": STATE_FORMAT,
        "iteration": iteration,
        "generator_file": checkpoint_paths(output_dir, iteration)[0].name,
        "config": dict(config),
        "world_size": world_size,
        "elapsed_s": float(elapsed_s),
        "optimizer_g": optimizer_g.state_dict(),
        "optimizer_d": optimizer_d.state_dict() if optimizer_d is not None else None,
        "net_d": {k: v.detach().cpu().clone() for k, v in net_d.state_dict().items()}
        if net_d is not None
        else None,
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "noise_rng": noise_generator.get_state(),
        "data": {"seed": config["seed"], "next_sample": iteration * config["batch_size"]},
        "log_window": dict(log_window),
    }


def save_checkpoint(
    output_dir: str | Path, iteration: int, generator: Any, state: Any, *, keep: int
) -> tuple[Path, Path]:
    """Write the generator file, then the state file; update ``net_g_latest.pth``; prune old pairs.

    Args:
        output_dir: the run's folder.
        iteration: updates done (names the files).
        generator: the generator file's dict (:func:`generator_payload`).
        state: the state file's dict (:func:`training_state`).
        keep: how many pairs to keep (0: all).

    Returns:
        ``(generator file, state file)``.
    """
    gen_file, state_file = checkpoint_paths(output_dir, iteration)
    atomic_save(generator, gen_file)
    atomic_save(state, state_file)
    publish_latest(gen_file, output_dir)
    prune_checkpoints(output_dir, keep)
    return gen_file, state_file


def resume_path(resume: str | None, output_dir: str | Path) -> Path | None:
    """The state file a run resumes from, or ``None`` for a fresh start.

    ``None`` without ``resume`` or, for ``"auto"``, without a checkpoint in ``output_dir``; else the newest
    checkpoint's state file or the given path.
    """
    if resume is None:
        return None
    if resume == "auto":
        return find_latest_state(output_dir)
    return Path(resume)


@dataclass(frozen=True)
class Resume:
    """A checked checkpoint to continue from.

    Attributes:
        state_file: the training-state file.
        state: its dict (:func:`training_state`).
        generator_file: the generator file beside it.
        params: the generator's weights.
        params_ema: the EMA generator's weights.
    """

    state_file: Path
    state: dict[str, Any]
    generator_file: Path
    params: dict[str, torch.Tensor]
    params_ema: dict[str, torch.Tensor]


def read_resume(
    path: str | Path, *, config: Mapping[str, Any], architecture: str, hyperparameters: Mapping[str, Any]
) -> Resume:
    """Read a checkpoint pair and check that it continues the run ``config`` describes.

    Args:
        path: the training-state file.
        config: this run's settings (``TrainConfig.to_dict()``).
        architecture: the architecture of the model this run starts from.
        hyperparameters: its hyper-parameters.

    Raises:
        InputError: not a training-state file, made with settings that define another trajectory, its
            generator file is missing, or the architecture differs.
    """
    path = Path(path)
    state = load_state_file(path)
    saved = state["config"]
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r}, now {config[k]!r}"
        for k in TRAJECTORY_KEYS
        if saved.get(k) != config[k]
    ]
    if diffs:
        raise InputError(
            f"resume from {path}: these settings differ from the checkpoint's run, so it would not "
            f"continue the same training (start a new output_dir instead): {'; '.join(diffs)}"
        )
    gen_path = path.parent / state["generator_file"]
    if not gen_path.is_file():
        raise InputError(f"resume: expected the generator file {gen_path} beside {path}, it is missing")
    gen = torch.load(gen_path, map_location="cpu", weights_only=True)
    meta = gen.get("certsr_meta", {})
    if meta.get("architecture") != architecture or meta.get("hyperparameters") != hyperparameters:
        raise InputError(
            f"resume: {gen_path} holds {meta.get('architecture')} {meta.get('hyperparameters')}, "
            f"expected {architecture} {hyperparameters} (the model this config starts from)"
        )
    return Resume(path, state, gen_path, gen["params"], gen["params_ema"])


def trim_log(log_file: str | Path, iteration: int) -> None:
    """Drop the loss log's lines past ``iteration`` (written after the checkpoint by a killed run)."""
    log_file = Path(log_file)
    if not log_file.is_file():
        return
    kept = []
    for line in log_file.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["iteration"] <= iteration:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    write_atomic(log_file, "".join(k + "\n" for k in kept).encode("utf-8"))
