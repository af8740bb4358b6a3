"""Cost of `upscale` per bundled model and sample count: wall time, peak memory, share outside the forward.

Each (model, n) runs in a fresh subprocess so its peak RSS is its own. The time inside the backend's
forward is measured by wrapping `Backend.infer`; everything else — reading the PNG, noise generation,
the median, tiling/blending, conversion and writing the PNG — is "outside the forward".

Usage:
    python benchmarks/bench_cost.py --size 64 --samples 1,5,11,21 --out benchmarks/results/cost_cpu.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ["certsr-compact-x4", "realesrgan-x4plus", "realesr-animevideov3-x4"]


def one(model_name: str, n: int, size: int, threads: int, tile: int) -> dict:
    import cv2
    import numpy as np
    import torch

    from certsr_rt import SmoothingConfig, Upscaler
    from certsr_rt.io.images import read_image, write_image

    torch.set_num_threads(threads)
    sigma = 0.0 if n == 1 else 0.03
    up = Upscaler(model_name, SmoothingConfig(sigma=sigma, samples=n), device="cpu", tile=tile)
    forward = {"t": 0.0}
    real_infer = up.backend.infer

    def timed_infer(x, **kwargs):
        t = time.perf_counter()
        out = real_infer(x, **kwargs)
        forward["t"] += time.perf_counter() - t
        return out

    up.backend.infer = timed_infer
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "in.png"
        rng = np.random.default_rng(0)
        img = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (5, 5), 1.5)
        cv2.imwrite(str(src), img)
        # Warm-up on the same shape: oneDNN builds its kernels per shape on first use (one-time cost).
        up(img)
        forward["t"] = 0.0
        t = time.perf_counter()
        out = up(read_image(src), noise_key=1)  # a new noise key: noise generation is timed, not cached
        write_image(Path(d) / "out.png", out)
        total = time.perf_counter() - t
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": model_name,
        "n": n,
        "total_s": total,
        "forward_s": forward["t"],
        "peak_rss_mib": peak_mib,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64, help="LR image side in pixels")
    ap.add_argument("--samples", default="1,5,11,21")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, default=192)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.size, args.threads, args.tile)))
        return
    results = []
    for model in args.models.split(","):
        for n in (int(v) for v in args.samples.split(",")):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                model,
                str(n),
                "--size",
                str(args.size),
                "--threads",
                str(args.threads),
                "--tile",
                str(args.tile),
            ]
            r = json.loads(
                subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
            )
            results.append(r)
            print(r, flush=True)
    lines = [
        "# Cost of `upscale` on CPU: wall time, peak memory, time outside the model's forward",
        "",
        f"- Date: {datetime.date.today().isoformat()}; machine: {platform.machine()} CPU, "
        f"{args.threads} torch threads (shared 2-core machine).",
        f"- Command: `python {' '.join(sys.argv)}`",
        f"- Input: one {args.size}x{args.size} RGB PNG (read, upscaled, written as PNG); "
        f"sigma 0.03 for n > 1; "
        f"tile {args.tile}; after one warm-up call on the same shape. "
        "Peak memory = peak RSS of a fresh process (includes torch itself).",
        "",
        "| model | n | total (s) | forward (s) | outside forward | s per sample | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        outside = 1 - r["forward_s"] / r["total_s"]
        lines.append(
            f"| {r['model']} | {r['n']} | {r['total_s']:.2f} | {r['forward_s']:.2f} | {100 * outside:.1f}% | "
            f"{r['total_s'] / r['n']:.3f} | {r['peak_rss_mib']:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
