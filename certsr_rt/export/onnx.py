"""ONNX export of the plain generator, its validation against torch, and a content-addressed ONNX cache.

The exported graph is the generator alone (``N x C x H x W`` float32 in, ``N x C x sH x sW`` float32 out,
batch, height and width dynamic, weights embedded). Noise and the median stay outside (see
``docs/ARCHITECTURE.md``): one file serves onnxruntime, TensorRT and validation. An fp16 export keeps
float32 inputs and outputs and casts inside, so callers never see half-precision tensors and TensorRT's
strongly typed networks run the convolutions in fp16.

Validation is part of export: onnxruntime (CPU) and torch (fp32) run the same random inputs at two sizes,
and the export fails unless the largest absolute difference is within :data:`FP32_TOLERANCE` (fp32 export)
or :data:`FP16_TOLERANCE` (fp16 export, compared with the fp32 model a user would otherwise run).

What the fp16 check does and does not measure: onnxruntime's CPU provider (1.32 on x86-64, as seen in
its optimised graph) runs an fp16 graph in fp32: it casts the half-precision weights to float32 and
removes the float32 -> half -> float32 round trips around the input and activations. The fp16 validation
therefore checks that the graph is right and measures the effect of the half-precision *weights*; it does
not measure fp16 arithmetic (activation rounding, accumulation, overflow) as a GPU runs it; that would
need a GPU. What guards it at run time is the NaN/inf fallback of
:meth:`certsr_rt.runtime.backends.base.Backend.infer`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from certsr_rt._deps import require
from certsr_rt.errors import CertSRError, InputError
from certsr_rt.io.atomic import atomic_path

__all__ = [
    "DEFAULT_OPSET",
    "FP16_TOLERANCE",
    "FP16_VALIDATION_NOTE",
    "FP32_TOLERANCE",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ExportReport",
    "ExportValidationError",
    "OnnxMetadata",
    "ValidationReport",
    "cache_root",
    "cached_onnx",
    "export_onnx",
    "file_sha256",
    "model_digest",
    "onnx_cache_path",
    "read_metadata",
    "validate_onnx",
]

DEFAULT_OPSET = 18
FP16_VALIDATION_NOTE = (
    "for an fp16 export this checks the graph and its half-precision weights only: onnxruntime on CPU "
    "computes the convolutions in fp32, so the error of fp16 arithmetic on a GPU is not measured here"
)
"""What the fp16 validation does not measure, as ``certsr-rt export --fp16`` prints it."""
FP32_TOLERANCE = 1e-4
"""Largest max-abs difference accepted between onnxruntime and torch for an fp32 export."""
FP16_TOLERANCE = 1e-2
"""Largest max-abs difference accepted for an fp16 export against the fp32 torch model.

