"""What an exported model file holds: a certsr-rt ``.onnx`` export or a ``.engine`` with its build record.

The runtime uses this to run an exported file where a model name or checkpoint is accepted
(``certsr-rt upscale photo.png --model x4plus.onnx``): the description gives the scale, channels and the
model's default noise level without loading weights. The file is described once: the backends take the
:class:`ExportedModel` (never the bare path), and a TensorRT engine's build record comes with it. Reading
it imports neither onnxruntime nor tensorrt: an ONNX file's metadata is read with ``onnx`` (the ``onnx``
extra), an engine's from the JSON record that ``certsr-rt export --engine`` writes beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from certsr_rt.errors import BackendError, InputError

if TYPE_CHECKING:
    from certsr_rt.export.tensorrt import EngineKey

__all__ = ["EXPORTED_SUFFIXES", "ExportedModel", "describe_exported", "is_exported_path"]

EXPORTED_SUFFIXES = (".onnx", ".engine")
"""File suffixes of exported models (compared case-insensitively)."""


@dataclass(frozen=True)
class ExportedModel:
    """An exported generator on disk, described from its metadata (no weights loaded).

    Attributes:
        path: the ``.onnx`` or ``.engine`` file.
        kind: ``"onnx"`` (runs on onnxruntime or is built into an engine) or ``"engine"`` (TensorRT only).
        name: model name (registry name or checkpoint stem) at export time.
        architecture: ``RRDBNet`` or ``SRVGGNetCompact``; ``"unknown"`` for an engine whose record
            predates this field.
        scale: upscaling factor.
        in_channels: input channels.
        out_channels: output channels.
        default_sigma: the model's recommended noise level, ``None`` when it has none (or the engine's
            record predates this field).
        precision: ``fp32`` or ``fp16``: compute precision inside the graph or engine (I/O is float32).
        engine_key: for an engine, the key its build record holds (GPU, TensorRT version, shape range),
            checked before the engine is loaded; ``None`` for an ``.onnx`` file.
    """

    path: Path
    kind: Literal["onnx", "engine"]
    name: str
    architecture: str
    scale: int
    in_channels: int
    out_channels: int
    default_sigma: float | None
    precision: str
    engine_key: EngineKey | None = None


def is_exported_path(path: str | Path) -> bool:
    """Whether ``path`` names an exported model by its suffix (``.onnx`` / ``.engine``, any case).

    Only the name is looked at; the file need not exist (:func:`describe_exported` checks it).
    """
    return Path(path).suffix.lower() in EXPORTED_SUFFIXES


def describe_exported(path: str | Path) -> ExportedModel:
    """Describe a certsr-rt ``.onnx`` export (from its metadata) or ``.engine`` (from its build record).

    Args:
        path: the file.

    Returns:
        The description.

    Raises:
        InputError: the suffix is neither ``.onnx`` nor ``.engine``, the file does not exist, it was not
            written by ``certsr-rt export`` (no certsr-rt metadata, or no readable build record beside the
            engine). One line saying what was expected and what was found.
        MissingDependencyError: an ``.onnx`` file and the ``onnx`` package is not installed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORTED_SUFFIXES:
        raise InputError(f"Expected an exported model (.onnx or .engine), but got {path}")
    if not path.is_file():
        found = "a directory" if path.is_dir() else "nothing"
        raise InputError(f"Expected an exported model file at {path}, but found {found}")
    if suffix == ".onnx":
        from certsr_rt.export.onnx import read_metadata

        meta = read_metadata(path)
        return ExportedModel(
            path=path,
            kind="onnx",
            name=meta.name,
            architecture=meta.architecture,
            scale=meta.scale,
            in_channels=meta.in_channels,
            out_channels=meta.out_channels,
            default_sigma=meta.default_sigma,
            precision=meta.precision,
        )
    from certsr_rt.export.tensorrt import read_engine_record

    record = path.with_suffix(".json")
    if not record.is_file():
        raise InputError(
            f"Expected the build record {record.name} beside the TensorRT engine {path} (written by "
            "certsr-rt export --engine; without it the engine's GPU, TensorRT version and shape range "
            "cannot be checked, so it is never run), but found none"
        )
    try:
        key, model = read_engine_record(path)
    except BackendError as exc:
        raise InputError(
            f"Expected a certsr-rt engine build record in {record}, but it is unreadable ({exc.__cause__!r})"
        ) from exc
    return ExportedModel(
        path=path,
        kind="engine",
        name=str(model["name"]),
        architecture=str(model["architecture"]),
        scale=int(model["scale"]),
        in_channels=int(model["in_channels"]),
        out_channels=int(model["out_channels"]),
        default_sigma=model["default_sigma"],
        precision=key.precision,
        engine_key=key,
    )
