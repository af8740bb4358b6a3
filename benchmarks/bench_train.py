"""Seconds per `mrs` fine-tuning iteration on the CPU: the old loss evaluation against the current one.

The setting of issue 9: the compact model (`realesr-animevideov3-x4`), a batch of 4 LR crops of 32 px
(128 px HR), each copied 5 times (2 x sigma 0.03, 2 x sigma 0.2, 1 clean), L1 + VGG perceptual loss, GAN off.

Variants, all measured in this one run on the same batch, interleaved round by round:

- ``before``: the perceptual loss called once per MRS group, each call running VGG on the group's
  predictions *and* on the HR crops again (what `Trainer.generator_backward` did until 2026-12-01),
  fp32;
- ``grouped fp32``: every group's predictions through VGG as one batch, the HR features once
  (`PerceptualLoss.group_losses`, what the trainer does now);
- ``grouped bf16``: the same under CPU bfloat16 autocast (`--amp bf16`): weights, optimiser state and the
  loss stay fp32, convolutions run in bf16;
- ``grouped bf16 + channels_last``: the generator and VGG converted to channels_last (not used by the
  trainer: see the result).

Each variant runs in a fresh ``Trainer`` and applies full updates (forward, backward, Adam, EMA); the
first ``--warmup`` iterations are not timed (oneDNN builds its kernels per shape on first use). Data
loading is timed separately (`Trainer.batch`). The loss of each variant on the first batch is printed so
that one can see they optimise the same thing.

Usage:
    python benchmarks/bench_train.py --threads 1,2 --iterations 4 --out benchmarks/results/train_speed.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "assets"
VARIANTS = ("before", "grouped fp32", "grouped bf16", "grouped bf16 + channels_last")


def make_trainer(variant: str, hr_dir: Path, vgg: str | None, out: Path):
    from certsr_rt.train import TrainConfig
    from certsr_rt.train.trainer import Trainer

    cfg = TrainConfig(
        model="realesr-animevideov3-x4",
        mode="mrs",
        hr_dir=str(hr_dir),
        hr_crop=128,
        batch_size=4,
        perceptual_weights=vgg,
        gan_weight=0.0,
        amp="off" if variant in ("before", "grouped fp32") else "bf16",
        device="cpu",
        output_dir=str(out),
        progress=False,
    )
    trainer = Trainer(cfg, log=lambda _: None)
    if variant == "before":
        loss = trainer.perceptual

        def per_group(preds, hr):  # the old loop: one VGG pass over the HR crops per group
            return torch.stack([loss(pred, hr) for pred in preds])

        loss.group_losses = per_group  # type: ignore[method-assign]
    if variant.endswith("channels_last"):
        trainer.net_g.to(memory_format=torch.channels_last)
        trainer.perceptual.to(memory_format=torch.channels_last)
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--iterations", type=int, default=4, help="timed iterations per variant and round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all variants (interleaved)")
    parser.add_argument("--hr-dir", type=Path, default=SHARED / "data" / "BSD100" / "HR")
    parser.add_argument(
        "--vgg",
        default=str(SHARED / "weights" / "vgg16_features_imagenet1k_v1.pth"),
        help="VGG features file for the perceptual loss ('' = the default backbone)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = parser.parse_args()
    if not args.hr_dir.is_dir():
        sys.exit(f"error: HR folder not found: {args.hr_dir} (pass --hr-dir)")
    threads = [int(t) for t in args.threads.split(",")]

    import tempfile

    results: dict[tuple[int, str], list[float]] = {}
    data_s: list[float] = []
    first_loss: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for t in threads:
            torch.set_num_threads(t)
            for _ in range(args.rounds):
                for variant in VARIANTS:
                    trainer = make_trainer(variant, args.hr_dir, args.vgg or None, Path(tmp) / "run")
                    t0 = time.perf_counter()
                    lr, hr = trainer.batch(0)
                    data_s.append(time.perf_counter() - t0)
                    times = []
                    for i in range(args.warmup + args.iterations):
                        t0 = time.perf_counter()
                        logs = trainer.train_step(lr, hr)
                        if i == 0:
                            first_loss.setdefault(variant, logs["l_g"])
                        if i >= args.warmup:
                            times.append(time.perf_counter() - t0)
                    results.setdefault((t, variant), []).extend(times)
                    print(f"threads {t}  {variant:30s} {statistics.median(times):6.2f} s/it", flush=True)

    lines = [
        "# `mrs` fine-tuning: seconds per iteration on the CPU (issue 9)",
        "",
        f"- command: `python benchmarks/bench_train.py {' '.join(sys.argv[1:])}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__}; load average at the end {os.getloadavg()[0]:.1f}",
        "- setting: realesr-animevideov3-x4, batch 4 LR crops of 32 px x 5 MRS copies, L1 + VGG16 `conv5_3`"
        " perceptual, GAN off, full updates (Adam + EMA)",
        f"- {args.iterations} timed iterations per variant and round after {args.warmup} warm-up, "
        f"{args.rounds} interleaved rounds; median s/iteration; speed-up against `before` at the same "
        "threads",
        f"- data loading (one batch, `Trainer.batch`): median {statistics.median(data_s) * 1000:.0f} ms",
        "",
        "| threads | variant | s / iteration | speed-up | loss at iteration 1 |",
        "|---|---|---|---|---|",
    ]
    for t in threads:
        base = statistics.median(results[(t, "before")])
        for variant in VARIANTS:
            s = statistics.median(results[(t, variant)])
            lines.append(f"| {t} | {variant} | {s:.2f} | {base / s:.2f}x | {first_loss[variant]:.4f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
