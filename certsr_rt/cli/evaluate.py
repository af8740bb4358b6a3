"""``certsr-rt evaluate``: the paper's kind of table, PSNR / SSIM / LPIPS of models x conditions.

Heavy imports (torch, the models, the metrics) happen inside the command so that ``--help`` stays instant.
"""

from __future__ import annotations

import enum
import shlex
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["evaluate_command"]

_MODELS_HELP = (
    "Comma-separated models. Each is NAME_OR_CHECKPOINT[@OPTIONS], OPTIONS joined by ':' from "
    "sigma=FLOAT (median randomized smoothing with that noise std), sigma=default (the model's recommended "
    "sigma), n=INT (noisy copies, default 21) and label=TEXT (the name in the table). Without options the "
    "plain generator is used; 'bicubic' is the interpolation baseline. Example: "
    "'realesrgan-x4plus,realesrgan-x4plus@sigma=0.03:n=21,runs/mrs/ckpt.pth@sigma=0.06:label=CertSR,bicubic'."
)
_CONDITIONS_HELP = (
    "Comma-separated conditions of the LR input: clean, noisy (N(0, 0.03^2)), blurry (Gaussian kernel 10, "
    "sigma 0.3), jpeg (quality 75), fgsm, bim (eps 10/255, 10 steps of eps/10), pgd (eps 10/255, 10 steps of "
    "2/255), cw (c 0.01, 6 Adam steps), pgd-eot, pgd-median. fgsm/bim/pgd/cw are transfer attacks: crafted "
    "white-box against each model's plain generator, smoothed models are scored on that same input. pgd-eot "
    "and pgd-median attack each smoothed model itself with pgd's settings: pgd-eot on the mean loss over "
    "--eot-samples fresh noise draws (attacker knows sigma, not the seed), pgd-median through the deployed "
    "median with the exact noise (attacker knows the seed). On plain models both are pgd."
)


class AttackLoss(str, enum.Enum):
    """What the attacks maximise."""

    l1_perceptual = "l1+perceptual"
    l1 = "l1"


def _parse_fraction(text: str, option: str) -> float:
    """``"10/255"`` or ``"0.039"`` -> float."""
    from certsr_rt.errors import InputError

    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"{option} must be a number or a fraction like 10/255, got {text!r}") from None


def _parse_sigmas(text: str) -> list[float]:
    from certsr_rt.errors import InputError

    values = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            values.append(float(part))
        except ValueError:
            raise InputError(f"--sigma-sweep must be comma-separated numbers, got {part!r}") from None
    if not values:
        raise InputError(f"--sigma-sweep needs at least one sigma, got {text!r}")
    return sorted(set(values))


