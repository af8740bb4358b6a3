"""SRModel: a loaded super-resolution network together with what a caller needs to know to run it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from certsr_rt.errors import InputError
from certsr_rt.models.arch import find_architecture

__all__ = ["SRModel"]


@dataclass(eq=False)
class SRModel:
    """A super-resolution network in eval mode, with its scale, channels, provenance and recommended σ.

    Modelled on spandrel's ``ImageModelDescriptor``: the module is public (attacks, training and export use
    it directly), and calling the descriptor runs it under a written contract (see :meth:`__call__`).

    Attributes:
        module: the network, in eval mode. Its parameters require grad (attacks differentiate through it);
            wrap inference in ``torch.inference_mode()``.
        name: registered name, the ``name`` of a checkpoint's ``certsr_meta``, or the file's stem.
        architecture: the name of its :class:`~certsr_rt.models.arch.Architecture` (``"RRDBNet"``,
            ``"SRVGGNetCompact"``, or one registered at run time).
        scale: output size / input size (4 for every registered model).
        in_channels: channels of the input (3 for RGB).
        out_channels: channels of the output.
        hyperparameters: keyword arguments that rebuild ``module`` with the architecture's class.
        default_sigma: recommended σ for median smoothing, or ``None`` when the checkpoint does not carry one
            (a user's own checkpoint without ``certsr_meta``).
        sha256: sha256 of the weights file; for generated weights (the ``tiny-*`` test models), the sha256
            of the tensors' bytes in state-dict order. Identifies the weights in export metadata and caches.
        source: where the weights came from: the file's absolute path, or ``generated:<name>:seed=<seed>``.
        supports_half: whether fp16 inference is meaningful (the runtime still checks outputs for inf/NaN).
    """

    module: nn.Module = field(repr=False)
    name: str
    architecture: str
    scale: int
    in_channels: int
    out_channels: int
    hyperparameters: dict[str, Any]
    default_sigma: float | None
    sha256: str
    source: str
    supports_half: bool = True

    @property
    def num_parameters(self) -> int:
        """Number of parameters of the module."""
        return sum(p.numel() for p in self.module.parameters())

    @property
    def device(self) -> torch.device:
        """Device of the module's parameters."""
        return next(self.module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point dtype of the module's parameters."""
        return next(self.module.parameters()).dtype

    @property
    def size_multiple(self) -> int:
        """The module's own input height and width must be multiples of this (its architecture's rule).

        1 for a module of an unregistered architecture.

        :meth:`__call__` pads to it and crops the result, so callers of the descriptor can ignore it.
        """
        arch = find_architecture(self.architecture)
        return 1 if arch is None else arch.size_multiple(self.hyperparameters)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> SRModel:
        """Move the module to ``device`` (and cast it to ``dtype`` when given), in place.

        Args:
            device: target device, e.g. ``"cuda"``.
            dtype: target floating-point dtype, e.g. ``torch.float16``; ``None`` keeps the current one.

        Returns:
            ``self``, for chaining.
        """
        if dtype is None:
            self.module.to(device=device)
        else:
            self.module.to(device=device, dtype=dtype)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale a batch of images with the plain network (no smoothing).

        Args:
            x: ``N x C x H x W`` floating tensor with ``C == in_channels``, any ``H, W >= 1``, values about
                [0, 1] (noise-augmented inputs may leave that range: they are not clipped), on the module's
                device and with the module's dtype (see :attr:`device`, :attr:`dtype`).

        Returns:
            ``N x out_channels x (scale*H) x (scale*W)`` tensor of the same dtype and device, values about
            [0, 1] but **not clamped**. Gradients flow unless the caller disables them.

        Raises:
            InputError: wrong number of dimensions or channels, a non-floating dtype, or a dtype or device
                that differs from the module's.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"expected an N x C x H x W tensor, got {got}")
        if x.shape[1] != self.in_channels:
            raise InputError(
                f"expected {self.in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})"
            )
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise InputError(f"expected H, W >= 1, got shape {tuple(x.shape)}")
        param = next(self.module.parameters())
        if x.dtype != param.dtype:
            raise InputError(f"expected input dtype {param.dtype} (the module's), got {x.dtype}")
        if x.device != param.device:
            raise InputError(f"expected input on {param.device} (the module's device), got {x.device}")

        h, w = x.shape[2], x.shape[3]
        m = self.size_multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            # reflect needs pad < size; replicate works for any size.
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        out = self.module(x)
        if pad_h or pad_w:
            out = out[..., : h * self.scale, : w * self.scale]
        return out
