"""Evaluation: PSNR / SSIM / LPIPS of several models under clean, corrupted and attacked inputs.

``certsr-rt evaluate`` is a thin wrapper around these functions::

    from certsr_rt.evaluation import (
        evaluate, load_generators, load_image_pairs, parse_model_specs, write_report,
    )

    entries = parse_model_specs("realesrgan-x4plus,realesrgan-x4plus@sigma=0.03:n=21")
    generators = load_generators(entries, "cuda")
    pairs = load_image_pairs("Set5/HR", scale=4)
    result = evaluate(entries, pairs, ["clean", "noisy", "pgd"], generators=generators,
                      attack_loss=loss, device="cuda")
    write_report(result, "out/")

See :mod:`certsr_rt.evaluation.runner` for the protocol (threat model, seeds, metric conventions).
"""

from certsr_rt.evaluation.data import ImagePair, load_image_pairs
from certsr_rt.evaluation.report import merge_results, read_report, render_table, write_report, write_sweep
from certsr_rt.evaluation.runner import (
    ATTACK_CONDITIONS,
    CONDITIONS,
    DEFAULT_CONDITIONS,
    PSNR_CAP_DB,
    Bicubic,
    CorruptionSettings,
    EvaluationResult,
    Measurement,
    MetricMeans,
    evaluate,
    load_generators,
    parse_conditions,
    sweep_entries,
)
from certsr_rt.evaluation.specs import BICUBIC, ModelEntry, parse_model_specs
from certsr_rt.io.pairs import downscale_bicubic

__all__ = [
    "ATTACK_CONDITIONS",
    "BICUBIC",
    "CONDITIONS",
    "DEFAULT_CONDITIONS",
    "Bicubic",
    "CorruptionSettings",
    "EvaluationResult",
    "ImagePair",
    "Measurement",
    "MetricMeans",
    "ModelEntry",
    "PSNR_CAP_DB",
    "downscale_bicubic",
    "evaluate",
    "load_generators",
    "load_image_pairs",
    "merge_results",
    "parse_conditions",
    "parse_model_specs",
    "read_report",
    "render_table",
    "sweep_entries",
    "write_report",
    "write_sweep",
]
