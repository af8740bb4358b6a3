"""certsr-rt: robust 4x super-resolution with median randomized smoothing (CertSR).

The public API is what a video pipeline or script imports::

    from certsr_rt import Upscaler, SmoothingConfig, BoundsConfig, load_model
    from certsr_rt import upscale_stream, upscale_video_file   # frames in a pipeline, or a whole file

Every type a public function takes or returns is exported here too (a test pins the list).

Names are resolved lazily (PEP 562) so ``import certsr_rt`` does not import torch until one is used, and
never imports optional GPU libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # the runtime: images, streams, video
    "Upscaler": "certsr_rt.runtime.upscaler",
    "UpscaleResult": "certsr_rt.runtime.upscaler",
    "upscale_stream": "certsr_rt.runtime.stream",
    "FrameStream": "certsr_rt.runtime.stream",
    "StreamStats": "certsr_rt.runtime.stream",
    "UpscalerLike": "certsr_rt.runtime.stream",
    "upscale_video_file": "certsr_rt.runtime.video",
    "VideoResult": "certsr_rt.runtime.video",
    # smoothing and its certificate
    "SmoothingConfig": "certsr_rt.smoothing.config",
    "BoundsConfig": "certsr_rt.smoothing.certify",
    "BoundsSummary": "certsr_rt.smoothing.certify",
    "CertifiedRanks": "certsr_rt.smoothing.certify",
    "RadiusMapConfig": "certsr_rt.smoothing.certify",
    "RadiusSummary": "certsr_rt.smoothing.certify",
    "RadiusSchedule": "certsr_rt.smoothing.certify",
    # models, exported files, backends
    "load_model": "certsr_rt.models",
    "list_specs": "certsr_rt.models",
    "ModelSpec": "certsr_rt.models",
    "SRModel": "certsr_rt.models",
    "DEFAULT_MODEL": "certsr_rt.models",
    "Architecture": "certsr_rt.models.arch",
    "TileLimits": "certsr_rt.models.arch",
    "describe_exported": "certsr_rt.export.exported",
    "ExportedModel": "certsr_rt.export.exported",
    "EngineKey": "certsr_rt.export.tensorrt",
    "GpuInfo": "certsr_rt.export.tensorrt",
    "ShapeProfile": "certsr_rt.export.tensorrt",
    "Backend": "certsr_rt.runtime.backends.base",
    "create_backend": "certsr_rt.runtime.backends",
    # errors
    "CertSRError": "certsr_rt.errors",
    "InputError": "certsr_rt.errors",
    "ModelLoadError": "certsr_rt.errors",
    "BackendError": "certsr_rt.errors",
    "MissingDependencyError": "certsr_rt.errors",
    "Cancelled": "certsr_rt.errors",
    "Terminated": "certsr_rt.errors",
    "VacuousBoundWarning": "certsr_rt.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:
    from certsr_rt.errors import (
        BackendError,
        Cancelled,
        CertSRError,
        InputError,
        MissingDependencyError,
        ModelLoadError,
        Terminated,
        VacuousBoundWarning,
    )
    from certsr_rt.export.exported import ExportedModel, describe_exported
    from certsr_rt.export.tensorrt import EngineKey, GpuInfo, ShapeProfile
    from certsr_rt.models import DEFAULT_MODEL, ModelSpec, SRModel, list_specs, load_model
    from certsr_rt.models.arch import Architecture, TileLimits
    from certsr_rt.runtime.backends import create_backend
    from certsr_rt.runtime.backends.base import Backend
    from certsr_rt.runtime.stream import FrameStream, StreamStats, UpscalerLike, upscale_stream
    from certsr_rt.runtime.upscaler import Upscaler, UpscaleResult
    from certsr_rt.runtime.video import VideoResult, upscale_video_file
    from certsr_rt.smoothing.certify import (
        BoundsConfig,
        BoundsSummary,
        CertifiedRanks,
        RadiusMapConfig,
        RadiusSchedule,
        RadiusSummary,
    )
    from certsr_rt.smoothing.config import SmoothingConfig


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'certsr_rt' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
