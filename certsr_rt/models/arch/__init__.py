"""The super-resolution architectures, one file each, and the registry that the rest of the package asks.

Adding an architecture is one new file that defines its module and an :class:`Architecture` (see
``rrdbnet.py``), plus one entry in :data:`_BUILTIN` below; code outside ``models/arch`` looks the
architecture up by name (:func:`get_architecture`) and never branches on it. A caller can register one of
its own at run time (:func:`register_architecture`); :func:`~certsr_rt.models.load_model` then detects and
loads its checkpoints like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from certsr_rt.errors import ModelLoadError
from certsr_rt.models.arch import rrdbnet, srvgg
from certsr_rt.models.arch.base import Architecture, StateDict, TileLimits, preview
from certsr_rt.models.arch.rrdbnet import RRDBNet
from certsr_rt.models.arch.srvgg import SRVGGNetCompact

__all__ = [
    "Architecture",
    "RRDBNet",
    "SRVGGNetCompact",
    "TileLimits",
    "architectures",
    "bytes_per_lr_pixel",
    "detect",
    "find_architecture",
    "get_architecture",
    "register_architecture",
    "tile_limits",
    "unregister_architecture",
]

# The registry: one line per architecture file. Detection tries them in this order.
_BUILTIN = (rrdbnet.ARCHITECTURE, srvgg.ARCHITECTURE)

_REGISTRY: dict[str, Architecture] = {arch.name: arch for arch in _BUILTIN}


def architectures() -> tuple[Architecture, ...]:
    """The registered architectures, in detection order (built-in ones first)."""
    return tuple(_REGISTRY.values())


def register_architecture(arch: Architecture) -> Architecture:
    """Add an architecture, after the registered ones (it is tried last when detecting a state dict).

    Returns:
        ``arch``, so that an architecture file can write ``ARCHITECTURE = register_architecture(...)``.

    Raises:
        ValueError: an architecture of that name is registered already.
    """
    if arch.name in _REGISTRY:
        raise ValueError(f"an architecture named {arch.name!r} is registered already")
    _REGISTRY[arch.name] = arch
    return arch


def unregister_architecture(name: str) -> None:
    """Remove an architecture added with :func:`register_architecture` (the built-in ones stay).

    Raises:
        ValueError: ``name`` is built in or not registered.
    """
    if any(arch.name == name for arch in _BUILTIN) or name not in _REGISTRY:
        raise ValueError(f"{name!r} is not an architecture registered at run time")
    del _REGISTRY[name]


def find_architecture(name: str) -> Architecture | None:
    """The architecture registered as ``name``, or ``None`` (e.g. an engine record that predates it)."""
    return _REGISTRY.get(name)


def get_architecture(name: str) -> Architecture:
    """The architecture registered as ``name``.

    Raises:
        ModelLoadError: no such architecture (the message lists the registered ones).
    """
    arch = _REGISTRY.get(name)
    if arch is None:
        raise ModelLoadError(f"unknown architecture {name!r}; expected one of {sorted(_REGISTRY)}")
    return arch


def detect(state_dict: Mapping[str, Any]) -> tuple[Architecture, dict[str, Any], StateDict]:
    """The architecture whose key layout ``state_dict`` has, its hyper-parameters, and the converted dict.

    Raises:
        ModelLoadError: no registered architecture recognises the keys, or the recognised one finds the
            shapes inconsistent.
    """
    sd = dict(state_dict)
    for arch in _REGISTRY.values():
        found = arch.detect(sd)
        if found is not None:
            hyperparameters, converted = found
            return arch, hyperparameters, converted
    expected = " or ".join(arch.label or arch.name for arch in _REGISTRY.values())
    raise ModelLoadError(
        f"unrecognised state dict ({len(sd)} tensors, first keys: {preview(sd)}); expected {expected} "
        "checkpoint"
    )


def bytes_per_lr_pixel(name: str) -> int:
    """Peak activation bytes per LR pixel per sample of ``name``; unknown: the largest registered one."""
    arch = _REGISTRY.get(name)
    if arch is not None:
        return arch.bytes_per_lr_pixel
    return max(a.bytes_per_lr_pixel for a in _REGISTRY.values())


def tile_limits(name: str, hyperparameters: Mapping[str, Any] | None = None) -> TileLimits:
    """The :class:`TileLimits` for a model of architecture ``name`` with ``hyperparameters``.

    A model gets the limits of the shallowest measured model at least as deep as itself; a deeper one or an
    unknown depth (an exported file), the deepest measured; an architecture without measurements or an
    unknown one, the strictest limits of any architecture.
    """
    arch = _REGISTRY.get(name)
    if arch is None or not arch.tile_limits:
        every = [limit for a in _REGISTRY.values() for limit in a.tile_limits]
        return max(every, key=lambda limit: (limit.min_tile, limit.min_overlap))
    depth = (hyperparameters or {}).get(arch.depth_key) if arch.depth_key is not None else None
    deep_enough = [limit for limit in arch.tile_limits if isinstance(depth, int) and limit.depth >= depth]
    if deep_enough:
        return min(deep_enough, key=lambda limit: limit.depth)
    return max(arch.tile_limits, key=lambda limit: limit.depth)
