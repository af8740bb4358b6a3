"""Runtime backends behind one interface (:class:`Backend`), and the factory the upscaler uses.

Importing this package imports no optional library: each backend module imports its library when a backend
is created, and a missing one raises :class:`~certsr_rt.errors.MissingDependencyError` naming the extra.

Every backend takes a described model, an :class:`~certsr_rt.models.SRModel` or an
:class:`~certsr_rt.export.exported.ExportedModel`, never a path: a file is described once, by whoever turns
the user's name or path into a model (the :class:`~certsr_rt.runtime.upscaler.Upscaler`,
:func:`~certsr_rt.export.exported.describe_exported`), and no backend reads it again to find its scale.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING, Any

import torch

from certsr_rt._device import resolve_device
from certsr_rt.errors import CertSRError, InputError
from certsr_rt.export.exported import ExportedModel
from certsr_rt.runtime.backends.base import Backend, require_described

if TYPE_CHECKING:
    from certsr_rt.models.descriptor import SRModel

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "available_backends",
    "create_backend",
    "default_backend",
    "resolve_device",
]

log = logging.getLogger(__name__)

BACKEND_NAMES = ("auto", "torch", "onnxruntime", "tensorrt")
"""Names accepted by :func:`create_backend` (and ``certsr-rt upscale --backend``)."""


def _installed(module: str) -> bool:
    # find_spec looks the module up without importing it (STYLE.md point 4).
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def available_backends(device: torch.device | str = "auto") -> list[str]:
    """Backends that can run on ``device`` here, fastest first (the order ``auto`` tries them in).

    CUDA: tensorrt (if installed), onnxruntime (if it has the CUDA provider), torch.
    CPU: onnxruntime (if installed; faster than torch eager on CPU, see ``benchmarks/results``), torch.

    Args:
        device: ``cpu``, a CUDA device or ``auto``.

    Returns:
        Backend names.
    """
    dev = resolve_device(device, check_available=False)
    names = []
    if dev.type == "cuda":
        if _installed("tensorrt"):
            names.append("tensorrt")
        if _installed("onnxruntime"):
            from certsr_rt.runtime.backends.onnxruntime_backend import onnxruntime_has_cuda

            if onnxruntime_has_cuda():
                names.append("onnxruntime")
    elif _installed("onnxruntime"):
        names.append("onnxruntime")
    names.append("torch")
    return names


def default_backend(device: torch.device | str = "auto") -> str:
    """The backend ``certsr-rt upscale`` runs a loaded model on when ``--backend`` is not given.

    On CPU, when onnxruntime and onnx are installed: ``auto``, which there means onnxruntime (1.81x faster
    than torch eager for RRDBNet at n = 21, ``benchmarks/results/backends_cpu.md``; the model is exported
    once into the ONNX cache, which is announced) and torch if onnxruntime cannot start. Otherwise, and
    on CUDA: ``torch``. The :class:`~certsr_rt.runtime.upscaler.Upscaler` itself defaults to torch for a
    model; this is the command's choice.

    Args:
        device: ``auto``, ``cpu`` or a CUDA device.

    Returns:
        ``auto`` or ``torch``.
    """
    dev = resolve_device(device, check_available=False)
    if dev.type == "cpu" and _installed("onnxruntime") and _installed("onnx"):
        return "auto"
    return "torch"


def _create(
    name: str, model: SRModel | ExportedModel, device: torch.device, precision: str, options: dict[str, Any]
) -> Backend:
    if name == "torch":
        if isinstance(model, ExportedModel):
            raise InputError(
                f"the torch backend needs a loaded model, not the exported file {model.path}; use "
                "onnxruntime or tensorrt"
            )
        from certsr_rt.runtime.backends.torch_backend import TorchBackend

        return TorchBackend(model, device=device, precision=precision, **options)
    if name == "onnxruntime":
        from certsr_rt.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, device=device, precision=precision, **options)
    if name == "tensorrt":
        from certsr_rt.runtime.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(model, device=device, precision=precision, **options)
    raise InputError(f"Expected a backend in {', '.join(BACKEND_NAMES)}, but got {name!r}")


def create_backend(
    name: str,
    model: SRModel | ExportedModel,
    device: torch.device | str = "auto",
    precision: str = "auto",
    **options: Any,
) -> Backend:
    """Create a backend by name.

    Args:
        name: ``torch``, ``onnxruntime``, ``tensorrt`` or ``auto`` (the first of
            :func:`available_backends` that can be created and activated for this model; an exported
            file skips torch).
        model: an ``SRModel`` (from :func:`~certsr_rt.models.load_model`), or for onnxruntime and
            tensorrt an ``ExportedModel`` (a certsr-rt ``.onnx``; for tensorrt also an ``.engine``,
            from :func:`~certsr_rt.export.exported.describe_exported`).
        device: ``cpu``, a CUDA device or ``auto``.
        precision: ``fp32``, ``fp16``, ``bf16`` (torch on CUDA) or ``auto``.
        **options: passed to the backend's constructor (e.g. ``cache_dir``, ``threads``, ``profile``).

    Returns:
        The backend: not yet activated for a named backend; already activated for ``auto`` (which must
        start a candidate to know it works). :meth:`Backend.activate` is idempotent either way.

    Raises:
        InputError: unknown name, a path instead of a described model, or a combination the backend does
            not support.
        MissingDependencyError: the named backend's library is not installed (names the extra).
    """
    require_described(model)
    dev = resolve_device(device, check_available=False)
    if name != "auto":
        return _create(name, model, dev, precision, options)
    exported = isinstance(model, ExportedModel)
    candidates = [b for b in available_backends(dev) if not (b == "torch" and exported)]
    errors = []
    for candidate in candidates:
        try:
            backend = _create(candidate, model, dev, precision, options)
        except CertSRError as exc:
            errors.append(f"{candidate}: {exc}")
            log.info("auto backend: skipping %s (%s)", candidate, exc)
            continue
        # Most failures (ONNX export, engine build or refusal, session creation) happen on activation:
        # try it here so that auto falls through to the next backend instead of failing later.
        try:
            backend.activate()
        except CertSRError as exc:
            errors.append(f"{candidate}: {exc}")
            log.warning("auto backend: %s could not start, trying the next backend (%s)", candidate, exc)
            continue
        log.info("auto backend: using %s on %s", candidate, dev)
        return backend
    raise InputError(f"no backend can run this model on {dev}: " + "; ".join(errors or ["none installed"]))
