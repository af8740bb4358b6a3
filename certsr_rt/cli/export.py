"""``certsr-rt export``: a validated ONNX file, and optionally a TensorRT engine for this GPU."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any

import typer


def _load_model(name_or_path: str) -> Any:
    from certsr_rt.models import load_model

    return load_model(name_or_path, device="cpu")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _info(message: str) -> None:
    """Progress and results go to stderr, as in every command; stdout stays free for data."""
    typer.echo(message, err=True)


def _is_folder(output: str) -> bool:
    """``-o`` names a folder to write into: it ends with a separator, is a folder, or has no extension."""
    from certsr_rt.io.images import output_is_directory

    return output_is_directory(output, 1)


def check_output_file(target: Path, model: str) -> None:
    """Refuse an ONNX destination that is not ``.onnx``, is a folder, or is the input checkpoint.

    Args:
        target: the file ``export`` would write.
        model: the ``CKPT_OR_NAME`` argument (a path is compared through links and hard links).

    Raises:
        InputError: one line saying what was expected.
    """
    from certsr_rt.errors import InputError
    from certsr_rt.io.images import check_not_input

    check_not_input(target, [model])
    if target.suffix.lower() == ".engine":
        raise InputError(
            f"-o {target}: export writes the ONNX file there; the TensorRT engine (--engine) goes into the "
            "engine cache, where upscale --backend tensorrt finds it. Give a .onnx name"
        )
    if target.suffix.lower() != ".onnx":
        raise InputError(
            f"-o {target}: expected a .onnx file name (or a folder), but got '{target.suffix}'; "
            f"e.g. -o {target.with_suffix('.onnx')}"
        )
    if target.is_dir():
        raise InputError(f"cannot write {target}: is a folder (expected a .onnx file)")


def _check_size(value: str) -> str:
    """Validate ``--max-size`` while parsing, so a bad value fails before any work, engine or not."""
    from certsr_rt.errors import InputError
    from certsr_rt.export.tensorrt import parse_size

    try:
        parse_size(value)
    except InputError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


def export_command(
    model: Annotated[
        str,
        typer.Argument(
            metavar="CKPT_OR_NAME", help="Checkpoint (.pth/.pt/.safetensors) or registered model name."
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="ONNX file (.onnx), or a folder to write <model>[-fp16].onnx into (ends with /, exists, "
            "or has no extension). Default: ./<model>[-fp16].onnx.",
            show_default=False,
        ),
    ] = None,
    fp16: Annotated[
        bool,
        typer.Option(
            "--fp16",
            help="Export in half precision for GPU backends (float32 I/O, casts inside). The CPU "
            "validation checks the graph and its half-precision weights, not fp16 arithmetic.",
        ),
    ] = False,
    opset: Annotated[int, typer.Option("--opset", min=18, help="ONNX opset.")] = 18,
    samples: Annotated[
        int,
        typer.Option(
            "--samples", min=1, help="Default number of smoothing samples recorded in the metadata."
        ),
    ] = 21,
    engine: Annotated[
        bool,
        typer.Option("--engine", help="Also build a TensorRT engine for this GPU (cached)."),
    ] = False,
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="Largest batch the engine accepts (samples per chunk).")
    ] = 21,
    max_size: Annotated[
        str,
        typer.Option(
            "--max-size",
            callback=_check_size,
            help="Largest LR input HxW the engine accepts (tile + overlap).",
        ),
    ] = "256x256",
) -> None:
    """Export a model to ONNX (dynamic batch/height/width, weights embedded, validated against torch).

    Validation runs onnxruntime (CPU) and torch fp32 on random inputs at two sizes; the largest absolute
    difference is printed and must be within 1e-4 (fp32) or 1e-2 (fp16), else the command fails and
    writes nothing. For --fp16 this checks the graph and its half-precision weights only: onnxruntime on
    CPU computes in fp32, so the error of fp16 arithmetic on a GPU is not measured. With --engine, a
    TensorRT engine is built for this GPU and cached; `certsr-rt upscale --backend tensorrt` with the same
    model then finds it. The output may not be the input checkpoint, and its folder must be writable:
    both are checked before the export starts. Progress and results go to stderr.
    """
    from certsr_rt.export.onnx import FP16_VALIDATION_NOTE, cache_root, export_onnx, onnx_cache_path
    from certsr_rt.io.atomic import atomic_path
    from certsr_rt.io.images import check_writable

    # What can be checked about -o without the model's name, before loading it.
    if output is not None and not _is_folder(output):
        check_output_file(Path(output).expanduser(), model)

    trt: Any = None
    if engine:
        # Check what the engine build needs before spending time on the export.
        import torch

        from certsr_rt._deps import require
        from certsr_rt.errors import BackendError
        from certsr_rt.export.tensorrt import (
            EngineCache,
            GpuInfo,
            ShapeProfile,
            model_record,
            parse_size,
            prepare_engine,
        )

        height, width = parse_size(max_size)
        trt = require("tensorrt", "trt", "building a TensorRT engine (--engine)")
        if not _cuda_available():
            raise BackendError(
                "--engine needs a CUDA GPU (an engine is built for the GPU it runs on); none found"
            )
    loaded = _load_model(model)
    default_name = f"{loaded.name}{'-fp16' if fp16 else ''}.onnx"
    if output is None:
        target = Path(default_name)
    elif _is_folder(output):
        target = Path(output).expanduser() / default_name
    else:
        target = Path(output).expanduser()
    check_output_file(target, model)
    check_writable(target.parent)
    if trt is not None:
        check_writable(cache_root())
    precision = "fp16" if fp16 else "fp32"
    _info(f"exporting {loaded.name} ({loaded.architecture} x{loaded.scale}, {precision}, opset {opset}) ...")
    report = export_onnx(loaded, target, fp16=fp16, opset=opset, default_samples=samples, validate=True)
    assert report.validation is not None
    _info(f"validation (onnxruntime CPU vs torch fp32): {report.validation.summary()}")
    if fp16:
        _info(f"note: {FP16_VALIDATION_NOTE}")
    size_mb = report.path.stat().st_size / 1e6
    _info(f"wrote {report.path} ({size_mb:.1f} MB, sha256 {report.sha256[:16]}, {report.seconds:.1f} s)")
    if trt is None:
        return

    profile = ShapeProfile(
        max_batch=max_batch, max_height=height, max_width=width, channels=loaded.in_channels
    )
    # Build from the copy in the ONNX cache so that the tensorrt backend, which looks engines up by the
    # cached ONNX file's hash, finds this engine.
    cached = onnx_cache_path(loaded, fp16=fp16, opset=opset)
    if not cached.is_file():
        with atomic_path(cached) as tmp:
            shutil.copyfile(report.path, tmp)
    gpu = GpuInfo.of(torch.device("cuda"))
    _info(f"building TensorRT {trt.__version__} engine for {gpu.describe()} ({profile.describe()}) ...")
    path, key = prepare_engine(
        trt,
        cached,
        precision=report.metadata.precision,
        profile=profile,
        gpu=gpu,
        cache=EngineCache(cache_root() / "tensorrt"),
        model=model_record(loaded),
    )
    if key.profile != profile:
        _info(f"reusing a cached engine with a larger shape range ({key.profile.describe()})")
    _info(f"engine: {path}")
