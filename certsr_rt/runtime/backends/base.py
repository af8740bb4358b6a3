"""The one interface every runtime backend implements (shaped after Polygraphy's ``BaseRunner``).

A backend runs the *plain* generator on a batch. Noise, tiling and the median live above it, in
:class:`certsr_rt.runtime.upscaler.Upscaler`, so every backend sees the same noisy inputs and the same seed
gives the same image on torch, onnxruntime and TensorRT.

Subclasses implement :meth:`_activate_impl`, :meth:`_infer_impl` and optionally :meth:`_deactivate_impl`
and :meth:`_fall_back_to_fp32`; the base class checks inputs and outputs, and owns the half-precision
safety net: a batch that comes out of an fp16/bf16 computation with NaN or inf is recomputed in fp32 (fp16
overflow turns Real-ESRGAN images black on some inputs), for every backend alike.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import torch

from certsr_rt._device import resolve_device
from certsr_rt.errors import BackendError, InputError

log = logging.getLogger(__name__)


def require_described(model: object) -> None:
    """Refuse a bare path where a backend needs a described model (an ``SRModel`` or ``ExportedModel``).

    Raises:
        InputError: ``model`` is a ``str`` or ``Path``.
    """
    if isinstance(model, (str, Path)):
        raise InputError(
            f"Expected an SRModel or an ExportedModel, but got the path {model}; describe it first: "
            "load_model(path) for a checkpoint, describe_exported(path) for an .onnx or .engine"
        )


class Backend(ABC):
    """Runs a super-resolution generator on batches of images.

    Attributes:
        name: backend name as used on the command line (``torch``, ``onnxruntime``, ``tensorrt``).
        device: where :meth:`infer` takes and returns tensors; a CUDA device always has its index
            (``cuda`` given becomes ``cuda:N``, :func:`~certsr_rt._device.resolve_device`), so that it
            compares equal to the device of the tensors placed on it.
        scale: upscaling factor of the generator.
        in_channels: channels the generator expects.
        precision: ``fp32``, ``fp16`` or ``bf16`` — the compute precision actually used.
        max_batch: largest batch :meth:`infer` accepts in one call, ``None`` for no limit.
        fell_back_to_fp32: set when a half-precision batch gave NaN/inf and the backend switched to fp32.
    """

    name: ClassVar[str] = "base"

    def __init__(
        self,
        *,
        device: torch.device,
        scale: int,
        in_channels: int,
        precision: str,
        max_batch: int | None = None,
    ) -> None:
        self.device = resolve_device(device, check_available=False)
        self.scale = scale
        self.in_channels = in_channels
        self.precision = precision
        self.max_batch = max_batch
        self.is_active = False
        self.fell_back_to_fp32 = False
        self._finite: torch.Tensor | None = None  # device flag of the deferred checks (infer(defer=True))

    def activate(self) -> Backend:
        """Prepare for inference (load sessions/engines, allocate). Idempotent. Returns self."""
        if not self.is_active:
            self._activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        """Release what :meth:`activate` acquired. Idempotent."""
        if self.is_active:
            self._deactivate_impl()
            self.is_active = False

    def __enter__(self) -> Backend:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def infer(self, x: torch.Tensor, *, defer_check: bool = False) -> torch.Tensor:
        """Run the generator on a batch.

        Args:
            x: ``N x C x H x W`` float32 tensor on :attr:`device`, values around [0, 1] (noisy inputs are
                not clipped), ``C == in_channels``.
            defer_check: in half precision, do not read the NaN/inf check back now: fold it into one flag
                on the device, which :meth:`take_non_finite` reads once (the Upscaler, once per image,
                instead of one host synchronisation per chunk). The caller then recomputes what it got
                since the last :meth:`take_non_finite` if that says so.

        Returns:
            ``N x C x (scale*H) x (scale*W)`` float32 tensor on :attr:`device`, not clamped.

        Raises:
            InputError: ``x`` is not what is described above.
            BackendError: the backend failed, or a half-precision batch gave NaN/inf and this backend
                cannot switch to fp32 (e.g. it runs an fp16 file).

        When :attr:`precision` is not ``fp32`` and the output holds NaN or inf, the backend switches to
        fp32 for good (:meth:`_fall_back_to_fp32`), logs one warning, sets :attr:`fell_back_to_fp32` and
        recomputes the batch. The check reads one flag back from the device per half-precision batch,
        unless ``defer_check``.
        """
        if not self.is_active:
            self.activate()
        if x.dim() != 4:
            raise InputError(f"Expected a 4-D N x C x H x W tensor, but got shape {tuple(x.shape)}")
        if x.dtype != torch.float32:
            raise InputError(f"Received unexpected dtype {x.dtype}. Expected torch.float32")
        if x.shape[1] != self.in_channels:
            raise InputError(
                f"Expected {self.in_channels} channels, but got {x.shape[1]} (shape {tuple(x.shape)})"
            )
        if x.device != self.device:
            raise InputError(f"Expected a tensor on {self.device}, but got one on {x.device}")
        if self.max_batch is not None and x.shape[0] > self.max_batch:
            raise InputError(f"Expected a batch of at most {self.max_batch}, but got {x.shape[0]}")
        out = self._infer_impl(x)
        if self.precision != "fp32":
            finite = torch.isfinite(out).all()
            if defer_check:
                self._finite = finite if self._finite is None else self._finite & finite
            elif not bool(finite):
                self._switch_to_fp32()
                out = self._infer_impl(x)
        n, c, h, w = x.shape
        expected = (n, out.shape[1], h * self.scale, w * self.scale)
        if out.dim() != 4 or tuple(out.shape) != expected:
            raise BackendError(f"{self.name} backend returned shape {tuple(out.shape)}, expected {expected}")
        return out

    def take_non_finite(self) -> bool:
        """Whether a half-precision batch since the last call, inferred with ``defer_check``, gave NaN/inf.

        Reads the deferred flag back from the device (one synchronisation) and clears it. When it is set,
        the backend has switched to fp32 for good (as :meth:`infer` does) and the caller must recompute
        those batches.

        Raises:
            BackendError: a batch gave NaN/inf and this backend cannot switch to fp32.
        """
        finite, self._finite = self._finite, None
        if finite is None or bool(finite):
            return False
        self._switch_to_fp32()
        return True

    def _switch_to_fp32(self) -> None:
        was = self.precision
        self._fall_back_to_fp32()
        self.precision = "fp32"
        self.fell_back_to_fp32 = True
        log.warning(
            "the %s backend produced NaN/inf in %s; recomputing in fp32 (and staying in fp32)", self.name, was
        )

    @abstractmethod
    def _activate_impl(self) -> None: ...

    @abstractmethod
    def _infer_impl(self, x: torch.Tensor) -> torch.Tensor: ...

    def _deactivate_impl(self) -> None:  # noqa: B027 - optional hook
        pass

    def _fall_back_to_fp32(self) -> None:
        """Make :meth:`_infer_impl` compute in fp32 (called once, when a half-precision batch gave NaN/inf).

        :attr:`precision` is still the old value during the call; the base class sets it to ``fp32``
        afterwards. The default cannot switch.

        Raises:
            BackendError: this backend cannot compute in fp32 (say why and what to do instead).
        """
        raise BackendError(
            f"the {self.name} backend produced NaN/inf in {self.precision} and cannot switch to fp32; "
            "run it with precision fp32"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device}, precision={self.precision})"
