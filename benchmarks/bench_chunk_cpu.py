"""CPU: time of one 21-sample MRS upscale as a function of the chunk size (samples per forward batch).

Side by side in one process, alternating rounds, after a warm-up per batch shape; the minimum over rounds
is the figure (the first round on a shared machine is often disturbed).

Usage:
    python benchmarks/bench_chunk_cpu.py --size 48 --chunks 21,8,3 --rounds 3 \
        --out benchmarks/results/chunk_cpu.md
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from certsr_rt import SmoothingConfig, Upscaler, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="realesrgan-x4plus")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--chunks", default="21,7,3")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    img = (np.random.default_rng(0).random((args.size, args.size, 3)) * 255).astype(np.uint8)
    chunks = [int(c) for c in args.chunks.split(",")]
    ups = {
        c: Upscaler(model, SmoothingConfig(sigma=0.03, samples=21, chunk_size=c), device="cpu", tile=0)
        for c in chunks
    }
    for up in ups.values():
        up(img)
    times: dict[int, list[float]] = {c: [] for c in chunks}
    for r in range(args.rounds):
        for c, up in ups.items():
            t = time.perf_counter()
            up(img, noise_key=r + 1)
            times[c].append(time.perf_counter() - t)
    best = {c: min(ts) for c, ts in times.items()}
    lines = [
        f"# CPU: 21-sample MRS time vs chunk size (`{args.model}`, {args.size}x{args.size} LR)",
        "",
        f"- Date: {datetime.date.today().isoformat()}; machine: {platform.machine()} CPU, "
        f"{args.threads} threads, torch {torch.__version__}; shared 2-core machine "
        "(another job held about one core).",
        f"- Command: `python {' '.join(sys.argv)}`",
        "",
        "| chunk | rounds (s) | best (s) | relative to chunk 21 |",
        "|---|---|---|---|",
    ]
    ref = best.get(21, max(best.values()))
    for c in chunks:
        rounds = ", ".join(f"{t:.1f}" for t in times[c])
        lines.append(f"| {c} | {rounds} | {best[c]:.1f} | {best[c] / ref:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
