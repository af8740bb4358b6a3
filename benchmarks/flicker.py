"""Temporal flicker of median-smoothed video: the same noise field for every frame vs fresh noise per frame.

Two synthetic clips are made from one texture (smooth gradients, sinusoids, hard-edged shapes, fine
fixed grain), ``--size`` LR pixels, ``--frames`` frames:

* **static**: every frame identical;
* **pan**: the window slides 1 LR pixel to the right per frame (content moves left), a slow pan.

Each clip goes through ``upscale_stream`` with the plain model (n = 1, sigma 0, the reference), with the
shared noise field (default) and with fresh noise per frame. Flicker is the mean absolute difference of
consecutive output frames, in 8-bit levels (0-255), averaged over pixels, channels and frame pairs. For
the pan, consecutive frames differ by real motion too, so the **motion-compensated** flicker compares
output frame t with frame t-1 shifted by the known 4 output pixels, over the interior (``--margin`` output
pixels from each side excluded); what remains is change that is not motion. "vs plain" is the mean absolute
difference between the smoothed frames and the plain model's frames: how large the smoothing's effect is.

Usage:
    python benchmarks/flicker.py --model realesr-animevideov3-x4 --size 96x64 --frames 8 \
        --sigma 0.03 --samples 21 --out benchmarks/results/flicker.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic RGB uint8 texture with flat regions, gradients, edges and fine grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[..., 0] = 0.45 + 0.25 * np.sin(x / 7.0) * np.cos(y / 11.0) + 0.15 * (x / w)
    img[..., 1] = 0.50 + 0.20 * np.sin((x + 2 * y) / 13.0)
    img[..., 2] = 0.40 + 0.30 * (y / h)
    for _ in range(6):  # hard-edged rectangles and discs: the structures SR models sharpen
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        r = rng.integers(4, max(5, h // 4))
        color = rng.random(3).astype(np.float32)
        if rng.random() < 0.5:
            img[max(0, cy - r) : cy + r, max(0, cx - r) : cx + r] = color
        else:
            img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = color
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)  # fixed grain, same in every frame
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def clips(h: int, w: int, frames: int) -> dict[str, list[np.ndarray]]:
    tex = texture(h, w + frames)
    return {
        "static": [tex[:, :w].copy() for _ in range(frames)],
        "pan": [tex[:, t : t + w].copy() for t in range(frames)],
    }


def flicker(out: list[np.ndarray]) -> float:
    return float(np.mean([np.abs(b.astype(np.int16) - a).mean() for a, b in zip(out, out[1:], strict=False)]))


def compensated_flicker(out: list[np.ndarray], shift: int, margin: int) -> float:
    """Frame t vs frame t-1 moved by ``shift`` output pixels: out_t[:, j] ~ out_{t-1}[:, j + shift]."""
    w = out[0].shape[1]
    diffs = []
    for a, b in zip(out, out[1:], strict=False):
        cur = b[margin:-margin, margin : w - shift - margin].astype(np.int16)
        prev = a[margin:-margin, margin + shift : w - margin]
        diffs.append(np.abs(cur - prev).mean())
    return float(np.mean(diffs))


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {gpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="realesr-animevideov3-x4")
    parser.add_argument("--size", default="96x64", help="LR WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--sigma", type=float, default=0.03)
    parser.add_argument("--samples", type=int, default=21)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margin", type=int, default=32, help="output pixels excluded at each border")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from certsr_rt import SmoothingConfig, Upscaler
    from certsr_rt.runtime.stream import upscale_stream

    w, h = (int(v) for v in args.size.lower().split("x"))
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.perf_counter()
    plain = Upscaler(args.model, SmoothingConfig(sigma=0.0, samples=1), device=args.device)
    smooth = Upscaler(args.model, SmoothingConfig(args.sigma, args.samples, args.seed), device=args.device)
    scale = smooth.scale
    rows = []
    for name, frames in clips(h, w, args.frames).items():
        reference = list(upscale_stream(plain, frames))
        results = {"plain (n = 1, sigma 0)": reference}
        for label, fresh in (("shared noise field (default)", False), ("fresh noise per frame", True)):
            results[label] = list(upscale_stream(smooth, frames, fresh_noise=fresh))
        for label, out in results.items():
            row = {"clip": name, "mode": label, "flicker": flicker(out)}
            if name == "pan":
                row["compensated"] = compensated_flicker(out, scale, args.margin)
            row["vs_plain"] = float(
                np.mean([np.abs(o.astype(np.int16) - r).mean() for o, r in zip(out, reference, strict=True)])
            )
            rows.append(row)
            print(row, flush=True)
    elapsed = time.perf_counter() - t_start

    lines = [
        f"# Flicker: shared noise field vs fresh noise per frame ({args.model}, sigma {args.sigma}, "
        f"n = {args.samples})",
        "",
        f"- command: `python {shlex.join(sys.argv)}`",
        f"- machine: {machine()} (shared with other jobs; timing does not affect these numbers)",
        f"- date: {started:%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s",
        f"- clips: synthetic {w}x{h} LR texture, {args.frames} frames; static = identical frames, pan = 1 LR "
        f"pixel per frame; output {scale * w}x{scale * h}",
        "- values: mean absolute difference in 8-bit levels (0-255); compensated = after undoing the known "
        f"{scale}-pixel output motion, {args.margin}-pixel border excluded",
        "",
        "| clip | mode | flicker (consecutive frames) | motion-compensated flicker | vs plain model |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        comp = f"{r['compensated']:.3f}" if "compensated" in r else "—"
        lines.append(f"| {r['clip']} | {r['mode']} | {r['flicker']:.3f} | {comp} | {r['vs_plain']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
