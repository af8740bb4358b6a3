"""certsr-rt: robust 4x super-resolution with median randomized smoothing (CertSR).

The public API is what a video pipeline or script imports::

    from certsr_rt import Upscaler, SmoothingConfig, BoundsConfig, load_model

Names are resolved lazily (PEP 562) so ``import certsr_rt`` does not import torch until one is used, and
never imports optional GPU libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Upscaler": "certsr_rt.runtime.upscaler",
    "UpscaleResult": "certsr_rt.runtime.upscaler",
    "upscale_stream": "certsr_rt.runtime.stream",
    "upscale_video_file": "certsr_rt.runtime.video",
    "SmoothingConfig": "certsr_rt.smoothing.config",
    "BoundsConfig": "certsr_rt.smoothing.certify",
    "load_model": "certsr_rt.models",
    "list_specs": "certsr_rt.models",
    "SRModel": "certsr_rt.models",
    "DEFAULT_MODEL": "certsr_rt.models",
    "Backend": "certsr_rt.runtime.backends.base",
    "create_backend": "certsr_rt.runtime.backends",
    "CertSRError": "certsr_rt.errors",
    "InputError": "certsr_rt.errors",
    "ModelLoadError": "certsr_rt.errors",
    "BackendError": "certsr_rt.errors",
    "MissingDependencyError": "certsr_rt.errors",
    "VacuousBoundWarning": "certsr_rt.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:
    from certsr_rt.errors import (
        BackendError,
        CertSRError,
        InputError,
        MissingDependencyError,
        ModelLoadError,
        VacuousBoundWarning,
    )
    from certsr_rt.models import DEFAULT_MODEL, SRModel, list_specs, load_model
    from certsr_rt.runtime.backends import create_backend
    from certsr_rt.runtime.backends.base import Backend
    from certsr_rt.runtime.stream import upscale_stream
    from certsr_rt.runtime.upscaler import Upscaler, UpscaleResult
    from certsr_rt.runtime.video import upscale_video_file
    from certsr_rt.smoothing.certify import BoundsConfig
    from certsr_rt.smoothing.config import SmoothingConfig


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'certsr_rt' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
