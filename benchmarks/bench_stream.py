"""Frames per second through the frame stream with ``batch`` 1 vs 4, side by side in one run (CPU).

One Upscaler (``certsr-compact-x4`` by default, sigma 0.03, n = 21, fixed noise) is fed the same synthetic
frames through :func:`certsr_rt.runtime.stream.upscale_stream` with ``batch=1`` and with ``batch=4``, in
alternating rounds (1, 4, 1, 4, ...) so that drift of a shared machine falls on both. With ``batch=4`` up to
4 waiting frames are one Upscaler call, and their noisy copies share backend calls (N x k forwards per
call). The frames of both settings are checked to be identical, then frames/s per setting (the median over
the rounds) and the ratio batch 4 / batch 1 are written as a markdown table.

Usage:
    python benchmarks/bench_stream.py --size 64x64 --samples 21 --frames 8 --rounds 3 \
        --out benchmarks/results/stream_batch.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def synthetic_frames(h: int, w: int, count: int) -> list[np.ndarray]:
    """Smooth gradients with a moving bar: ``count`` frames ``h x w x 3`` uint8."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(count):
        img = np.stack([x / w, y / h, 0.5 + 0.5 * np.sin((x + 3 * i) / 5)], axis=2)
        img[:, (2 * i) % w : (2 * i) % w + 3] = 0.95
        frames.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return frames


def run_once(up: object, frames: list[np.ndarray], batch: int) -> tuple[float, list[np.ndarray], int]:
    """Seconds for all frames through the stream, the outputs, and the number of Upscaler calls."""
    from certsr_rt.runtime.stream import upscale_stream

    start = time.perf_counter()
    with upscale_stream(up, frames, batch=batch, queue_size=max(4, 2 * batch)) as stream:  # type: ignore[arg-type]
        out = list(stream)
    return time.perf_counter() - start, out, stream.stats.upscaler_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="certsr-compact-x4")
    parser.add_argument("--size", default="64x64", help="LR frame size WxH")
    parser.add_argument("--samples", type=int, default=21)
    parser.add_argument("--frames", type=int, default=8, help="frames per round (a multiple of 4)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--machine", default=f"{os.cpu_count()} CPU cores")
    parser.add_argument("--note", default="", help="a line added under the table (e.g. machine shared)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from certsr_rt import SmoothingConfig, Upscaler

    w, h = (int(v) for v in args.size.lower().split("x"))
    frames = synthetic_frames(h, w, args.frames)
    up = Upscaler(args.model, SmoothingConfig(sigma=0.03, samples=args.samples, seed=0), device="cpu")
    up(frames[:2])  # warm-up (allocator, thread pool), not timed
    per_call = {b: up._plan(h, w, 3, b).chunks for b in (1, 4)}  # backend calls' sizes, for the record
    fps: dict[int, list[float]] = {1: [], 4: []}
    calls: dict[int, int] = {}
    reference = None
    for _ in range(args.rounds):
        for batch in (1, 4):
            seconds, out, calls[batch] = run_once(up, frames, batch)
            fps[batch].append(len(frames) / seconds)
            if reference is None:
                reference = out
            elif not all(np.array_equal(a, b) for a, b in zip(out, reference, strict=True)):
                raise SystemExit(f"batch {batch} gave other frames than batch 1")
    up.close()
    median = {b: statistics.median(v) for b, v in fps.items()}
    ratio = median[4] / median[1]
    lines = [
        f"# Frame stream: batch 1 vs 4 ({args.model}, CPU)",
        "",
        f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
        f"- machine: {args.machine} ({platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads); date: {datetime.date.today().isoformat()}",
        f"- {args.frames} synthetic {w}x{h} uint8 frames per round, sigma 0.03, n = {args.samples}, fixed "
        f"noise, default tiling (one tile), {args.rounds} rounds alternating batch 1 and 4; frames/s is the "
        "median over the rounds; the outputs of both settings are identical (checked)",
        f"- samples per backend call of one frame: {per_call[1]}; with 4 frames per Upscaler call: "
        f"{per_call[4]} per (frame, tile) pair",
        "",
        "| batch | Upscaler calls per round | frames/s (median) | frames/s per round |",
        "|---|---|---|---|",
    ]
    for b in (1, 4):
        rounds = ", ".join(f"{v:.3f}" for v in fps[b])
        lines.append(f"| {b} | {calls[b]} | {median[b]:.3f} | {rounds} |")
    lines += ["", f"**Ratio batch 4 / batch 1: {ratio:.2f}x**"]
    if args.note:
        lines += ["", args.note]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
