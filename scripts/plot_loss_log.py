"""Plot a training run's ``loss_log.jsonl`` (written by ``certsr-rt train``) as a PNG.

Usage:
    python scripts/plot_loss_log.py runs/x/loss_log.jsonl benchmarks/results/x_loss.png --title "..."
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> None:
    """Command line: ``plot_loss_log.py LOG PNG [--title T] [--smooth K]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--title", default="")
    parser.add_argument("--smooth", type=int, default=10, help="moving average over this many log lines")
    args = parser.parse_args()
    if not args.log.is_file():
        sys.exit(f"error: loss log not found: {args.log}")
    rows = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
    if not rows:
        sys.exit(f"error: {args.log} has no log lines")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    it = np.array([r["iteration"] for r in rows])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in ((axes[0], "l_g", "generator loss l_g"), (axes[1], "l_pix", "weighted L1 l_pix")):
        y = np.array([r[key] for r in rows])
        ax.plot(it, y, lw=0.6, alpha=0.4, color="C0", label="per log line")
        k = max(1, min(args.smooth, len(y)))
        if k > 1:
            avg = np.convolve(y, np.ones(k) / k, mode="valid")
            ax.plot(it[k - 1 :], avg, lw=1.6, color="C1", label=f"moving mean of {k}")
        ax.set_xlabel("iteration")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title, fontsize=10)
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=110)
    print(args.png)


if __name__ == "__main__":
    main()
