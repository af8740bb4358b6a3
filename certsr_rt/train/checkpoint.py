"""Checkpoint files of a training run: atomic writes, the two file kinds, finding the newest, pruning.

Each checkpoint is a pair in ``<output_dir>/checkpoints/``:

* ``net_g_<iteration>.pth`` — the generator in the format :func:`certsr_rt.models.load_model` reads:
  ``{"params": state_dict, "params_ema": state_dict, "certsr_meta": {"architecture", "hyperparameters",
  "scale", "default_sigma", "name"}}``. Usable directly as ``--model path/to/net_g_....pth``.
* ``state_<iteration>.pth`` — everything else an exact resume needs (optimizers, discriminator, loss scaler,
  noise-generator state, iteration, the config). It names its generator file.

Both hold plain Python types and tensors only, so ``torch.load(weights_only=True)`` reads them. Each file is
written to a temporary name in the same folder, flushed to disk and renamed over the target
(``os.replace`` is atomic on POSIX and Windows), so a kill leaves either the old file or the new one. The
state file is written last: its presence means the pair is complete. ``net_g_latest.pth`` in the output
folder always points at the newest generator (a hard link where the file system allows, else a copy).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from certsr_rt.errors import InputError

__all__ = [
    "STATE_FORMAT",
    "atomic_save",
    "checkpoint_paths",
    "find_latest_state",
    "generator_payload",
    "load_state_file",
    "prune_checkpoints",
    "publish_latest",
]

STATE_FORMAT = "certsr-train-state/1"
"""Value of the ``"format"`` key of a training-state file."""

_STATE_RE = re.compile(r"^state_(\d+)\.pth$")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Args:
        obj: what to save.
        path: the destination (its folder is created).

    Returns:
        The destination path.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


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
    dest = Path(output_dir) / "net_g_latest.pth"
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(generator_file, tmp)
    except OSError:
        shutil.copyfile(generator_file, tmp)
    os.replace(tmp, dest)
    return dest


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
