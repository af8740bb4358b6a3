"""Writing an :class:`~certsr_rt.evaluation.runner.EvaluationResult`: Markdown, CSV, JSON and the sigma sweep.

Files written into the output folder:

* ``results.md`` — the table (models x conditions, each cell ``PSNR / SSIM / LPIPS``) and the protocol;
* ``results.csv`` — one row per model x condition with the three means;
* ``per_image.csv`` — one row per image x model x condition;
* ``results.json`` — the protocol, the means and the per-image values;
* with a sweep: ``sigma_sweep.md``, ``sigma_sweep.csv`` and ``sigma_sweep.png`` (LPIPS against sigma, one
  line per condition, one panel per model; the lowest LPIPS of each line is marked).

Every file is written atomically (:mod:`certsr_rt.io.atomic`), so an interrupted run never leaves half a file.

A table too long for one run can be split into several ``evaluate`` runs (by models or by conditions) on the
same images and settings; :func:`read_report` reads each one's ``results.json`` back and
:func:`merge_results` joins them into one result (``scripts/merge_evaluations.py`` does both and writes the
joined report).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from certsr_rt._deps import require
from certsr_rt.errors import InputError
from certsr_rt.evaluation.runner import CONDITIONS, PSNR_CAP_DB, EvaluationResult, Measurement, MetricMeans
from certsr_rt.evaluation.specs import ModelEntry, default_label
from certsr_rt.io.atomic import write_atomic

__all__ = ["merge_results", "read_report", "render_table", "write_report", "write_sweep"]


def _make_folder(out_dir: str | Path) -> Path:
    """``out_dir`` as a folder, created if needed.

    Raises:
        InputError: it is an existing file, or cannot be created.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"the report folder {out} is an existing file, expected a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the report folder {out}: {exc.strerror or exc}") from exc
    return out


