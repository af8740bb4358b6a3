"""Plot LPIPS against sigma for several models from ``sigma_sweep.csv`` files of ``certsr-rt evaluate``.

A sweep may be split over several runs (e.g. by sigma); every row of every file is drawn, one line per
(model, condition), so base and fine-tuned models can be compared on one figure.

Usage:
    python scripts/plot_sigma_sweeps.py -o sweep.png run_a/sigma_sweep.csv run_b/sigma_sweep.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def main() -> None:
    """Command line: ``plot_sigma_sweeps.py -o PNG CSV [CSV ...] [--title T]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--title", default="LPIPS against the smoothing sigma (n = 21; sigma 0 = plain)")
    args = parser.parse_args()
    series: dict[tuple[str, str], dict[float, float]] = {}
    for path in args.csv:
        if not path.is_file():
            sys.exit(f"error: sweep file not found: {path}")
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                key = (row["model"], row["condition"])
                series.setdefault(key, {})[float(row["sigma"])] = float(row["lpips_alex"])
    if not series:
        sys.exit("error: the sweep files have no rows")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    models = list(dict.fromkeys(m for m, _ in series))
    styles = {"clean": "-", "noisy": "--"}
    for (model, condition), points in series.items():
        sigmas = sorted(points)
        ax.plot(
            sigmas,
            [points[s] for s in sigmas],
            styles.get(condition, ":"),
            marker="o",
            ms=3,
            color=f"C{models.index(model)}",
            label=f"{model}, {condition}",
        )
    ax.set_xlabel("σ (noise std, [0, 1] units)")
    ax.set_ylabel("LPIPS-alex (lower is better)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(args.output)


if __name__ == "__main__":
    main()
