"""What an architecture file declares: :class:`Architecture`, and the helpers its state-dict detection uses.

An architecture file (``models/arch/<name>.py``) *is* the description of its network, as in spandrel's
``architectures/<Name>/__init__.py``: the module, how to recognise its state dicts and read their
hyper-parameters, its scale and size multiple, what it costs in memory, whether it runs in half precision,
and its measured tile limits. Nothing outside the file branches on the architecture's name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from certsr_rt.errors import ModelLoadError

__all__ = ["Architecture", "StateDict", "TileLimits", "indices", "preview"]

StateDict = dict[str, torch.Tensor]

Detector = Callable[[StateDict], "tuple[dict[str, Any], StateDict] | None"]
"""``detect(state_dict)``: ``None`` when the keys are not this architecture's, else ``(hyperparameters,
state dict renamed to the module's parameter names)``; raises ``ModelLoadError`` when the keys are this
architecture's but the shapes do not make a network of it."""


@dataclass(frozen=True)
class TileLimits:
    """The smallest tile and tile overlap (LR pixels) whose output is not visibly different from untiled.

    A pixel near a tile's edge is computed without the context beyond the edge; below these sizes seams
    and blocks show. Measured by ``benchmarks/bench_tiles.py`` (``benchmarks/results/tiles_cpu.md``) on
    the registered model ``measured_on``, whose depth (residual blocks or body convolutions) is ``depth``.
    The rule: ``min_tile`` is the smallest measured tile with a mean |tiled - untiled| of at most 1 level
    (of 255) and ``min_overlap`` the smallest overlap that keeps the maximum within 10 levels there.
    """

    min_tile: int
    min_overlap: int
    depth: int
    measured_on: str


def _channels_from_num_ch(hyperparameters: Mapping[str, Any]) -> tuple[int, int]:
    return int(hyperparameters.get("num_in_ch", 3)), int(hyperparameters.get("num_out_ch", 3))


def _no_multiple(hyperparameters: Mapping[str, Any]) -> int:
    return 1


@dataclass(frozen=True)
class Architecture:
    """One super-resolution architecture, as the loader, the registry and the runtime need to know it.

    Attributes:
        name: the name stored in ``SRModel.architecture``, ``ModelSpec.architecture`` and checkpoints'
            ``certsr_meta`` (e.g. ``"RRDBNet"``).
        module: the ``nn.Module`` class; its keyword arguments are the hyper-parameters.
        detect: recognises a state dict of this architecture (see :data:`Detector`).
        scale: the upscaling factor of a module built from the given hyper-parameters.
        bytes_per_lr_pixel: rough peak activation bytes per LR pixel per sample (fp32 inference), for the
            Upscaler's chunk size.
        label: how error messages name it among the recognised checkpoints.
        supports_half: whether fp16 inference is meaningful (the runtime still checks outputs for inf/NaN).
        channels: ``(in_channels, out_channels)`` of a module built from the given hyper-parameters.
        size_multiple: the module's input height and width must be multiples of this (the descriptor pads).
        depth_key: the hyper-parameter whose value picks the tile limits (blocks or convolutions).
        tile_limits: measured limits by depth, shallowest first (see :func:`tile_limits`).
        output_conv: for a network without an input-to-output skip, the final convolution whose weight and
            bias generated test weights rescale into the visible range; ``None`` for one with a skip.
    """

    name: str
    module: type[nn.Module]
    detect: Detector
    scale: Callable[[Mapping[str, Any]], int]
    bytes_per_lr_pixel: int
    label: str = ""
    supports_half: bool = True
    channels: Callable[[Mapping[str, Any]], tuple[int, int]] = _channels_from_num_ch
    size_multiple: Callable[[Mapping[str, Any]], int] = _no_multiple
    depth_key: str | None = None
    tile_limits: tuple[TileLimits, ...] = ()
    output_conv: str | None = None

    def build(
        self, hyperparameters: Mapping[str, Any], device: torch.device | str | None = None
    ) -> nn.Module:
        """Build the module from its hyper-parameters.

        Args:
            hyperparameters: keyword arguments of :attr:`module`.
            device: device to build on; ``"meta"`` builds without memory or random initialisation (and
                without touching the global RNG), for counting parameters or loading with ``assign=True``.

        Raises:
            ModelLoadError: hyper-parameters the class rejects.
        """
        try:
            with torch.device(device) if device is not None else nullcontext():
                return self.module(**dict(hyperparameters))
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"cannot build {self.name} with {dict(hyperparameters)}: {exc}") from None


def indices(sd: Mapping[str, Any], pattern: str) -> set[int]:
    """The integers captured by ``pattern`` (one group, matched in full) over the keys of ``sd``."""
    rx = re.compile(pattern)
    return {int(m.group(1)) for k in sd if (m := rx.fullmatch(k))}


def preview(sd: Mapping[str, Any], n: int = 4) -> str:
    """The first ``n`` keys of ``sd``, for error messages."""
    keys = list(sd)
    more = f", ... ({len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(str(k) for k in keys[:n]) + more