def _fmt(value: float, digits: int) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def render_table(result: EvaluationResult) -> str:
    """The Markdown table: one row per model, one column per condition, cells ``PSNR / SSIM / LPIPS``."""
    header = "| model | " + " | ".join(result.conditions) + " |"
    rule = "|---|" + "---|" * len(result.conditions)
    lines = [header, rule]
    for entry in result.entries:
        cells = []
        for condition in result.conditions:
            m = result.cell(entry, condition)
            cells.append(f"{_fmt(m.psnr, 2)} / {_fmt(m.ssim, 4)} / {_fmt(m.lpips, 4)}")
        lines.append(f"| {entry.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _entry_json(entry: ModelEntry) -> dict[str, Any]:
    return {
        "label": entry.label,
        "source": entry.source,
        "smoothing": {"sigma": entry.sigma, "samples": entry.samples} if entry.smoothed else None,
    }


def _means_json(m: MetricMeans) -> dict[str, Any]:
    return {
        "psnr": _json_number(m.psnr),
        "ssim": _json_number(m.ssim),
        "lpips": _json_number(m.lpips),
        "images": m.images,
    }


def _markdown(result: EvaluationResult) -> str:
    s = result.settings
    capped = result.psnr_at_cap()
    cap_note = []
    if capped:
        values = "value reached" if capped == 1 else "values reached"
        cap_note = [f"{capped} per-image PSNR {values} the {PSNR_CAP_DB:g} dB cap (see per_image.csv).", ""]
    lines = [
        "# Evaluation",
        "",
        f"{len(result.images)} images; each cell is **PSNR (dB) / SSIM / LPIPS**, the mean over images "
        "(PSNR, SSIM: higher is better; LPIPS: lower is better). PSNR is capped at "
        f"{PSNR_CAP_DB:g} dB per image: an output identical to the HR (infinite PSNR) counts as "
        f"{PSNR_CAP_DB:g} dB here, in the CSV and JSON files and in the means.",
        "",
        render_table(result),
        "",
        *cap_note,
        "## Protocol",
        "",
        f"- Threat model: {s.get('threat_model', '').rstrip('.')}.",
    ]
    if "attack_loss" in s:
        lines.append(f"- Attack loss: {s['attack_loss']}.")
    lines.append("- Conditions:")
    for condition, text in s.get("conditions", {}).items():
        lines.append(f"  - `{condition}`: {text}")
    lines.append("- Metrics:")
    for name, text in s.get("metrics", {}).items():
        lines.append(f"  - {name}: {text}")
    lines.append("- Models:")
    for entry in result.entries:
        smoothing = (
            f"median randomized smoothing, sigma {entry.sigma:g}, n = {entry.samples}"
            if entry.smoothed
            else "plain (no smoothing)"
        )
        lines.append(f"  - {entry.label}: `{entry.source}`, {smoothing}")
    for key in ("hr", "lr_source", "crop", "limit", "seed", "device", "torch", "seconds"):
        if key in s and s[key] is not None:
            lines.append(f"- {key.replace('_', ' ')}: {s[key]}")
    if s.get("merged_from"):
        lines.append(f"- merged from {len(s['merged_from'])} runs: {', '.join(s['merged_from'])}")
    if s.get("command"):
        commands = s["command"] if isinstance(s["command"], list) else [s["command"]]
        lines += ["", "Commands:" if len(commands) > 1 else "Command:", "", "```", *commands, "```"]
    return "\n".join(lines) + "\n"


def _csv(rows: Sequence[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue().encode()


def write_report(result: EvaluationResult, out_dir: str | Path) -> list[Path]:
    """Write ``results.md``, ``results.csv``, ``per_image.csv`` and ``results.json`` into ``out_dir``.

    Args:
        result: what :func:`~certsr_rt.evaluation.runner.evaluate` returned.
        out_dir: the folder (created if needed).

    Returns:
        The paths written.

    Raises:
        InputError: ``out_dir`` is an existing file or cannot be created.
    """
    out = _make_folder(out_dir)
    summary_rows: list[list[Any]] = [["model", "condition", "psnr_y_db", "ssim_y", "lpips_alex", "images"]]
    summary_json = []
    for entry in result.entries:
        for condition in result.conditions:
            m = result.cell(entry, condition)
            summary_rows.append(
                [entry.label, condition, f"{m.psnr:.4f}", f"{m.ssim:.6f}", f"{m.lpips:.6f}", m.images]
            )
            summary_json.append({"model": entry.label, "condition": condition, **_means_json(m)})
    image_rows: list[list[Any]] = [["image", "model", "condition", "psnr_y_db", "ssim_y", "lpips_alex"]]
    image_json = []
    for entry in result.entries:
        for m in result.measurements.get(entry.key, []):
            image_rows.append(
                [m.image, entry.label, m.condition, f"{m.psnr:.4f}", f"{m.ssim:.6f}", f"{m.lpips:.6f}"]
            )
            image_json.append(
                {
                    "image": m.image,
                    "model": entry.label,
                    "condition": m.condition,
                    "psnr": _json_number(m.psnr),
                    "ssim": _json_number(m.ssim),
                    "lpips": _json_number(m.lpips),
                }
            )
    document = {
        "settings": result.settings,
        "models": [_entry_json(e) for e in result.entries],
        "conditions": result.conditions,
        "images": result.images,
        "summary": summary_json,
        "per_image": image_json,
    }
    return [
        write_atomic(out / "results.md", _markdown(result).encode()),
        write_atomic(out / "results.csv", _csv(summary_rows)),
        write_atomic(out / "per_image.csv", _csv(image_rows)),
        write_atomic(
            out / "results.json", (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
        ),
    ]


def read_report(folder: str | Path) -> EvaluationResult:
    """The result an evaluation wrote into ``folder`` (its ``results.json``), without the sigma sweep.

    Raises:
        InputError: no ``results.json`` there, or one that this version did not write.
    """
    path = Path(folder)
    if path.is_dir():
        path = path / "results.json"
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read an evaluation report {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise InputError(f"{path} is not JSON: {exc}") from exc
    try:
        entries = []
        for model in document["models"]:
            smoothing = model.get("smoothing")
            sigma = smoothing["sigma"] if smoothing else None
            samples = smoothing["samples"] if smoothing else 1
            entries.append(ModelEntry(model["source"], sigma, samples, model["label"]))
        by_label = {e.label: e for e in entries}
        measurements: dict[tuple[str, float | None, int], list[Measurement]] = {e.key: [] for e in entries}

        def number(value: Any) -> float:
            return math.nan if value is None else float(value)

        for row in document["per_image"]:
            entry = by_label[row["model"]]
            measurements[entry.key].append(
                Measurement(
                    row["image"],
                    row["condition"],
                    number(row["psnr"]),
                    number(row["ssim"]),
                    number(row["lpips"]),
                )
            )
        return EvaluationResult(
            entries=entries,
            sweep=[],
            conditions=list(document["conditions"]),
            images=list(document["images"]),
            measurements=measurements,
            settings=dict(document["settings"]),
        )
    except (KeyError, TypeError) as exc:
        raise InputError(
            f"{path} is not an evaluation report written by certsr-rt evaluate (missing {exc})"
        ) from None


_MUST_AGREE = ("threat_model", "metrics", "seed", "hr", "lr_source", "crop", "limit", "attack_loss")
"""Settings that two runs must share to be merged into one table (where both record them)."""


def merge_results(results: Sequence[EvaluationResult], names: Sequence[str] = ()) -> EvaluationResult:
    """Join evaluations of the same images under the same protocol into one table.

    Rows are the union of the runs' models (first appearance first), columns the union of their conditions
    (in :data:`~certsr_rt.evaluation.runner.CONDITIONS` order); a cell that no run measured stays empty
    (``n/a``). A cell measured by two runs must hold the same per-image values.

    Args:
        results: the runs (:func:`read_report`).
        names: where each came from, recorded in the merged settings.

    Returns:
        The merged result; its settings keep every run's command and the summed seconds.

    Raises:
        InputError: no runs, different images, a protocol setting that differs, one label for two
            different models, one condition described two ways, or one cell with two different values.
    """
    if not results:
        raise InputError("nothing to merge: no evaluation reports given")
    first = results[0]
    names = list(names) or [f"run {i + 1}" for i in range(len(results))]
    entries: dict[str, ModelEntry] = {}
    described: dict[str, str] = {}
    cells: dict[tuple[str, str], list[Measurement]] = {}
    commands: list[str] = []
    seconds = 0.0
    for result, name in zip(results, names, strict=True):
        if result.images != first.images:
            raise InputError(
                f"{name} evaluated other images than {names[0]}: {result.images} vs {first.images}"
            )
        for key in _MUST_AGREE:
            if (
                key in result.settings
                and key in first.settings
                and result.settings[key] != first.settings[key]
            ):
                ours, theirs = result.settings[key], first.settings[key]
                raise InputError(f"{name} and {names[0]} differ in {key}: {ours!r} vs {theirs!r}")
        for condition, text in result.settings.get("conditions", {}).items():
            if described.setdefault(condition, text) != text:
                raise InputError(
                    f"{name} runs {condition} as {text!r}, another run as {described[condition]!r}"
                )
        for entry in result.entries:
            known = entries.setdefault(entry.label, entry)
            if known.key != entry.key:
                raise InputError(
                    f"{name} uses the label {entry.label!r} for another model: {entry.key} vs {known.key}"
                )
            rows: dict[str, list[Measurement]] = {}
            for m in result.measurements.get(entry.key, []):
                rows.setdefault(m.condition, []).append(m)
            for condition, ms in rows.items():
                previous = cells.setdefault((entry.label, condition), ms)
                if previous != ms:
                    raise InputError(
                        f"{name} and another run measured {entry.label} under {condition} differently"
                    )
        command = result.settings.get("command")
        commands += command if isinstance(command, list) else [command] if command else []
        seconds += float(result.settings.get("seconds", 0.0) or 0.0)
    conditions = [c for c in CONDITIONS if any(c in r.conditions for r in results)]
    table = list(entries.values())
    measurements: dict[tuple[str, float | None, int], list[Measurement]] = {e.key: [] for e in table}
    filled = set()
    for entry in table:
        if entry.key in filled:
            continue  # two labels for one computation (allowed within a run): the same measurements
        filled.add(entry.key)
        for condition in conditions:
            measurements[entry.key] += cells.get((entry.label, condition), [])
    settings = dict(first.settings)
    for key in ("device", "torch"):  # may differ between parts: name every one
        values = list(dict.fromkeys(str(r.settings[key]) for r in results if key in r.settings))
        if values:
            settings[key] = ", ".join(values)
    settings.update(
        conditions={c: described[c] for c in conditions if c in described},
        command=commands,
        seconds=round(seconds, 2),
        merged_from=names,
    )
    return EvaluationResult(table, [], conditions, list(first.images), measurements, settings)


def _sweep_series(result: EvaluationResult) -> dict[str, list[ModelEntry]]:
    """Sweep entries grouped by source, in sigma order."""
    series: dict[str, list[ModelEntry]] = {}
    for entry in result.sweep:
        series.setdefault(entry.source, []).append(entry)
    for entries in series.values():
        entries.sort(key=lambda e: e.sigma or 0.0)
    return series


def write_sweep(result: EvaluationResult, out_dir: str | Path) -> list[Path]:
    """Write the sigma sweep: ``sigma_sweep.md``, ``sigma_sweep.csv`` and ``sigma_sweep.png``.

    Args:
        result: an evaluation run with ``sweep_sigmas``.
        out_dir: the folder (created if needed).

    Returns:
        The paths written (nothing when the result holds no sweep).

    Raises:
        InputError: ``out_dir`` is an existing file or cannot be created.
        MissingDependencyError: matplotlib is not installed (``certsr-rt[train]``).
    """
    if not result.sweep:
        return []
    out = _make_folder(out_dir)
    series = _sweep_series(result)
    rows: list[list[Any]] = [["model", "condition", "sigma", "samples", "lpips_alex", "psnr_y_db", "ssim_y"]]
    lines = [
        "# LPIPS against sigma",
        "",
        f"Mean LPIPS-alex over {len(result.images)} images (lower is better) of median randomized smoothing "
        "at each sigma; sigma 0 is the plain generator. fgsm, bim, pgd and cw are crafted against the plain "
        "generator and transferred; pgd-eot and pgd-median attack each smoothed entry itself. The best sigma "
        "per column is in bold.",
        "",
    ]
    for source, entries in series.items():
        sample_counts = sorted({e.samples for e in entries if e.smoothed})
        n_text = f", n = {sample_counts[0]}" if len(sample_counts) == 1 else ""
        lines += [f"## {default_label(source, None, 1)} (`{source}`{n_text})", ""]
        lines.append("| sigma | " + " | ".join(result.conditions) + " |")
        lines.append("|---|" + "---|" * len(result.conditions))
        values = {(e.key, c): result.cell(e, c) for e in entries for c in result.conditions}
        best = {}
        for c in result.conditions:
            finite = [e for e in entries if math.isfinite(values[(e.key, c)].lpips)]
            if finite:
                best[c] = min(finite, key=lambda e, c=c: values[(e.key, c)].lpips).key
        for e in entries:
            cells = []
            for c in result.conditions:
                m = values[(e.key, c)]
                text = _fmt(m.lpips, 4)
                cells.append(f"**{text}**" if best.get(c) == e.key else text)
                rows.append(
                    [
                        source,
                        c,
                        f"{e.sigma or 0.0:g}",
                        e.samples,
                        f"{m.lpips:.6f}",
                        f"{m.psnr:.4f}",
                        f"{m.ssim:.6f}",
                    ]
                )
            lines.append(f"| {e.sigma or 0.0:g} | " + " | ".join(cells) + " |")
        chosen = ", ".join(
            f"{c}: {next(x.sigma or 0.0 for x in entries if x.key == best[c]):g}"
            for c in result.conditions
            if c in best
        )
        lines += ["", f"Lowest LPIPS at sigma = {chosen}.", ""]
    png = out / "sigma_sweep.png"
    _plot_sweep(result, series, png)
    return [
        write_atomic(out / "sigma_sweep.md", ("\n".join(lines)).encode()),
        write_atomic(out / "sigma_sweep.csv", _csv(rows)),
        png,
    ]


def _plot_sweep(result: EvaluationResult, series: dict[str, list[ModelEntry]], path: Path) -> None:
    """One panel per model, LPIPS against sigma, one line per condition, the minimum of each line marked."""
    require("matplotlib", "train", "the sigma-sweep plot")
    # The object-oriented API with the Agg canvas: no pyplot global state, no backend switching.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = len(series)
    figure = Figure(figsize=(5.5 * panels, 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    for ax, (source, entries) in zip(axes, series.items(), strict=True):
        sigmas = [e.sigma or 0.0 for e in entries]
        for condition in result.conditions:
            lpips = [result.cell(e, condition).lpips for e in entries]
            (line,) = ax.plot(sigmas, lpips, marker="o", markersize=3, label=condition)
            finite = [(v, s) for v, s in zip(lpips, sigmas, strict=True) if math.isfinite(v)]
            if finite:
                v, s = min(finite)
                ax.plot([s], [v], marker="*", markersize=12, color=line.get_color())
        ax.set_title(default_label(source, None, 1), fontsize=10)
        ax.set_xlabel("σ (noise std, [0, 1] units)")
        ax.set_ylabel("LPIPS-alex (lower is better)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    write_atomic(path, buffer.getvalue())
