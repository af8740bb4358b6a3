"""The TensorRT backend: a cached engine driven with torch-owned buffers on a non-default stream.

UNTESTED HERE: no machine of this project can install TensorRT. The calls into TensorRT
(``create_execution_context``, ``get_tensor_dtype``, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``) follow the documented TensorRT 10 API and have never run; the logic around them
(argument checks, engine preparation, refusals, the fp32 fallback, I/O type checks) is tested with a fake
``tensorrt`` module.

Memory and streams belong to torch (DESIGN.md: no pycuda): inputs and outputs are float32 torch CUDA
tensors (checked against the engine's I/O types at activation) at 256-byte aligned addresses (torch's
allocator gives 512; a chunk that is a view at an unaligned offset is copied), the engine runs on a private
``torch.cuda.Stream``, and the caller's current stream waits for it, so the median kernel launched next on
the current stream sees the finished outputs without a host synchronisation.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch

from certsr_rt._deps import require
from certsr_rt.errors import BackendError, InputError
from certsr_rt.export.exported import ExportedModel
from certsr_rt.export.tensorrt import (
    EngineCache,
    EngineKey,
    GpuInfo,
    ShapeProfile,
    deserialize_engine,
    model_record,
    prepare_engine,
)
from certsr_rt.runtime.backends.base import Backend, require_described

if TYPE_CHECKING:
    from certsr_rt.models.descriptor import SRModel

__all__ = ["TENSORRT_ALIGNMENT", "TensorRTBackend", "aligned"]

TENSORRT_ALIGNMENT = 256
"""Bytes to which TensorRT wants I/O buffer addresses aligned."""


def aligned(t: torch.Tensor, alignment: int = TENSORRT_ALIGNMENT) -> torch.Tensor:
    """``t`` itself when its data pointer is ``alignment``-byte aligned, else an aligned contiguous copy.

    torch's CUDA allocator returns 512-byte aligned blocks, but a view into a larger tensor (e.g. one chunk
    of a batch of noisy samples) starts wherever the chunk starts. The copy is carved out of a slightly
    larger buffer at an aligned offset, so it is aligned whatever the allocator's own alignment.
    """
    if t.data_ptr() % alignment == 0:
        return t
    size = t.element_size()
    buffer = torch.empty(t.numel() + alignment // size, dtype=t.dtype, device=t.device)
    skip = (-buffer.data_ptr() % alignment) // size
    copy = buffer[skip : skip + t.numel()].view(t.shape)
    copy.copy_(t)
    return copy


class TensorRTBackend(Backend):
    """Runs a generator as a TensorRT engine (built on first use and cached).

    Args:
        model: an ``SRModel`` (exported to the ONNX cache, then built), or an ``ExportedModel`` of a
            certsr-rt ``.onnx`` export (built) or of a ``.engine`` built by ``certsr-rt export --engine``
            (its build record, read once when it was described, is checked against this GPU, TensorRT
            version and shape range before the engine is loaded).
        device: a CUDA device.
        precision: ``fp16``, ``fp32`` or ``auto`` (fp16 when the model supports it). Strongly typed
            engines take their precision from the ONNX graph, so this picks the ONNX export.
        profile: shapes the engine must accept (default: batch <= 21, LR tiles up to 256x256; for an
            ``.engine``, the range it was built for).
        cache_dir: cache root override (default ``$CERTSR_RT_CACHE`` or ``~/.cache/certsr-rt``).
        trt_module: the ``tensorrt`` module to use (tests pass a fake); default ``import tensorrt``.

    Raises:
        MissingDependencyError: tensorrt is not installed (names the ``trt`` extra).
        InputError: not a CUDA device, or an unsupported precision.
    """

    name = "tensorrt"

    def __init__(
        self,
        model: SRModel | ExportedModel,
        device: torch.device | str = "cuda",
        precision: str = "auto",
        *,
        profile: ShapeProfile | None = None,
        cache_dir: str | Path | None = None,
        trt_module: ModuleType | None = None,
    ) -> None:
        self.trt = (
            trt_module if trt_module is not None else require("tensorrt", "trt", "the TensorRT backend")
        )
        from certsr_rt.export.onnx import cache_root

        require_described(model)
        device = torch.device(device)
        if device.type != "cuda":
            raise InputError(f"Expected a CUDA device for TensorRT, but got {device}")
        self.engine_path: Path | None = None
        self.onnx_path: Path | None = None
        self._model: SRModel | None = None
        self._described: SRModel | ExportedModel = model
        # The build record of an engine given as a file, read once when the file was described.
        self._recorded: EngineKey | None = None
        if isinstance(model, ExportedModel):
            if model.kind == "engine":
                self.engine_path = model.path
                self._recorded = model.engine_key
                if profile is None and model.engine_key is not None:
                    profile = model.engine_key.profile  # an engine file serves the shapes it was built for
            else:
                self.onnx_path = model.path
            if precision not in ("auto", model.precision):
                raise InputError(
                    f"{model.path} is an {model.precision} build, but precision {precision} was asked"
                )
            precision = model.precision
        else:
            self._model = model
            if precision == "auto":
                precision = "fp16" if model.supports_half else "fp32"
        scale, in_ch, out_ch = model.scale, model.in_channels, model.out_channels
        self.model_name = str(model.name)
        if precision not in ("fp32", "fp16"):
            raise InputError(f"Expected precision fp32, fp16 or auto for TensorRT, but got {precision!r}")
        self.profile = profile if profile is not None else ShapeProfile(channels=in_ch)
        if self.profile.channels != in_ch:
            raise InputError(
                f"Expected a shape profile with {in_ch} channels, but got {self.profile.channels}"
            )
        super().__init__(
            device=device,
            scale=scale,
            in_channels=in_ch,
            precision=precision,
            max_batch=self.profile.max_batch,
        )
        self.out_channels = out_ch
        self.cache_root = Path(cache_dir) if cache_dir is not None else cache_root()
        self.engine: Any = None
        self.context: Any = None
        self._stream: torch.cuda.Stream | None = None
        self._gpu: GpuInfo | None = None

    def _wanted_key(self, gpu: GpuInfo, onnx_sha256: str = "") -> EngineKey:
        return EngineKey(
            onnx_sha256=onnx_sha256,
            precision=self.precision,
            profile=self.profile,
            tensorrt_version=str(self.trt.__version__),
            gpu=gpu,
        )

    def _activate_impl(self) -> None:
        # TensorRT builds, deserialises and creates contexts on the *current* CUDA device, not on the one
        # the backend was given: on cuda:1 (a torchrun rank, --device cuda:1) every call runs under a
        # guard that makes our device current and restores the caller's afterwards.
        with torch.cuda.device(self.device):
            self._gpu = GpuInfo.of(self.device)
            if self.engine_path is None:
                self.engine_path, key = self._prepare(self.precision)
                self._load(key, recorded=key)
            else:
                self._load(self._wanted_key(self._gpu), recorded=self._recorded)
            self._stream = torch.cuda.Stream(self.device)

    def _prepare(self, precision: str) -> tuple[Path, EngineKey]:
        """A cached or newly built engine for the model's ONNX export in ``precision``."""
        from certsr_rt.export.onnx import cached_onnx

        if self.onnx_path is None:
            self.onnx_path = cached_onnx(self._model, fp16=precision == "fp16", cache_dir=self.cache_root)
        return prepare_engine(
            self.trt,
            self.onnx_path,
            precision=precision,
            profile=self.profile,
            gpu=self._gpu,
            cache=EngineCache(self.cache_root / "tensorrt"),
            model=model_record(self._described),
        )

    def _load(self, key: EngineKey, recorded: EngineKey | None) -> None:
        """Deserialize :attr:`engine_path` (its ``recorded`` key checked against ``key``), find its I/O."""
        assert self.engine_path is not None
        self.engine = deserialize_engine(self.trt, self.engine_path, key, recorded)
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"TensorRT could not create an execution context for {self.engine_path}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(
                f"expected an engine with 1 input and 1 output, got inputs {inputs}, outputs {outputs}"
            )
        self._input, self._output = inputs[0], outputs[0]
        # The buffers are torch float32 tensors; an engine with other I/O types would read them wrongly.
        for name in (self._input, self._output):
            dtype = self.engine.get_tensor_dtype(name)
            if dtype != self.trt.DataType.FLOAT:
                raise BackendError(
                    f"expected an engine with float32 input and output, but its tensor {name!r} is {dtype} "
                    f"({self.engine_path}); rebuild it from a certsr-rt export (float32 I/O)"
                )

    def _fall_back_to_fp32(self) -> None:
        if self._model is None:
            given = self.engine_path if self.onnx_path is None else self.onnx_path
            raise BackendError(
                f"{given} is an {self.precision} build and produced NaN/inf on this input; a backend given "
                "a file cannot switch to fp32 by itself: export the model without --fp16 "
                "(certsr-rt export CKPT_OR_NAME --engine) and run that file"
            )
        # The infer() that saw the NaN has already synchronised with our stream: nothing still runs on
        # the half-precision engine.
        self.context = self.engine = None
        self.onnx_path = None
        with torch.cuda.device(self.device):
            self.engine_path, key = self._prepare("fp32")
            self._load(key, recorded=key)

    def _deactivate_impl(self) -> None:
        self.context = None
        self.engine = None
        self._stream = None

    def _infer_impl(self, x: torch.Tensor) -> torch.Tensor:
        self.profile.check(tuple(x.shape))
        # A chunk of a larger batch is a contiguous view at an offset: contiguous, but maybe not aligned.
        x = aligned(x.contiguous())
        n, _, h, w = x.shape
        shape = (n, self.out_channels, h * self.scale, w * self.scale)
        out = aligned(torch.empty(shape, dtype=torch.float32, device=self.device))
        current = torch.cuda.current_stream(self.device)
        stream = self._stream
        assert stream is not None
        stream.wait_stream(current)
        with torch.cuda.device(self.device), torch.cuda.stream(stream):
            if not self.context.set_input_shape(self._input, tuple(x.shape)):
                raise BackendError(
                    f"TensorRT rejected input shape {tuple(x.shape)} ({self.profile.describe()})"
                )
            self.context.set_tensor_address(self._input, x.data_ptr())
            self.context.set_tensor_address(self._output, out.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise BackendError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        # Both buffers were allocated on the current stream but are used on ours: keep them alive until
        # our work is done, then make the current stream wait for it.
        x.record_stream(stream)
        out.record_stream(stream)
        current.wait_stream(stream)
        return out
