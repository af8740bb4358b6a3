"""CPU: how far tiled output is from untiled output, per architecture, tile size and overlap.

Tiling gives each tile only the context inside it; pixels near a tile edge then differ from the untiled
result. This measures that difference for the plain model (sigma 0, one sample: the smoothing noise is
keyed by pixel position, so tiles see the same noise as the whole image and the difference is the model's
alone) on a real low-resolution crop:

- ``--sweep``: tile sizes x overlaps on small crops, to find the smallest tile (and overlap) whose output
  is not visibly different from untiled; the Upscaler refuses smaller tiles (``models/registry.py``,
  ``TILING``).
- ``--default``: the default tile (192, overlap 16) against untiled on a crop larger than one tile.

Differences are in 8-bit levels of the output (0..255): the mean, the 99.9th percentile and the maximum
of |tiled - untiled| over all pixels and channels.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_tiles.py --sweep --crop 64 \
        --models tiny-rrdbnet,tiny-srvgg,realesrgan-x4plus,realesr-animevideov3-x4
    OMP_NUM_THREADS=1 python benchmarks/bench_tiles.py --default --crop 256 \
        --models realesrgan-x4plus,realesr-animevideov3-x4
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from certsr_rt.io.images import read_image
from certsr_rt.models import load_model
from certsr_rt.runtime.tiling import tile_starts
from certsr_rt.runtime.upscaler import Upscaler
from certsr_rt.smoothing.config import SmoothingConfig

IMAGE = Path(__file__).parents[1] / "../shared/assets/data/BSD100/LR_x4/img_001.png"


def crop(image: np.ndarray, size: str) -> np.ndarray:
    """Centre crop ``WxH`` (or ``S`` for a square)."""
    width, height = (int(v) for v in size.split("x")) if "x" in size else (int(size), int(size))
    h, w = image.shape[:2]
    y, x = max(0, (h - height) // 2), max(0, (w - width) // 2)
    return np.ascontiguousarray(image[y : y + height, x : x + width, :3])


def actual_overlap(length: int, tile: int, overlap: int) -> int:
    """The smallest overlap of neighbouring tiles along one side (the last tile is aligned to the end)."""
    starts = tile_starts(length, tile, overlap)
    return min((tile - (b - a) for a, b in zip(starts, starts[1:], strict=False)), default=0)


def run(model: object, image: np.ndarray, tile: int, overlap: int | None) -> tuple[np.ndarray, float]:
    up = Upscaler(model, SmoothingConfig(sigma=0.0, samples=1, seed=0), device="cpu", tile=0)
    # Set after construction: the Upscaler refuses tiles under the architecture's minimum, which this
    # benchmark is here to find.
    up.tile, up.tile_overlap = tile, (min(16, tile // 4) if overlap is None else overlap)
    t = time.perf_counter()
    out = up.upscale(image).image
    return out.astype(np.float32), time.perf_counter() - t


def stats(a: np.ndarray, b: np.ndarray) -> str:
    d = np.abs(a - b)
    return f"{d.mean():.3f} | {np.percentile(d, 99.9):.1f} | {d.max():.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    models = "tiny-rrdbnet,tiny-srvgg,realesrgan-x4plus,realesr-animevideov3-x4"
    parser.add_argument("--models", default=models)
    parser.add_argument("--crop", default="64", help="centre crop: S or WxH LR pixels")
    parser.add_argument("--image", type=Path, default=IMAGE)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--default", action="store_true")
    parser.add_argument("--tiles", default="4,8,12,16,24,32,48")
    parser.add_argument("--overlaps", default="auto,4,8,12,16")
    parser.add_argument("--pairs", default=None, help="tile:overlap pairs instead of the sweep's grid")
    args = parser.parse_args()
    image = crop(read_image(args.image), args.crop)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    cpu = f"{os.cpu_count()} CPUs ({platform.processor() or platform.platform()})"
    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
          f"{cpu}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")  # fmt: skip
    print(
        f"input: {args.image.name}, centre crop {image.shape[1]}x{image.shape[0]} LR; plain model (sigma 0)"
    )
    print()
    print("| model | tile | overlap (smallest actual) | mean | p99.9 | max | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    grid: list[tuple[int, int | None]] = []
    if args.default:
        grid.append((192, None))
    if args.sweep:
        if args.pairs:
            grid += [(int(t), int(o)) for t, o in (p.split(":") for p in args.pairs.split(","))]
        else:
            for tile in map(int, args.tiles.split(",")):
                for text in args.overlaps.split(","):
                    overlap = None if text == "auto" else int(text)
                    if overlap is None or overlap < tile:
                        grid.append((tile, overlap))
    h, w = image.shape[:2]
    for name in args.models.split(","):
        model = load_model(name)
        reference, seconds = run(model, image, 0, None)
        print(f"| {name} | untiled | - | 0 | 0 | 0 | {seconds:.1f} |", flush=True)
        for tile, overlap in grid:
            out, seconds = run(model, image, tile, overlap)
            shown = min(16, tile // 4) if overlap is None else overlap
            real = [actual_overlap(n, tile, shown) for n in (h, w) if n > tile]
            print(f"| {name} | {tile} | {shown}{' (default)' if overlap is None else ''} "
                  f"({min(real) if real else 'one tile'}) | {stats(out, reference)} | {seconds:.1f} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
