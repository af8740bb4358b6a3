"""The onnxruntime backend: CPU, or CUDA with IO binding when onnxruntime-gpu is installed.

It takes either an :class:`~certsr_rt.models.SRModel` (exported once into the content-addressed ONNX cache,
see :func:`certsr_rt.export.onnx.cached_onnx`) or an :class:`~certsr_rt.export.exported.ExportedModel`
describing an ``.onnx`` file written by ``certsr-rt export`` (its metadata gives the scale and channels).

On CUDA, inputs and outputs stay in torch-owned device memory and are bound with IO binding: no host
copies. A session that comes up without the CUDA provider (onnxruntime falls back to the CPU silently
when the provider's libraries do not load) is refused with a :class:`~certsr_rt.errors.BackendError`. The
CUDA path is written to onnxruntime's documented API but has not run on a GPU here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from certsr_rt._deps import require
from certsr_rt.errors import BackendError, InputError, first_line
from certsr_rt.export.exported import ExportedModel
from certsr_rt.runtime.backends.base import Backend, require_described

if TYPE_CHECKING:
    from certsr_rt.models.descriptor import SRModel

__all__ = ["OnnxRuntimeBackend", "onnxruntime_has_cuda"]


def onnxruntime_has_cuda() -> bool:
    """Whether onnxruntime is installed with the CUDA execution provider (``onnxruntime-gpu``)."""
    try:
        ort = require("onnxruntime", "onnx")
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


class OnnxRuntimeBackend(Backend):
    """Runs an exported generator with onnxruntime.

    Args:
        model: an ``SRModel``, or an ``ExportedModel`` of a certsr-rt ``.onnx`` export.
        device: ``cpu`` (``pip install 'certsr-rt[onnx]'``) or a CUDA device (needs ``onnxruntime-gpu``:
            ``pip install 'certsr-rt[gpu]'``, instead of the CPU-only ``onnxruntime``).
        precision: ``fp32``, ``fp16`` (CUDA only; an fp16 export) or ``auto`` (fp32 on CPU; on CUDA fp16
            when the model supports it). For a file, the file's precision must match unless ``auto``.
        cache_dir: ONNX cache root override (default ``$CERTSR_RT_CACHE`` or ``~/.cache/certsr-rt``).
        threads: intra-op threads on CPU (``None``: onnxruntime's default, one per core).

    Raises:
        MissingDependencyError: onnxruntime is not installed (names the ``onnx`` extra).
        InputError: bad precision/device combination or not a certsr-rt export.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model: SRModel | ExportedModel,
        device: torch.device | str = "cpu",
        precision: str = "auto",
        *,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        device = torch.device(device)
        if device.type not in ("cpu", "cuda"):
            raise InputError(f"Expected a cpu or cuda device for onnxruntime, but got {device}")
        # CPU: the `onnx` extra (onnxruntime); CUDA: the `gpu` extra (onnxruntime-gpu). Never both.
        extra = "gpu" if device.type == "cuda" else "onnx"
        self._ort = require("onnxruntime", extra, "the onnxruntime backend")
        self._model: SRModel | None
        require_described(model)
        if isinstance(model, ExportedModel):
            if model.kind != "onnx":
                raise InputError(
                    f"Expected an .onnx export for onnxruntime, but {model.path} is a TensorRT engine; "
                    "run it with the tensorrt backend"
                )
            self.onnx_path: Path | None = model.path
            self._model = None
            if precision not in ("auto", model.precision):
                raise InputError(
                    f"{self.onnx_path} is an {model.precision} export, but precision {precision} was asked"
                )
            precision = model.precision
            scale, in_ch, out_ch = model.scale, model.in_channels, model.out_channels
        else:
            self.onnx_path = None
            self._model = model
            if precision == "auto":
                precision = "fp16" if device.type == "cuda" and model.supports_half else "fp32"
            scale, in_ch, out_ch = model.scale, model.in_channels, model.out_channels
        if precision not in ("fp32", "fp16"):
            raise InputError(f"Expected precision fp32, fp16 or auto for onnxruntime, but got {precision!r}")
        if precision == "fp16" and device.type != "cuda":
            raise InputError(f"precision fp16 needs a CUDA device for onnxruntime, got {device}")
        if device.type == "cuda" and "CUDAExecutionProvider" not in self._ort.get_available_providers():
            raise BackendError(
                "onnxruntime on CUDA needs the CUDA execution provider, but this onnxruntime has only "
                f"{self._ort.get_available_providers()}; replace the CPU-only package (both provide the "
                "onnxruntime module): pip uninstall onnxruntime && pip install 'certsr-rt[gpu]'"
            )
        super().__init__(device=device, scale=scale, in_channels=in_ch, precision=precision)
        self.out_channels = out_ch
        self.cache_dir = cache_dir
        self.threads = threads
        self.session: Any = None

    def _activate_impl(self) -> None:
        from certsr_rt.export.onnx import cached_onnx

        if self.onnx_path is None:
            self.onnx_path = cached_onnx(self._model, fp16=self.precision == "fp16", cache_dir=self.cache_dir)
        self._open_session()

    def _fall_back_to_fp32(self) -> None:
        from certsr_rt.export.onnx import cached_onnx

        if self._model is None:
            raise BackendError(
                f"{self.onnx_path} is an {self.precision} export and produced NaN/inf on this input; a "
                "backend given a file cannot switch to fp32 by itself: export the model without --fp16 "
                "(certsr-rt export CKPT_OR_NAME) and run that file"
            )
        self.onnx_path = cached_onnx(self._model, fp16=False, cache_dir=self.cache_dir)
        self._open_session()

    def _open_session(self) -> None:
        options = self._ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        if self.device.type == "cuda":
            providers: list[Any] = [
                ("CUDAExecutionProvider", {"device_id": self.device.index}),
                "CPUExecutionProvider",
            ]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self.session = self._ort.InferenceSession(
                str(self.onnx_path), sess_options=options, providers=providers
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own pybind exception types
            raise BackendError(f"onnxruntime could not load {self.onnx_path}: {first_line(exc)}") from exc
        if self.device.type == "cuda":
            # A CUDA provider that fails to load (CUDA or cuDNN libraries missing or of another major
            # version) is not an error to onnxruntime: it logs and creates a CPU session, and IO binding
            # of device pointers then fails with a raw error. Refuse here, so that auto falls through.
            used = self.session.get_providers()
            if not used or used[0] != "CUDAExecutionProvider":
                self.session = None
                raise BackendError(
                    f"onnxruntime could not start its CUDA provider on {self.device} (the session got "
                    f"{used}); onnxruntime-gpu needs the CUDA and cuDNN libraries of its build: see the "
                    "onnxruntime messages above"
                )
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    def _deactivate_impl(self) -> None:
        self.session = None

    def _infer_impl(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            out = self.session.run([self._output], {self._input: x.detach().contiguous().numpy()})[0]
            return torch.from_numpy(out)
        return self._infer_cuda(x)

    def _infer_cuda(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        n, _, h, w = x.shape
        out = torch.empty(
            (n, self.out_channels, h * self.scale, w * self.scale), dtype=torch.float32, device=self.device
        )
        binding = self.session.io_binding()
        index = self.device.index
        binding.bind_input(self._input, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(self._output, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
        # onnxruntime runs on its own stream: make sure x is written, and Run returns after the outputs are.
        torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        return out