Set from a measured 2.5e-3 for Real-ESRGAN x4plus in fp16 on random inputs (about 2.5 half-precision ulps
at 1.0), with a 4x margin. Checked on onnxruntime CPU, which computes in fp32: in practice it bounds the
effect of the half-precision weights, not of fp16 arithmetic (see the module docstring).
"""
INPUT_NAME = "input"
OUTPUT_NAME = "output"
FORMAT_VERSION = "1"
"""Bumped when the exported graph or metadata changes in a way that must invalidate cached files."""
DEFAULT_VALIDATION_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 24, 32), (2, 17, 13))
"""(batch, height, width) of the random validation inputs: two sizes, one odd, one batched."""

_META_PREFIX = "certsr."

log = logging.getLogger(__name__)


class ExportValidationError(CertSRError):
    """The exported ONNX model does not reproduce the torch model within tolerance."""


@dataclass(frozen=True)
class OnnxMetadata:
    """What certsr-rt writes into an exported model's ``metadata_props`` (keys ``certsr.<field>``).

    Attributes:
        name: model name (registry name or checkpoint stem).
        architecture: ``RRDBNet`` or ``SRVGGNetCompact``.
        scale: upscaling factor.
        in_channels: input channels.
        out_channels: output channels.
        hyperparameters: keyword arguments that rebuild the architecture.
        weights_sha256: SHA-256 of the weights file the model was loaded from.
        state_dict_sha256: :func:`model_digest` of the exported module (independent of file format).
        default_sigma: the model's recommended noise level, ``None`` when it has none.
        default_samples: number of smoothing samples the model was tuned for.
        precision: ``fp32`` or ``fp16`` (compute precision inside the graph; I/O is always float32).
        opset: ONNX opset of the default domain.
        format_version: :data:`FORMAT_VERSION` at export time.
    """

    name: str
    architecture: str
    scale: int
    in_channels: int
    out_channels: int
    hyperparameters: dict[str, Any]
    weights_sha256: str
    state_dict_sha256: str
    default_sigma: float | None
    default_samples: int
    precision: str
    opset: int
    format_version: str = FORMAT_VERSION

    def to_props(self) -> dict[str, str]:
        """The metadata as ONNX ``metadata_props`` strings."""
        return {
            _META_PREFIX + "name": self.name,
            _META_PREFIX + "architecture": self.architecture,
            _META_PREFIX + "scale": str(self.scale),
            _META_PREFIX + "in_channels": str(self.in_channels),
            _META_PREFIX + "out_channels": str(self.out_channels),
            _META_PREFIX + "hyperparameters": json.dumps(self.hyperparameters, sort_keys=True),
            _META_PREFIX + "weights_sha256": self.weights_sha256,
            _META_PREFIX + "state_dict_sha256": self.state_dict_sha256,
            _META_PREFIX + "default_sigma": "none"
            if self.default_sigma is None
            else repr(self.default_sigma),
            _META_PREFIX + "default_samples": str(self.default_samples),
            _META_PREFIX + "precision": self.precision,
            _META_PREFIX + "opset": str(self.opset),
            _META_PREFIX + "format_version": self.format_version,
        }

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "the model") -> OnnxMetadata:
        """Parse ``metadata_props``; raises :class:`InputError` naming the missing keys."""
        wanted = [_META_PREFIX + f for f in cls.__dataclass_fields__]
        missing = [k for k in wanted if k not in props]
        if missing:
            raise InputError(
                f"{source} is not a certsr-rt ONNX export: expected metadata keys {', '.join(missing)}, "
                f"found {sorted(props) or 'none'}"
            )
        p = {k[len(_META_PREFIX) :]: v for k, v in props.items() if k.startswith(_META_PREFIX)}
        return cls(
            name=p["name"],
            architecture=p["architecture"],
            scale=int(p["scale"]),
            in_channels=int(p["in_channels"]),
            out_channels=int(p["out_channels"]),
            hyperparameters=json.loads(p["hyperparameters"]),
            weights_sha256=p["weights_sha256"],
            state_dict_sha256=p["state_dict_sha256"],
            default_sigma=None if p["default_sigma"] == "none" else float(p["default_sigma"]),
            default_samples=int(p["default_samples"]),
            precision=p["precision"],
            opset=int(p["opset"]),
            format_version=p["format_version"],
        )


@dataclass(frozen=True)
class ValidationReport:
    """Result of comparing onnxruntime with torch.

    Attributes:
        max_abs_error: largest absolute difference over all validation inputs.
        per_shape: ``(input shape, max abs error)`` for each input.
        tolerance: the bound it was checked against.
    """

    max_abs_error: float
    per_shape: tuple[tuple[tuple[int, ...], float], ...]
    tolerance: float

    @property
    def passed(self) -> bool:
        """Whether every error is within tolerance (a non-finite output counts as an infinite error)."""
        return self.max_abs_error <= self.tolerance

    def summary(self) -> str:
        """One line: the error per shape and the verdict."""
        shapes = ", ".join(f"{'x'.join(map(str, s))}: {e:.3g}" for s, e in self.per_shape)
        verdict = "ok" if self.passed else "FAILED"
        return f"max abs error {self.max_abs_error:.3g} (tolerance {self.tolerance:g}; {shapes}) {verdict}"


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ONNX file.
        metadata: the metadata stored in it.
        validation: the onnxruntime-vs-torch check (``None`` when skipped).
        sha256: SHA-256 of the file.
        seconds: export + validation wall time.
    """

    path: Path
    metadata: OnnxMetadata
    validation: ValidationReport | None
    sha256: str
    seconds: float = field(default=0.0)


class _Exportable(nn.Module):
    """The generator with float32 I/O; in fp16 mode, the casts to and from half live inside the graph."""

    def __init__(self, module: nn.Module, half: bool) -> None:
        super().__init__()
        self.module = module
        self.half = half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.half:
            return self.module(x.half()).float()
        return self.module(x)


