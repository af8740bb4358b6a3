"""The PyTorch backend: eager execution on CPU or CUDA, fp32/fp16/bf16 with a non-finite fallback."""

from __future__ import annotations

import copy
import dataclasses

import torch

from certsr_rt.errors import InputError
from certsr_rt.models.descriptor import SRModel
from certsr_rt.runtime.backends.base import Backend, require_described

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchBackend(Backend):
    """Runs an :class:`~certsr_rt.models.SRModel` with PyTorch.

    Half precision is only used on CUDA. If a half-precision batch produces NaN or inf (fp16 overflow
    turns Real-ESRGAN images black on some inputs), that batch is recomputed in fp32 and the backend stays
    in fp32 from then on, with one warning in the log (:meth:`Backend.infer`).

    Args:
        model: the loaded model (moved to ``device``); an exported file needs onnxruntime or tensorrt.
        device: ``cpu`` or a CUDA device.
        precision: ``fp32``, ``fp16``, ``bf16`` or ``auto`` (fp16 on CUDA when the model supports it).
        channels_last: use the channels-last memory format on CUDA (faster convolutions on tensor cores).
    """

    name = "torch"

    def __init__(
        self,
        model: SRModel,
        device: torch.device | str = "cpu",
        precision: str = "auto",
        channels_last: bool = True,
    ) -> None:
        require_described(model)
        if not isinstance(model, SRModel):
            raise InputError(
                f"the torch backend needs a loaded model, not the exported file {model.path}; use "
                "onnxruntime or tensorrt"
            )
        device = torch.device(device)
        if precision == "auto":
            precision = "fp16" if device.type == "cuda" and model.supports_half else "fp32"
        if precision not in _DTYPES:
            raise InputError(f"precision must be fp32, fp16, bf16 or auto, got {precision!r}")
        if device.type != "cuda" and precision != "fp32":
            raise InputError(f"precision {precision} needs a CUDA device, got {device}")
        super().__init__(device=device, scale=model.scale, in_channels=model.in_channels, precision=precision)
        self.model = model
        self.channels_last = channels_last and device.type == "cuda"
        self._private: SRModel | None = None

    def _activate_impl(self) -> None:
        self.model.to(self.device)
        self.model.module.eval()
        # Half precision and channels_last run on a private copy: the SRModel is shared (attacks, training,
        # other backends) and stays fp32 in its own memory format.
        self._private = None
        if self.precision != "fp32" or self.channels_last:
            self._private = self._private_copy(self.precision)

    def _private_copy(self, precision: str) -> SRModel:
        module = copy.deepcopy(self.model.module).to(dtype=_DTYPES[precision])
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return dataclasses.replace(self.model, module=module)

    def _deactivate_impl(self) -> None:
        self._private = None

    def _infer_impl(self, x: torch.Tensor) -> torch.Tensor:
        model = self._private if self._private is not None else self.model
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = model(x if self.precision == "fp32" else x.to(_DTYPES[self.precision]))
        # fp32 and contiguous in one copy at most (none for an fp32 contiguous output).
        return out.to(torch.float32, memory_format=torch.contiguous_format)

    def _fall_back_to_fp32(self) -> None:
        # The half copy goes; the shared fp32 SRModel serves, or an fp32 copy where channels_last is on.
        self._private = self._private_copy("fp32") if self.channels_last else None
