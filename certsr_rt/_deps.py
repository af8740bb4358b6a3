"""Lazy imports of optional dependencies, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from certsr_rt.errors import MissingDependencyError


def require(module: str, extra: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``certsr-rt[extra]``.

    Args:
        module: import name, e.g. ``"onnxruntime"`` or ``"cuda.bindings.nvrtc"``.
        extra: the optional-dependency group that installs it, e.g. ``"onnx"``.
        purpose: what the caller wanted to do, for the message.

    Returns:
        The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module, extra, purpose) from exc
