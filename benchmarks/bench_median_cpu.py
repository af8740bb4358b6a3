"""CPU: the median (and certified-bound ranks) over n samples — sort vs selection network vs torch built-ins.

What the Upscaler runs on CPU after the forward passes: ``aggregate.median_and_order_statistics`` over the
``n x 3 x H x W`` outputs. Side by side in one process, alternating rounds, one warm-up call each; the
median over rounds is the figure. Every result is checked against the sort (``equals sort``).

Usage:
    python benchmarks/bench_median_cpu.py --shapes 3x256x256,3x720x1280 --rounds 5 \
        --out benchmarks/results/median_cpu.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from certsr_rt.smoothing.aggregate import median_and_order_statistics


def rows(x: torch.Tensor, shape_text: str, ranks: tuple[int, ...], rounds: int) -> list[str]:
    """Table rows for one sample tensor: the median alone, then the median with the extra ranks."""
    n = x.shape[0]
    out = []
    for what, rk in (("median", ()), (f"median + ranks {', '.join(map(str, ranks))}", ranks)):
        if what != "median" and not ranks:
            continue
        methods: dict[str, Callable[[], tuple[torch.Tensor, list[torch.Tensor]]]] = {
            "sort": lambda rk=rk: median_and_order_statistics(x, rk, method="sort"),
            "network": lambda rk=rk: median_and_order_statistics(x, rk, method="network"),
            "auto (network + NaN check of the median)": lambda rk=rk: median_and_order_statistics(x, rk),
        }
        if not rk:
            methods["torch.median(dim=0)"] = lambda: (torch.median(x, dim=0).values, [])
            methods["torch.kthvalue(dim=0)"] = lambda: (torch.kthvalue(x, n // 2 + 1, dim=0).values, [])
        ref_med, ref_stats = methods["sort"]()
        ok = {}
        for label, fn in methods.items():
            med, stats = fn()
            ok[label] = torch.equal(med, ref_med) and all(
                torch.equal(a, b) for a, b in zip(stats, ref_stats, strict=True)
            )
        times: dict[str, list[float]] = {label: [] for label in methods}
        for _ in range(rounds):
            for label, fn in methods.items():
                t = time.perf_counter()
                fn()
                times[label].append((time.perf_counter() - t) * 1e3)
        sort_ms = statistics.median(times["sort"])
        for label, ts in times.items():
            ms = statistics.median(ts)
            out.append(
                f"| {shape_text} | {what} | {label} | {ms:.1f} | {', '.join(f'{t:.1f}' for t in ts)} | "
                f"{sort_ms / ms:.2f}x | {'yes' if ok[label] else 'NO'} |"
            )
            print(out[-1], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=21)
    ap.add_argument("--shapes", default="3x256x256,3x720x1280", help="C x H x W of outputs, comma-separated")
    ap.add_argument("--ranks", default="4,18", help="extra 1-based ranks for the 'with bounds' rows")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.samples
    ranks = tuple(int(r) for r in args.ranks.split(",")) if args.ranks else ()
    load = os.getloadavg()
    lines = [
        f"# CPU: median over n = {n} samples — torch.sort vs the selection network",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs visible, "
        f"{platform.platform()}; torch {torch.__version__}, {args.threads} threads",
        f"- load average before: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}",
        f"- method: float32 N(0, 1) samples, 1 warm-up call each, {args.rounds} alternating rounds, "
        "median reported; 'sort' is what the Upscaler ran before, 'network' what `auto` runs now",
        "",
        "| output C x H x W | what | method | ms (median) | rounds (ms) | vs sort | equals sort |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape_text in args.shapes.split(","):
        shape = tuple(int(s) for s in shape_text.split("x"))
        x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))
        lines += rows(x, shape_text, ranks, args.rounds)
    load = os.getloadavg()
    lines += ["", f"- load average after: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
