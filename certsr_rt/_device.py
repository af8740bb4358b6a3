"""The one place a device option (``auto``, ``cpu``, ``cuda``, ``cuda:N``) becomes a ``torch.device``."""

from __future__ import annotations

import torch

from certsr_rt.errors import InputError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device, *, check_available: bool = True) -> torch.device:
    """``auto`` -> the current CUDA device when CUDA is available, else CPU; anything else checked as given.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
        check_available: refuse CUDA where it is not available. The backend factory passes False: the
            callers above it have checked, and its own logic is tested on CPU with fake GPU libraries.

    Returns:
        The device, a CUDA one always with its index: ``cuda`` becomes ``cuda:N`` for the current device
        (``cuda:0`` where CUDA is not available and ``check_available`` is False). Tensors report
        ``cuda:N``, and ``torch.device("cuda") != torch.device("cuda:0")``: a device kept without its index
        would not compare equal to the tensors placed on it.

    Raises:
        InputError: not a device name, a device type other than CPU or CUDA, or CUDA requested where it is
            not available.
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"Expected a device such as auto, cpu, cuda or cuda:N, but got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"Expected a device such as auto, cpu, cuda or cuda:N, but got {device!r}")
    if check_available and dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!s} was requested but CUDA is not available (use cpu or auto)")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return dev
