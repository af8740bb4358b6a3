"""Join several ``certsr-rt evaluate`` reports of the same images and protocol into one table.

A long table can be split into runs by models (``--models``) or by conditions (``--conditions``), each
with its own ``-o`` folder; this reads each folder's ``results.json`` and writes the joined
``results.md`` / ``.csv`` / ``per_image.csv`` / ``.json`` (every run's command is kept). Runs must share the
images, seed, crop, attack loss and metric settings; a cell measured twice must agree. A row that was
measured again in a later run (after a fix) is left out of the older run with ``--drop FOLDER=LABEL``.

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
    parser.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="FOLDER=LABEL",
        help="leave the row LABEL of the run FOLDER out (repeatable), e.g. a row re-measured in another run",
    )
    args = parser.parse_args(argv)

    from certsr_rt.errors import CertSRError
    from certsr_rt.evaluation import merge_results, read_report, render_table, write_report

    try:
        results = [read_report(run) for run in args.runs]
        for item in args.drop:
            folder, sep, label = item.partition("=")
            matches = [k for k, run in enumerate(args.runs) if sep and Path(folder) == run]
            if not matches:
                raise CertSRError(f"--drop expects FOLDER=LABEL with FOLDER one of the runs, got {item!r}")
            result = results[matches[0]]
            keep = [e for e in result.entries if e.label != label]
            if len(keep) == len(result.entries):
                labels = ", ".join(e.label for e in result.entries)
                raise CertSRError(f"--drop {item!r}: {folder} has no row {label!r} (rows: {labels})")
            dropped = {e.key for e in result.entries} - {e.key for e in keep}
            result.entries = keep
            result.measurements = {k: v for k, v in result.measurements.items() if k not in dropped}
        merged = merge_results(results, [str(run) for run in args.runs])
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
