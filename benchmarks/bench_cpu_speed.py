"""CPU: seconds per output megapixel of ``certsr-rt upscale`` at n = 21, per bundled model.

What a CPU user should expect. One real low-resolution crop (default 48x48, a 192x192 output) is
upscaled with the default options (n = 21 samples, the model's sigma, tile 192: one tile) on the torch
backend; the best of ``--rounds`` timed calls after one warm-up call is reported, as seconds per output
megapixel. The time is the n forward passes plus the median, both proportional to the pixel count, so
it extrapolates linearly to larger images (tiling adds its overlap: a large image is run on about
(192/160)^2 = 1.44x its pixels at tile 192, overlap 32).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_cpu_speed.py --size 48 --rounds 2
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
from certsr_rt.runtime.upscaler import Upscaler
from certsr_rt.smoothing.config import SmoothingConfig

IMAGE = Path(__file__).parents[1] / "../shared/assets/data/RealSRSet/00003.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="realesrgan-x4plus,realesr-animevideov3-x4")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--samples", type=int, default=21)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--image", type=Path, default=IMAGE)
    args = parser.parse_args()
    image = read_image(args.image)[:, :, :3]
    h, w = image.shape[:2]
    s = args.size
    crop = np.ascontiguousarray(image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s])
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    cpu = f"{os.cpu_count()} CPUs ({platform.processor() or platform.platform()})"
    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
          f"{cpu}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")  # fmt: skip
    print(f"input: {args.image.name}, centre crop {s}x{s} LR -> {4 * s}x{4 * s}; n = {args.samples}")
    print()
    print("| model | rounds (s) | best (s) | s per output MP | a 1920x1080 output (extrapolated) |")
    print("|---|---|---:|---:|---:|")
    for name in args.models.split(","):
        up = Upscaler(name, SmoothingConfig(samples=args.samples, seed=0), device="cpu", backend="torch")
        up.upscale(crop[:16, :16])  # warm-up
        rounds = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            up.upscale(crop)
            rounds.append(time.perf_counter() - t)
        best = min(rounds)
        per_mp = best / ((4 * s) ** 2 / 1e6)
        print(f"| {name} | {', '.join(f'{r:.1f}' for r in rounds)} | {best:.1f} | {per_mp:.0f} | "
              f"{per_mp * 1920 * 1080 / 1e6 / 60:.0f} min |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
