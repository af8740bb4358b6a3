"""Overlapping tiles with linear blending, so large images fit in memory without visible seams."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from certsr_rt.errors import InputError
from certsr_rt.models.arch import TileLimits, tile_limits

__all__ = [
    "Tile",
    "TileLimits",
    "blend_weights",
    "make_tiles",
    "max_coverage",
    "resolve_overlap",
    "tile_limits",
    "tile_starts",
]


def resolve_overlap(
    architecture: str,
    hyperparameters: Mapping[str, Any] | None,
    tile: int,
    overlap: int | None,
    default: int = 16,
) -> int:
    """Check ``tile`` against the model's minimum and return the overlap to use.

    Args:
        architecture: the model's architecture name.
        hyperparameters: its hyper-parameters (the depth picks the limits, see
            :func:`~certsr_rt.models.arch.tile_limits`).
        tile: tile size in LR pixels; 0 for no tiling (always accepted).
        overlap: the requested overlap, or None for ``default`` (a quarter of tiles under 64 px), raised to
            the model's floor.
        default: the overlap used for large tiles.

    Returns:
        The overlap in LR pixels.

    Raises:
        InputError: a tile under the model's minimum, or an overlap given below its floor.
    """
    limits = tile_limits(architecture, hyperparameters)
    if 0 < tile < limits.min_tile:
        raise InputError(
            f"tile {tile} px is too small for this {architecture} model: tiles under {limits.min_tile} px "
            "give visibly different output (seams, blocks: the network sees too little context); use "
            f"--tile {limits.min_tile} or more, or --tile 0 for the whole image"
        )
    if overlap is None:
        overlap = max(limits.min_overlap, min(default, tile // 4))
    elif tile > 0 and overlap < limits.min_overlap:
        raise InputError(
            f"tile overlap {overlap} px is too small for this {architecture} model: seams show under "
            f"{limits.min_overlap} px"
        )
    return overlap


@dataclass(frozen=True)
class Tile:
    """One tile of the low-resolution image: rows ``[y0, y1)`` and columns ``[x0, x1)``."""

    y0: int
    y1: int
    x0: int
    x1: int


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of ``tile``-sized tiles covering ``[0, length)``, neighbours overlapping >= ``overlap``.

    The last tile is aligned to the end, so every tile has the full size (when ``length >= tile``) and
    the model always sees the same amount of context.
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def make_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Tiles covering an ``height x width`` image; ``tile <= 0`` means one tile for the whole image."""
    if tile <= 0:
        return [Tile(0, height, 0, width)]
    if overlap >= tile:
        raise ValueError(f"tile overlap must be smaller than the tile, got overlap {overlap} >= tile {tile}")
    return [
        Tile(y, min(y + tile, height), x, min(x + tile, width))
        for y in tile_starts(height, tile, overlap)
        for x in tile_starts(width, tile, overlap)
    ]


def _ramp(length: int, ramp_before: int, ramp_after: int, device: torch.device) -> torch.Tensor:
    """1-D weights: linear ramps (never reaching 0) over the first/last ``ramp_*`` entries, 1 elsewhere."""
    w = torch.ones(length, device=device)
    if ramp_before > 0:
        w[:ramp_before] = torch.arange(1, ramp_before + 1, device=device, dtype=torch.float32) / (
            ramp_before + 1
        )
    if ramp_after > 0:
        w[length - ramp_after :] = torch.minimum(
            w[length - ramp_after :],
            torch.arange(ramp_after, 0, -1, device=device, dtype=torch.float32) / (ramp_after + 1),
        )
    return w


def blend_weights(tile: Tile, tiles: list[Tile], scale: int, device: torch.device) -> torch.Tensor:
    """Output-resolution weights for ``tile``: ramps only on sides that overlap a neighbouring tile.

    Image borders keep weight 1, so a single tile has uniform weight and tiling is a no-op.
    """
    ov_top = max((t.y1 - tile.y0 for t in tiles if t.y0 < tile.y0 < t.y1 and _cols_meet(t, tile)), default=0)
    ov_bottom = max(
        (tile.y1 - t.y0 for t in tiles if t.y0 < tile.y1 < t.y1 and _cols_meet(t, tile)), default=0
    )
    ov_left = max((t.x1 - tile.x0 for t in tiles if t.x0 < tile.x0 < t.x1 and _rows_meet(t, tile)), default=0)
    ov_right = max(
        (tile.x1 - t.x0 for t in tiles if t.x0 < tile.x1 < t.x1 and _rows_meet(t, tile)), default=0
    )
    wy = _ramp((tile.y1 - tile.y0) * scale, ov_top * scale, ov_bottom * scale, device)
    wx = _ramp((tile.x1 - tile.x0) * scale, ov_left * scale, ov_right * scale, device)
    return wy[:, None] * wx[None, :]


def _cols_meet(a: Tile, b: Tile) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1


def _rows_meet(a: Tile, b: Tile) -> bool:
    return a.y0 < b.y1 and b.y0 < a.y1


def max_coverage(tiles: list[Tile]) -> int:
    """The most tiles that cover any one pixel (1 for a single tile or tiles that do not overlap).

    Blended outputs mix that many independently smoothed tiles at a pixel; certified bounds there use
    the union bound over them (see :func:`certsr_rt.smoothing.certify.certified_ranks`, ``union``).
    """
    if len(tiles) <= 1:
        return 1
    height = max(t.y1 for t in tiles)
    width = max(t.x1 for t in tiles)
    coverage = torch.zeros(height, width, dtype=torch.int32)
    for t in tiles:
        coverage[t.y0 : t.y1, t.x0 : t.x1] += 1
    return int(coverage.max())
