"""Seconds per image of each ``evaluate`` condition: one Set5 image, 48 x 48 LR centre crop, one thread.

Each (model spec, condition) is a separate :func:`certsr_rt.evaluation.evaluate` call on Set5's first image
(LR_x4 file, centre crop), so a smoothed entry's transfer condition includes crafting the attack on the plain
generator (in a full table that attack is shared by every entry of the generator). Prints one JSON line per
measurement. Run with ``OMP_NUM_THREADS=1``; results: benchmarks/results/evaluate_cost_cpu.md.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_evaluate_cpu.py \\
        "realesr-animevideov3-x4@sigma=0.06:n=21|clean,pgd,pgd-eot,pgd-median" [--attack-loss l1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ASSETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "assets"


def main() -> None:
    """Time each ``SPEC|COND,COND`` job given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="+", help="'MODEL_SPEC|condition,condition'")
    parser.add_argument("--attack-loss", choices=["l1+perceptual", "l1"], default="l1+perceptual")
    parser.add_argument("--crop", type=int, default=48)
    args = parser.parse_args()
    from certsr_rt.evaluation import evaluate, load_generators, load_image_pairs, parse_model_specs
    from certsr_rt.losses import PerceptualLoss, SRLoss
    from certsr_rt.metrics import LPIPSMetric

    torch.set_num_threads(1)
    set5 = ASSETS / "data" / "Set5"
    pairs = load_image_pairs(set5 / "HR", set5 / "LR_x4", limit=1, crop=args.crop)
    loss = SRLoss(PerceptualLoss() if args.attack_loss == "l1+perceptual" else None)
    metric = LPIPSMetric()
    for job in args.jobs:
        spec, conditions = job.split("|")
        entries = parse_model_specs(spec)
        generators = load_generators(entries, "cpu")
        for condition in conditions.split(","):
            start = time.perf_counter()
            result = evaluate(
                entries, pairs, [condition], generators=generators, attack_loss=loss, lpips_metric=metric
            )
            seconds = time.perf_counter() - start
            cell = result.cell(result.entries[0], condition)
            row = {"spec": spec, "condition": condition, "attack_loss": args.attack_loss}
            row.update(seconds=round(seconds, 2), psnr_y=round(cell.psnr, 3))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
