"""Join several ``certsr-rt evaluate`` reports of the same images and protocol into one table.

A long table can be split into runs by models (``--models``) or by conditions (``--conditions``), each
with its own ``-o`` folder; this reads each folder's ``results.json`` and writes the joined
``results.md`` / ``.csv`` / ``per_image.csv`` / ``.json`` (every run's command is kept). Runs must share the
images, seed, crop, attack loss and metric settings; a cell measured twice must agree.

Usage:
    python scripts/merge_evaluations.py -o benchmarks/results/robustness eval_a/ eval_b/ eval_c/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Merge the reports named on the command line; 0 on success, 1 (one ``error:`` line) otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="report folders (or their results.json)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the joined report")
    args = parser.parse_args(argv)

    from certsr_rt.errors import CertSRError
    from certsr_rt.evaluation import merge_results, read_report, render_table, write_report

    try:
        merged = merge_results([read_report(run) for run in args.runs], [str(run) for run in args.runs])
        written = write_report(merged, args.output)
    except CertSRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(render_table(merged))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