def _check_output_dir(output: Path) -> None:
    """Refuse an ``-o`` that cannot become the report folder, before anything is computed.

    The folder itself is created only when the report is written, so a failed run leaves nothing behind.
    """
    import os

    from certsr_rt.errors import InputError

    if output.exists() and not output.is_dir():
        raise InputError(
            f"-o/--output must be a folder for the report files, got {output} (an existing file)"
        )
    existing = output
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(
            f"-o/--output: cannot create the folder {output}: {existing} is a file, not a folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"-o/--output: cannot write into {existing} (permission denied)")


def evaluate_command(
    models: Annotated[str, typer.Option("--models", "-m", help=_MODELS_HELP)],
    hr: Annotated[
        Path,
        typer.Option(
            "--hr", help="Folder of ground-truth HR images (PNG, JPEG, BMP, TIFF, WebP).", show_default=False
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Folder for results.md, results.csv, per_image.csv, results.json (and the sweep files).",
        ),
    ],
    lr: Annotated[
        Path | None,
        typer.Option(
            "--lr",
            help="Folder of LR inputs paired with --hr by file name (x4 / _LR suffixes are understood). "
            "Default: bicubic x4 downscaling of the HR images.",
        ),
    ] = None,
    conditions: Annotated[str, typer.Option("--conditions", "-c", help=_CONDITIONS_HELP)] = (
        "clean,noisy,blurry,fgsm,bim,pgd,cw"
    ),
    sigma_sweep: Annotated[
        str | None,
        typer.Option(
            "--sigma-sweep",
            help="Also evaluate every model's generator with smoothing at these sigmas (comma-separated; 0 = "
            "plain) and write LPIPS against sigma as sigma_sweep.png / .md / .csv.",
        ),
    ] = None,
    sweep_samples: Annotated[
        int, typer.Option("--sweep-samples", min=1, help="Noisy copies n of the sweep's smoothed runs.")
    ] = 21,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Evaluate only the first N images (file-name order).")
    ] = None,
    crop: Annotated[
        int | None,
        typer.Option(
            "--crop",
            min=1,
            help="Centre-crop each LR image to PX x PX (and its HR) to keep runs short; at least 8 at x4 "
            "(the metrics need a 32 x 32 HR image).",
        ),
    ] = None,
    perceptual_weights: Annotated[
        Path | None,
        typer.Option(
            "--perceptual-weights",
            help="Local VGG16/VGG19 ImageNet 'features.N.*' state dict for the attack loss. Default: VGG19 "
            "from torchvision (needs the network once); where it cannot be had, the bundled VGG16 ImageNet "
            "features (conv5_3 before ReLU) with a warning. The report records which was used.",
        ),
    ] = None,
    attack_loss: Annotated[
        AttackLoss,
        typer.Option(
            "--attack-loss",
            help="Loss the attacks maximise: the paper's L1 + perceptual, or L1 alone (no VGG; faster).",
        ),
    ] = AttackLoss.l1_perceptual,
    eps: Annotated[
        str | None,
        typer.Option(
            "--eps",
            help="Override the L-inf budget of fgsm/bim/pgd/pgd-eot/pgd-median, e.g. 8/255 (default 10/255).",
        ),
    ] = None,
    attack_steps: Annotated[
        int | None,
        typer.Option(
            "--attack-steps",
            min=1,
            help="Override the iterations of bim (default 10, step eps/steps), pgd, pgd-eot, pgd-median "
            "(default 10, step 2/255) and cw (default 6).",
        ),
    ] = None,
    eot_samples: Annotated[
        int,
        typer.Option("--eot-samples", min=1, help="pgd-eot: fresh noise draws per step in the expectation."),
    ] = 8,
    attack_chunk: Annotated[
        int | None,
        typer.Option(
            "--attack-chunk",
            min=1,
            help="pgd-eot / pgd-median: noisy copies per autograd pass, to bound memory with large models or "
            "n (same result, one extra forward per copy for pgd-median). Default: all copies at once.",
        ),
    ] = None,
    noise_sigma: Annotated[
        float, typer.Option("--noise-sigma", min=0.0, help="Std of the noisy condition.")
    ] = 0.03,
    blur_size: Annotated[
        int, typer.Option("--blur-size", min=1, help="Taps of the blur kernel per axis.")
    ] = 10,
    blur_sigma: Annotated[
        float, typer.Option("--blur-sigma", min=0.0, help="Std (px) of the blur kernel.")
    ] = 0.3,
    jpeg_quality: Annotated[
        int, typer.Option("--jpeg-quality", min=1, max=100, help="Quality of the jpeg condition.")
    ] = 75,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            min=0,
            max=2**31 - 1,
            help="Seed of every random draw (corruption noise, PGD starts, pgd-eot's draws, the smoothing "
            "noise). It is public in the report, and pgd-median's attacker is given it.",
        ),
    ] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Stop when an image cannot be used (unreadable, too small, HR/LR sizes that do not match). "
            "Default: skip it with one line, evaluate the rest and exit 1 at the end.",
        ),
    ] = False,
) -> None:
    """Measure PSNR / SSIM / LPIPS of several models under clean, noisy, blurry and attacked inputs.

    Writes a Markdown table (models x conditions), CSV and JSON into the output folder; with --sigma-sweep,
    also LPIPS against the smoothing sigma (plot and table). PSNR and SSIM are on the Y channel with a
    4-pixel border shaved (BasicSR convention); LPIPS is AlexNet v0.1.
    """
    from rich.console import Console

    from certsr_rt._device import resolve_device
    from certsr_rt.attacks import EVAL_ATTACKS
    from certsr_rt.cli.progress import ProgressDisplay
    from certsr_rt.errors import InputError
    from certsr_rt.evaluation import (
        ATTACK_CONDITIONS,
        CorruptionSettings,
        evaluate,
        load_generators,
        load_image_pairs,
        parse_conditions,
        parse_model_specs,
        render_table,
        write_report,
        write_sweep,
    )

    _check_output_dir(output)
    entries = parse_model_specs(models)
    condition_list = parse_conditions(conditions)
    sigmas = _parse_sigmas(sigma_sweep) if sigma_sweep is not None else []
    if blur_sigma <= 0:
        raise InputError(f"--blur-sigma must be > 0, got {blur_sigma}")
    attacks = dict(EVAL_ATTACKS)
    if eps is not None:
        value = _parse_fraction(eps, "--eps")
        for name in ("fgsm", "bim", "pgd", "pgd-eot", "pgd-median"):
            attacks[name] = attacks[name].replace(eps=value)
    if attack_steps is not None:
        for name in ("bim", "pgd", "cw", "pgd-eot", "pgd-median"):
            attacks[name] = attacks[name].replace(steps=attack_steps)
    attacks["pgd-eot"] = attacks["pgd-eot"].replace(eot_samples=eot_samples)
    dev = resolve_device(device)
    err = Console(stderr=True)

    generators = load_generators(entries, dev)
    scales = {g.scale for g in generators.values()}
    if len(scales) != 1:
        raise InputError(f"all models must have the same scale, got {sorted(scales)}")
    skipped: list[str] = []

    def skip(problem: str) -> None:
        skipped.append(problem)
        typer.echo(f"error: {problem} (skipped; --strict stops here)", err=True)

    pairs = load_image_pairs(
        hr, lr, scale=scales.pop(), limit=limit, crop=crop, on_skip=None if strict else skip
    )

    loss = None
    if any(c in ATTACK_CONDITIONS for c in condition_list):
        from certsr_rt.losses import PerceptualLoss, SRLoss

        perceptual = None
        if attack_loss is AttackLoss.l1_perceptual:
            perceptual = PerceptualLoss(perceptual_weights, device=dev)
        loss = SRLoss(perceptual)

    corruptions = CorruptionSettings(noise_sigma, blur_size, blur_sigma, jpeg_quality)
    # On a terminal a bar; in a log a line at most every 30 s and one at the end.
    with ProgressDisplay("evaluating", enabled=progress, console=err) as bar:

        def on_step(done: int, total: int, description: str) -> None:
            bar.update(done, total, description=description)

        result = evaluate(
            entries,
            pairs,
            condition_list,
            generators=generators,
            attack_loss=loss,
            attacks=attacks,
            corruptions=corruptions,
            sweep_sigmas=sigmas,
            sweep_samples=sweep_samples,
            device=dev,
            seed=seed,
            attack_chunk=attack_chunk,
            progress=on_step,
        )
    result.settings["lr_source"] = str(lr) if lr is not None else "bicubic x4 downscaling of the HR images"
    result.settings["hr"] = str(hr)
    result.settings["crop"] = crop
    result.settings["limit"] = limit
    result.settings["skipped_images"] = skipped
    options: list[tuple[str, object]] = [
        ("--models", models),
        ("--hr", hr),
        ("--lr", lr),
        ("--conditions", ",".join(condition_list)),
        ("--sigma-sweep", sigma_sweep),
        ("--sweep-samples", sweep_samples if sigma_sweep is not None else None),
        ("--limit", limit),
        ("--crop", crop),
        ("--perceptual-weights", perceptual_weights if loss is not None else None),
        ("--attack-loss", attack_loss.value if loss is not None else None),
        ("--eps", eps),
        ("--attack-steps", attack_steps),
        ("--eot-samples", eot_samples if "pgd-eot" in condition_list else None),
        ("--attack-chunk", attack_chunk),
        ("--noise-sigma", noise_sigma),
        ("--blur-size", blur_size),
        ("--blur-sigma", blur_sigma),
        ("--jpeg-quality", jpeg_quality),
        ("--device", device),
        ("--seed", seed),
        ("-o", output),
    ]
    result.settings["command"] = "certsr-rt evaluate " + " ".join(
        f"{flag} {shlex.quote(str(value))}" for flag, value in options if value is not None
    )
    written = write_report(result, output)
    written += write_sweep(result, output)
    typer.echo(render_table(result))
    for path in written:
        typer.echo(f"wrote {path}", err=True)
    if skipped:
        typer.echo(f"{len(skipped)} of {len(skipped) + len(pairs)} images were skipped", err=True)
        raise typer.Exit(1)