def cache_root() -> Path:
    """Root of certsr-rt's caches: ``$CERTSR_RT_CACHE`` or ``~/.cache/certsr-rt``."""
    env = os.environ.get("CERTSR_RT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "certsr-rt"


def model_digest(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers as float32 values (names, shapes and bytes).

    Independent of the dtype/device the module currently sits in (a backend may have cast it to half),
    so the same weights always give the same digest.
    """
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        v = t.detach().to("cpu", torch.float32).contiguous() if t.is_floating_point() else t.detach().cpu()
        h.update(name.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(str(v.dtype).encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cpu_fp32_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).to("cpu", torch.float32).eval()


def _torch_export(module: nn.Module, path: Path, *, half: bool, opset: int, channels: int) -> None:
    wrapper = _Exportable(module.half() if half else module, half).eval()
    example = torch.rand(2, channels, 16, 16)
    dim = torch.export.Dim
    dynamic = {
        "x": {
            0: dim("batch", min=1, max=4096),
            2: dim("height", min=1, max=65536),
            3: dim("width", min=1, max=65536),
        }
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            (example,),
            None,
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic,
            verbose=False,
        )
    program.save(str(path), external_data=False)


def read_metadata(path: str | Path) -> OnnxMetadata:
    """Read certsr-rt metadata from an exported ONNX file (weights are not loaded).

    Raises:
        InputError: the file is missing or was not written by :func:`export_onnx`.
    """
    onnx = require("onnx", "onnx", "reading ONNX models")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Expected an ONNX file, but {path} does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and onnx's own errors alike
        raise InputError(
            f"Expected an ONNX model in {path}, but it could not be parsed ({type(exc).__name__}: {exc})"
        ) from exc
    return OnnxMetadata.from_props({p.key: p.value for p in proto.metadata_props}, source=str(path))


def validate_onnx(
    path: str | Path,
    module: nn.Module,
    *,
    tolerance: float,
    shapes: Sequence[tuple[int, int, int]] = DEFAULT_VALIDATION_SHAPES,
    channels: int = 3,
    seed: int = 0,
) -> ValidationReport:
    """Compare onnxruntime (CPU) with the torch module (CPU, fp32) on random inputs in [0, 1].

    Args:
        path: the ONNX file.
        module: the reference generator (not modified; a CPU fp32 copy is run).
        tolerance: the bound the report is checked against.
        shapes: ``(batch, height, width)`` of each input.
        channels: input channels.
        seed: seed of the random inputs.

    Returns:
        The report; see :attr:`ValidationReport.passed`.
    """
    ort = require("onnxruntime", "onnx", "validating the ONNX export")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = _cpu_fp32_copy(module)
    gen = torch.Generator().manual_seed(seed)
    per_shape = []
    for n, h, w in shapes:
        x = torch.rand(n, channels, h, w, generator=gen)
        with torch.inference_mode():
            expected = reference(x).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != expected.shape:
            raise ExportValidationError(
                f"onnxruntime returned shape {got.shape} for input {tuple(x.shape)}, "
                f"expected {expected.shape}"
            )
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        # A NaN or inf anywhere counts as an infinite error, so it can never pass.
        err = float(diff.max()) if np.isfinite(diff).all() else float("inf")
        per_shape.append(((n, channels, h, w), err))
    worst = max(e for _, e in per_shape)
    return ValidationReport(max_abs_error=worst, per_shape=tuple(per_shape), tolerance=tolerance)


def export_onnx(
    model: Any,
    path: str | Path,
    *,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    default_samples: int = 21,
    validate: bool = True,
) -> ExportReport:
    """Export an :class:`~certsr_rt.models.SRModel` to ONNX, validate it, and write it atomically.

    The file is first written next to ``path`` under a temporary name, checked with ``onnx.checker``,
    stamped with :class:`OnnxMetadata`, validated against torch, and only then moved to ``path``; a failed
    export leaves no file behind.

    Args:
        model: the loaded model (its module is not modified).
        path: destination ``.onnx`` file.
        fp16: export the generator in half precision (float32 I/O, casts inside the graph).
        opset: ONNX opset (18 is the tested one).
        default_samples: number of smoothing samples to record in the metadata.
        validate: compare onnxruntime with torch before writing (the CLI always does).

    Returns:
        An :class:`ExportReport`.

    Raises:
        ExportValidationError: onnxruntime and torch disagree beyond the tolerance.
        MissingDependencyError: onnx / onnxruntime / onnxscript are not installed.
    """
    onnx = require("onnx", "onnx", "ONNX export")
    require("onnxscript", "onnx", "ONNX export (torch's dynamo exporter)")
    if opset < 18:
        raise InputError(f"Expected opset >= 18 (the dynamo exporter's minimum), but got {opset}")
    if fp16 and not getattr(model, "supports_half", True):
        raise InputError(f"model {model.name} does not support half precision; export it without --fp16")
    start = time.perf_counter()
    path = Path(path)
    with atomic_path(path) as tmp:
        _torch_export(_cpu_fp32_copy(model.module), tmp, half=fp16, opset=opset, channels=model.in_channels)
        proto = onnx.load(str(tmp))
        external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        if external:
            raise ExportValidationError(f"expected all weights embedded, but {len(external)} are external")
        meta = OnnxMetadata(
            name=str(model.name),
            architecture=str(model.architecture),
            scale=int(model.scale),
            in_channels=int(model.in_channels),
            out_channels=int(model.out_channels),
            hyperparameters=dict(model.hyperparameters),
            weights_sha256=str(model.sha256),
            state_dict_sha256=model_digest(model.module),
            default_sigma=None if model.default_sigma is None else float(model.default_sigma),
            default_samples=int(default_samples),
            precision="fp16" if fp16 else "fp32",
            opset=opset,
        )
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, meta.to_props())
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        report = None
        if validate:
            report = validate_onnx(
                tmp,
                model.module,
                tolerance=FP16_TOLERANCE if fp16 else FP32_TOLERANCE,
                channels=model.in_channels,
            )
            if not report.passed:
                raise ExportValidationError(
                    f"ONNX export of {model.name} failed validation: {report.summary()}"
                )
    return ExportReport(
        path=path,
        metadata=meta,
        validation=report,
        sha256=file_sha256(path),
        seconds=time.perf_counter() - start,
    )


def onnx_cache_path(
    model: Any, *, fp16: bool = False, opset: int = DEFAULT_OPSET, cache_dir: str | Path | None = None
) -> Path:
    """Where :func:`cached_onnx` keeps the export of ``model``: ``<cache>/onnx/<key>.onnx``.

    ``<cache>`` is ``cache_dir`` or :func:`cache_root`; ``key`` hashes the weights (:func:`model_digest`),
    architecture, hyper-parameters, scale, precision, opset and :data:`FORMAT_VERSION`, so anything that
    changes the graph changes the file name.
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    ident = {
        "digest": model_digest(model.module),
        "architecture": str(model.architecture),
        "hyperparameters": dict(model.hyperparameters),
        "scale": int(model.scale),
        "precision": "fp16" if fp16 else "fp32",
        "opset": opset,
        "format": FORMAT_VERSION,
    }
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]
    return root / "onnx" / f"{key}.onnx"


def cached_onnx(
    model: Any, *, fp16: bool = False, opset: int = DEFAULT_OPSET, cache_dir: str | Path | None = None
) -> Path:
    """The validated ONNX export of ``model``, from the cache or exported into it (:func:`onnx_cache_path`).

    Args:
        model: the loaded model.
        fp16: half-precision graph.
        opset: ONNX opset.
        cache_dir: cache root override.

    Returns:
        Path of the ONNX file.

    The one-time export is announced with a warning in the ``certsr_rt`` log, which ``certsr-rt upscale``
    prints.
    """
    path = onnx_cache_path(model, fp16=fp16, opset=opset, cache_dir=cache_dir)
    if not path.is_file():
        # The upscale command shows this (info, unless --quiet): a silent pause of ~25 s on first use
        # (RRDBNet on CPU) would look like a hang.
        log.info(
            "exporting %s to ONNX (%s) for this backend: once per model and precision, about 25 s for "
            "RRDBNet; cached as %s",
            model.name,
            "fp16" if fp16 else "fp32",
            path,
        )
        report = export_onnx(model, path, fp16=fp16, opset=opset)
        log.info("ONNX export done in %.0f s; %s", report.seconds, report.validation.summary())
    return path
