"""Quality of the default model under sensor noise: plain vs median randomized smoothing.

Set5 + Set14 LR (bicubic x4, from ../shared/assets/data), centre crops of --crop LR pixels (CPU budget),
sensor noise N(0, 0.03^2) added to the LR (seeded, then clipped to [0, 1] as an image file would be),
upscaled by the model plain (n = 1) and with MRS (n = --samples) at each sigma; PSNR-Y / SSIM-Y (border 4,
BasicSR convention) and LPIPS-alex against the matching HR crop. The same run also scores clean inputs for
the sigmas in --clean-sigmas, so the sigma choice can be read as a trade-off.

Usage:
    python benchmarks/bench_quality.py --crop 32 --sigmas 0,0.01,0.03,0.06 --clean-sigmas 0,0.01 \
        --out benchmarks/results/quality_set5_set14.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from certsr_rt import SmoothingConfig, Upscaler, load_model
from certsr_rt.metrics import LPIPSMetric, psnr, ssim
from certsr_rt.runtime.backends.torch_backend import TorchBackend

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "assets" / "data"


def centre_crop_pair(lr_path: Path, hr_path: Path, crop: int, scale: int = 4):
    lr = cv2.cvtColor(cv2.imread(str(lr_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    hr = cv2.cvtColor(cv2.imread(str(hr_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    h, w = lr.shape[:2]
    c = min(crop, h, w)
    y, x = (h - c) // 2, (w - c) // 2
    return lr[y : y + c, x : x + c], hr[y * scale : (y + c) * scale, x * scale : (x + c) * scale]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="realesrgan-x4plus")
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--samples", type=int, default=21)
    ap.add_argument("--sigmas", default="0,0.03,0.06", help="noisy-input sigmas; 0 = plain model (n = 1)")
    ap.add_argument("--clean-sigmas", default="0", help="clean-input sigmas")
    ap.add_argument("--noise", type=float, default=0.03, help="sensor noise std added to the LR")
    ap.add_argument("--sets", default="Set5,Set14")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not DATA.is_dir():
        sys.exit(f"error: {DATA} not found (needs ../shared/assets/data)")

    model = load_model(args.model)
    lpips = LPIPSMetric()
    pairs = []
    for s in args.sets.split(","):
        for hr in sorted((DATA / s / "HR").glob("*.png")):
            pairs.append((s, hr.name, *centre_crop_pair(DATA / s / "LR_x4" / hr.name, hr, args.crop)))
    conditions = [("noisy", float(v)) for v in args.sigmas.split(",")]
    conditions += [("clean", float(v)) for v in args.clean_sigmas.split(",")]

    rows: dict[tuple[str, float], list[tuple[float, float, float]]] = {c: [] for c in conditions}
    rng = np.random.default_rng(0)
    noise = {name: rng.normal(0, args.noise, lr.shape) for _, name, lr, _ in pairs}
    t0 = time.perf_counter()
    for cond, sigma in conditions:
        n = 1 if sigma == 0 else args.samples
        up = Upscaler(
            model,
            SmoothingConfig(sigma=sigma, samples=n, seed=0),
            device="cpu",
            tile=0,
            backend=TorchBackend(model, "cpu"),
        )
        for _, name, lr, hr in pairs:
            x = lr.astype(np.float32) / 255
            if cond == "noisy":
                x = np.clip(x + noise[name], 0, 1).astype(np.float32)
            sr = up(x)
            sr8 = np.rint(sr * 255).astype(np.uint8)
            rows[(cond, sigma)].append((psnr(sr8, hr, 4, True), ssim(sr8, hr, 4, True), lpips(sr8, hr)))
        print(f"{cond} sigma={sigma}: done at {time.perf_counter() - t0:.0f}s", flush=True)
    wall = time.perf_counter() - t0

    def label(cond: str, sigma: float) -> str:
        return f"{cond}, plain (n = 1)" if sigma == 0 else f"{cond}, MRS sigma {sigma} (n = {args.samples})"

    lines = [
        f"# Quality of `{args.model}` under sensor noise: plain vs median randomized smoothing",
        "",
        f"- Date: {datetime.date.today().isoformat()}; machine: {platform.machine()} CPU, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__} (shared 2-core machine).",
        f"- Command: `python {' '.join(sys.argv)}`",
        f"- Data: {args.sets} ({len(pairs)} images), {args.crop}x{args.crop} LR centre crops "
        f"(bicubic x4 LR from ../shared/assets/data) and the matching "
        f"{args.crop * 4}x{args.crop * 4} HR crops.",
        f"- Noisy = LR + N(0, {args.noise}^2) (numpy seed 0), clipped to [0, 1]. MRS noise seed 0.",
        "- PSNR-Y / SSIM-Y: Y of BT.601 on [16, 235], 4-pixel border shaved (BasicSR). "
        "LPIPS: alex, lower is better.",
        f"- Wall time of the whole run: {wall:.0f} s.",
        "",
        "| input, inference | PSNR-Y (dB) | SSIM-Y | LPIPS |",
        "|---|---|---|---|",
    ]
    summary = {}
    for (cond, sigma), vals in rows.items():
        a = np.asarray(vals)
        m = a.mean(axis=0)
        summary[label(cond, sigma)] = {"psnr_y": m[0], "ssim_y": m[1], "lpips": m[2]}
        lines.append(f"| {label(cond, sigma)} | {m[0]:.2f} | {m[1]:.4f} | {m[2]:.4f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
