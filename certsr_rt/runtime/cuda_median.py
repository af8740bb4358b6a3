"""Median and order statistics over the sample axis in a custom CUDA kernel, with a torch fallback.

:func:`median_and_order_statistics` has the signature of
:func:`certsr_rt.smoothing.aggregate.median_and_order_statistics` and returns the same values. For a CUDA
tensor (fp32, fp16 or bf16) it runs a kernel compiled at run time with NVRTC through NVIDIA's
``cuda-python`` bindings (``pip install 'certsr-rt[gpu]'``); on CPU, for other dtypes, when the bindings
are missing or built for another CUDA major than torch's, or when NVRTC or the kernel fails to load or
compile (one warning per process), it runs the torch implementation (:mod:`certsr_rt.smoothing.aggregate`).

The kernel. One thread per output element, the n samples in registers:

* **network path** (n <= :data:`NETWORK_MAX_N`): a compare-exchange *selection network*, generated in Python
  by :func:`certsr_rt.smoothing.network.selection_network` from Batcher's odd-even merge sorting network and
  pruned to the output ranks that are needed (91 compare-exchanges for the median of n = 21, against 112 for
  the full sort). The network is plain data, so it is verified on CPU (tests simulate it and, for n = 21,
  check all 2**21 zero-one inputs, which by the zero-one principle proves it for every input); the torch
  path runs the same network on whole sample planes.
* **generic path** (any n): for each needed rank, a bisection over the 32-bit order-preserving key of the
  values (32 passes over the n samples, no local memory), exact for any n and rank.

Values are compared as order-preserving unsigned 32-bit keys (``float -> uint`` with the sign trick), so a
compare-exchange is one ``min`` and one ``max`` on integers and the order is total.

NaN policy (the same as the torch reference, which sorts with ``torch.sort``): NaN orders after every
number, +inf included, so a rank that falls on a NaN returns NaN. ``-0.0`` orders before ``+0.0`` in the
kernel while torch treats them as equal; both compare equal with ``==``.

Even n: the median is the mean of the two middle values, computed in fp32 and rounded once to the
tensor's dtype (torch rounds ``a + b`` to fp16/bf16 first; the two agree except where that half-precision
sum overflows, where the kernel stays finite and torch returns inf).

Kernels are compiled once per (device, dtype, n, ranks, path) and cached for the life of the process. The
kernel is launched on the current CUDA stream of the samples' device (or the stream passed in, after it
waits for the current one), which is the stream the backends make wait for their own work: no host
synchronisation. Driver calls run with the device's primary context pushed and popped around them, so the
calling thread's current context (torch's current device) is left as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from certsr_rt.errors import BackendError, InputError, MissingDependencyError, first_line
from certsr_rt.smoothing import aggregate
from certsr_rt.smoothing.network import (
    NETWORK_MAX_N,
    batcher_sorting_network,
    check_ranks,
    needed_ranks,
    selection_network,
    simulate_network,
)

__all__ = [
    "NETWORK_MAX_N",
    "KernelSpec",
    "batcher_sorting_network",
    "compile_kernel",
    "kernel_source",
    "kernel_unavailable_reason",
    "median",
    "median_and_order_statistics",
    "needed_ranks",
    "selection_network",
    "simulate_network",
]

log = logging.getLogger(__name__)

_BLOCK = 256
_KERNEL_DTYPES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}

# --------------------------------------------------------------------------------------------------------
# CUDA C source.


@dataclass(frozen=True)
class KernelSpec:
    """One compiled kernel: what it reduces and how.

    Attributes:
        n: number of samples along dim 0.
        ranks: extra 1-based order statistics written after the median.
        dtype: ``"f32"``, ``"f16"`` or ``"bf16"`` (storage type; compute is on 32-bit keys).
        path: ``"network"`` or ``"generic"``.
    """

    n: int
    ranks: tuple[int, ...]
    dtype: str
    path: str

    @property
    def entry(self) -> str:
        """Name of the ``extern "C"`` kernel function."""
        return f"certsr_select_{self.path}_{self.dtype}"


_PRELUDE = r"""
typedef unsigned short u16;
typedef unsigned int u32;

// Order-preserving key: unsigned comparison of keys == numeric comparison of floats; NaN -> max key.
__device__ __forceinline__ u32 to_key(float f) {
    u32 u = __float_as_uint(f);
    if (f != f) return 0xFFFFFFFFu;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float from_key(u32 k) {
    if (k == 0xFFFFFFFFu) return __uint_as_float(0x7FC00000u);
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}
"""

_IO = {
    "f32": r"""
typedef float T;
__device__ __forceinline__ float load_f(const T* p) { return __ldg(p); }
__device__ __forceinline__ T store_f(float f) { return f; }
""",
    "f16": r"""
typedef u16 T;
__device__ __forceinline__ float load_f(const T* p) {
    u16 h = __ldg(p); float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ T store_f(float f) {
    u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
""",
    "bf16": r"""
typedef u16 T;
__device__ __forceinline__ float load_f(const T* p) { return __uint_as_float(((u32)__ldg(p)) << 16); }
__device__ __forceinline__ T store_f(float f) {
    u32 u = __float_as_uint(f);
    if (f != f) return (u16)0x7FC0u;
    u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest even
    return (u16)(u >> 16);
}
""",
}


def _outputs_code(n: int, ranks: Sequence[int], value_of: Any) -> list[str]:
    """Lines that write the median and the extra ranks, given ``value_of(position) -> C expression``."""
    lines = []
    if n % 2 == 1:
        lines.append(f"    med[m] = store_f(from_key({value_of(n // 2)}));")
    else:
        lines.append(
            f"    med[m] = store_f(0.5f * (from_key({value_of(n // 2 - 1)}) + from_key({value_of(n // 2)})));"
        )
    for r, k in enumerate(ranks):
        lines.append(f"    extra[{r}LL * M + m] = store_f(from_key({value_of(k - 1)}));")
    return lines


def kernel_source(spec: KernelSpec) -> str:
    """CUDA C source of the kernel for ``spec`` (no headers, so NVRTC needs no include path).

    The kernel signature is ``(const T* x, T* med, T* extra, long long M)`` where ``x`` is ``n x M``
    contiguous, ``med`` has ``M`` elements and ``extra`` is ``len(ranks) x M``.

    Args:
        spec: what to compile.

    Returns:
        The source text.
    """
    if spec.dtype not in _IO:
        raise InputError(f"Expected dtype f32, f16 or bf16, but got {spec.dtype!r}")
    n = spec.n
    check_ranks(n, spec.ranks)
    head = [
        _PRELUDE + _IO[spec.dtype],
        f'extern "C" __global__ void __launch_bounds__({_BLOCK})',
        f"{spec.entry}(const T* __restrict__ x, T* __restrict__ med, T* __restrict__ extra, long long M) {{",
        "    long long m = (long long)blockIdx.x * blockDim.x + threadIdx.x;",
        "    if (m >= M) return;",
    ]
    if spec.path == "network":
        if n > NETWORK_MAX_N:
            raise InputError(f"Expected n <= {NETWORK_MAX_N} for the network path, but got {n}")
        network = selection_network(n, needed_ranks(n, spec.ranks))
        used = sorted({w for c in network for w in c} | set(needed_ranks(n, spec.ranks)))
        body = [f"    u32 v{i} = to_key(load_f(x + {i}LL * M + m));" for i in used]
        body.append(f"    // {len(network)} compare-exchanges (Batcher odd-even merge, pruned)")
        for a, b in network:
            body.append(f"    {{ u32 t = min(v{a}, v{b}); v{b} = max(v{a}, v{b}); v{a} = t; }}")
        body += _outputs_code(n, spec.ranks, lambda p: f"v{p}")
    elif spec.path == "generic":
        positions = needed_ranks(n, spec.ranks)
        body = [f"    u32 sel[{len(positions)}];"]
        # Bisection on the key: the smallest key t with #{key <= t} >= k is the k-th smallest key.
        for slot, p in enumerate(positions):
            body += [
                "    {",
                "        u32 lo = 0u, hi = 0xFFFFFFFFu;",
                "        while (lo < hi) {",
                "            u32 mid = lo + ((hi - lo) >> 1);",
                "            int count = 0;",
                f"            for (int i = 0; i < {n}; ++i)",
                "                count += to_key(load_f(x + (long long)i * M + m)) <= mid;",
                f"            if (count >= {p + 1}) hi = mid; else lo = mid + 1u;",
                "        }",
                f"        sel[{slot}] = lo;",
                "    }",
            ]
        body += _outputs_code(n, spec.ranks, lambda p: f"sel[{positions.index(p)}]")
    else:
        raise InputError(f"Expected path 'network' or 'generic', but got {spec.path!r}")
    return "\n".join(head + body + ["}", ""])


# --------------------------------------------------------------------------------------------------------
# NVRTC + driver through cuda-python.


def _bindings() -> tuple[ModuleType, ModuleType]:
    """``(nvrtc, driver)`` from cuda-python (``cuda.bindings`` since 12.6, ``cuda`` before)."""
    try:
        from cuda.bindings import driver, nvrtc  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import cuda as driver  # type: ignore[import-not-found,no-redef]
            from cuda import nvrtc  # type: ignore[import-not-found,no-redef]
        except ImportError as exc:
            raise MissingDependencyError("cuda.bindings", "gpu", "the CUDA median kernel") from exc
    return nvrtc, driver


def _check(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(status, *values)`` tuple, raising :class:`BackendError` on failure."""
    status, *values = result if isinstance(result, tuple) else (result,)
    if int(status) != 0:
        raise BackendError(f"{what} failed: expected success, got {status!r}")
    return values[0] if len(values) == 1 else tuple(values)


def compile_kernel(spec: KernelSpec, arch: str) -> bytes:
    """Compile the kernel for ``spec`` with NVRTC.

    Args:
        spec: what to compile.
        arch: ``"sm_90"``-style for a cubin (what the runtime loads), or ``"compute_80"``-style for PTX
            (works without a GPU; what the CPU tests compile).

    Returns:
        Cubin or PTX bytes.

    Raises:
        MissingDependencyError: cuda-python is not installed.
        BackendError: NVRTC rejected the source or the architecture (its log is in the message).
    """
    nvrtc, _ = _bindings()
    source = kernel_source(spec).encode()
    prog = _check(
        nvrtc.nvrtcCreateProgram(source, f"{spec.entry}.cu".encode(), 0, [], []), "nvrtcCreateProgram"
    )
    try:
        opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17", b"-lineinfo"]
        (status,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if int(status) != 0:
            size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
            buf = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, buf)
            raise BackendError(
                f"NVRTC could not compile {spec.entry} for {arch} (n={spec.n}): "
                f"{buf.decode(errors='replace')}"
            )
        if arch.startswith("sm_"):
            size = _check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
            out = b" " * size
            _check(nvrtc.nvrtcGetCUBIN(prog, out), "nvrtcGetCUBIN")
        else:
            size = _check(nvrtc.nvrtcGetPTXSize(prog), "nvrtcGetPTXSize")
            out = b" " * size
            _check(nvrtc.nvrtcGetPTX(prog, out), "nvrtcGetPTX")
        return out
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


_lock = threading.Lock()
_functions: dict[tuple[int, KernelSpec], Any] = {}
_modules: list[Any] = []  # keep loaded modules alive for the process
_contexts: dict[int, Any] = {}
_unavailable: str | None = None


def _primary_context(driver: ModuleType, index: int) -> Any:
    """The device's primary context (the one PyTorch uses), retained once per process."""
    if index not in _contexts:
        _check(driver.cuInit(0), "cuInit")
        dev = _check(driver.cuDeviceGet(index), "cuDeviceGet")
        _contexts[index] = _check(driver.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
    return _contexts[index]


@contextlib.contextmanager
def _primary_context_current(driver: ModuleType, index: int) -> Iterator[None]:
    """Make the device's primary context current for the enclosed driver calls, then restore the caller's.

    Push/pop rather than ``cuCtxSetCurrent``: setting would leave the calling thread on this device's
    context, which on a multi-GPU machine silently moves the caller's (and torch's) current device.
    """
    _check(driver.cuCtxPushCurrent(_primary_context(driver, index)), "cuCtxPushCurrent")
    try:
        yield
    finally:
        _check(driver.cuCtxPopCurrent(), "cuCtxPopCurrent")


def _device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _function(spec: KernelSpec, device: torch.device) -> Any:
    """Compiled and loaded ``CUfunction`` for ``spec`` on ``device`` (compiled once per process)."""
    index = _device_index(device)
    key = (index, spec)
    with _lock:
        if key in _functions:
            return _functions[key]
        _, driver = _bindings()
        major, minor = torch.cuda.get_device_capability(index)
        try:
            cubin = compile_kernel(spec, f"sm_{major}{minor}")
            with _primary_context_current(driver, index):
                module = _check(driver.cuModuleLoadData(cubin), "cuModuleLoadData")
                _modules.append(module)
                fn = _check(driver.cuModuleGetFunction(module, spec.entry.encode()), "cuModuleGetFunction")
        except (BackendError, MissingDependencyError):
            raise
        except Exception as exc:  # noqa: BLE001 - cuda.pathfinder raises RuntimeError for a missing library
            raise BackendError(
                f"the CUDA median kernel could not be compiled or loaded for sm_{major}{minor}: "
                f"{first_line(exc)}"
            ) from exc
        log.debug("compiled %s (n=%d, ranks=%s) for sm_%d%d", spec.entry, spec.n, spec.ranks, major, minor)
        _functions[key] = fn
        return fn


_NOT_PROBED = "not probed"
_toolchain: str | None = _NOT_PROBED


def _cuda_major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def _bindings_version() -> str | None:
    """The installed cuda-python version (``cuda-bindings`` since 12.6, ``cuda-python`` before)."""
    from importlib import metadata

    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _toolchain_problem() -> str | None:
    """Why cuda-python cannot serve this torch, or None; checked once per process, one warning if not.

    cuda-python of CUDA major X loads ``libnvrtc.so.X`` (through cuda.pathfinder, which raises a
    ``RuntimeError`` when the library is missing), and its cubins need a driver of CUDA X: its major must
    be the CUDA major torch is built with. Then NVRTC is loaded once (``nvrtcVersion``), so a missing
    library is found here, not in the middle of an image.
    """
    global _toolchain
    if _toolchain is not _NOT_PROBED:
        return _toolchain
    nvrtc, _ = _bindings()
    problem = None
    version = _bindings_version()
    have, want = _cuda_major(version), _cuda_major(torch.version.cuda)
    if have is not None and want is not None and have != want:
        problem = (
            f"cuda-python {version} is for CUDA {have}, but torch runs CUDA {torch.version.cuda}; install "
            f"the matching major: pip install 'cuda-python>={want},<{want + 1}'"
        )
    else:
        try:
            _check(nvrtc.nvrtcVersion(), "nvrtcVersion")
        except Exception as exc:  # noqa: BLE001 - RuntimeError (pathfinder), OSError (dlopen), BackendError
            problem = f"NVRTC could not be loaded: {first_line(exc)}"
    if problem is not None:
        log.warning("CUDA median kernel unavailable, using torch: %s", problem)
    _toolchain = problem
    return problem


def kernel_unavailable_reason(device: torch.device | str | None = None) -> str | None:
    """Why the kernel would not run for tensors on ``device``, or ``None`` when it would.

    The first call on a CUDA device also checks the toolchain (:func:`_toolchain_problem`: cuda-python's
    CUDA major against torch's, and that NVRTC loads), with one warning when it fails.

    Args:
        device: a torch device; ``None`` means the current CUDA device.

    Returns:
        A short reason (no CUDA device, cuda-python missing or of another CUDA major, NVRTC not loadable,
        the kernel failed once) or ``None``.
    """
    dev = torch.device(device) if device is not None else torch.device("cuda")
    if dev.type != "cuda":
        return f"tensors are on {dev}, not CUDA"
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    try:
        problem = _toolchain_problem()
    except MissingDependencyError as exc:
        return str(exc)
    return problem if problem is not None else _unavailable


def _launch(
    samples: torch.Tensor, spec: KernelSpec, stream: torch.cuda.Stream
) -> tuple[torch.Tensor, torch.Tensor]:
    _, driver = _bindings()
    x = samples.reshape(samples.shape[0], -1)
    total = x.shape[1]
    med = torch.empty(total, dtype=samples.dtype, device=samples.device)
    extra = torch.empty((len(spec.ranks), total), dtype=samples.dtype, device=samples.device)
    if total == 0:
        return med, extra
    fn = _function(spec, samples.device)
    index = _device_index(samples.device)
    args = [
        ctypes.c_void_p(x.data_ptr()),
        ctypes.c_void_p(med.data_ptr()),
        # With no extra ranks the kernel never touches ``extra``; pass a valid pointer all the same.
        ctypes.c_void_p(extra.data_ptr() if spec.ranks else med.data_ptr()),
        ctypes.c_longlong(total),
    ]
    pointers = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])
    grid = (total + _BLOCK - 1) // _BLOCK
    with _primary_context_current(driver, index):
        _check(
            driver.cuLaunchKernel(
                fn,
                grid,
                1,
                1,
                _BLOCK,
                1,
                1,
                0,
                driver.CUstream(stream.cuda_stream),
                ctypes.addressof(pointers),
                0,
            ),
            "cuLaunchKernel",
        )
    return med, extra


def median_and_order_statistics(
    samples: torch.Tensor,
    ranks: Sequence[int] = (),
    *,
    method: str = "auto",
    stream: torch.cuda.Stream | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Median and 1-based order statistics over axis 0 — the kernel on CUDA, torch elsewhere.

    Args:
        samples: ``n x ...`` tensor of n samples.
        ranks: extra 1-based ranks, each in ``[1, n]`` (the certified bounds' order statistics).
        method: ``"auto"`` (kernel when it can run: the network for n <= :data:`NETWORK_MAX_N`, else the
            generic path; torch otherwise), ``"network"`` or ``"generic"`` (that kernel path; raises when
            it cannot run), or ``"torch"`` (the reference).
        stream: CUDA stream to launch on; default the current stream of the samples' device. Another
            stream is first made to wait for the current one (where the samples were produced and the
            outputs are allocated); the caller makes later work wait for ``stream`` before reading them.

    Returns:
        ``(median, [order statistic for each rank])``, each shaped ``samples.shape[1:]``, in the samples'
        dtype and on their device.

    Raises:
        InputError: bad ranks, method or tensor.
        BackendError: an explicit kernel ``method`` cannot run here.
    """
    global _unavailable
    if method not in ("auto", "network", "generic", "torch"):
        raise InputError(f"Expected method auto, network, generic or torch, but got {method!r}")
    if samples.dim() < 1 or samples.shape[0] < 1:
        raise InputError(f"Expected samples with n >= 1 along dim 0, but got shape {tuple(samples.shape)}")
    n = samples.shape[0]
    ranks = tuple(int(k) for k in ranks)
    check_ranks(n, ranks)
    if method == "torch":
        return aggregate.median_and_order_statistics(samples, ranks)
    explicit = method != "auto"
    reason = kernel_unavailable_reason(samples.device)
    if reason is None and samples.dtype not in _KERNEL_DTYPES:
        reason = f"dtype {samples.dtype} is not one of float32, float16, bfloat16"
    if reason is None and explicit and method == "network" and n > NETWORK_MAX_N:
        reason = f"the network path takes n <= {NETWORK_MAX_N}, got n = {n}"
    if reason is not None:
        if explicit:
            raise BackendError(f"the CUDA median kernel ({method}) cannot run: {reason}")
        return aggregate.median_and_order_statistics(samples, ranks)
    path = method if explicit else ("network" if n <= NETWORK_MAX_N else "generic")
    spec = KernelSpec(n=n, ranks=ranks, dtype=_KERNEL_DTYPES[samples.dtype], path=path)
    current = torch.cuda.current_stream(samples.device)
    launch_stream = stream if stream is not None else current
    x = samples.contiguous()  # a copy, when one is made, is queued on the current stream
    if launch_stream != current:
        # The samples were produced, and the outputs are allocated, on the current stream.
        launch_stream.wait_stream(current)
    try:
        med, extra = _launch(x, spec, launch_stream)
    except (BackendError, MissingDependencyError) as exc:
        if explicit:
            raise
        # A broken toolchain (e.g. an NVRTC older than the GPU, a library that does not load) must not stop
        # inference: fall back, with one warning, for the rest of the process.
        _unavailable = f"kernel failed once in this process: {exc}"
        log.warning("CUDA median kernel unavailable, using torch: %s", exc)
        return aggregate.median_and_order_statistics(samples, ranks)
    if launch_stream != current:
        for t in (x, med, extra):
            t.record_stream(launch_stream)
    shape = samples.shape[1:]
    return med.view(shape), [extra[r].view(shape) for r in range(len(ranks))]


def median(samples: torch.Tensor, *, method: str = "auto") -> torch.Tensor:
    """Per-element median over dim 0 (even n: mean of the two middle values); see the module docstring."""
    return median_and_order_statistics(samples, (), method=method)[0]


def source_digest(spec: KernelSpec) -> str:
    """Short hash of the kernel source (for logs and benchmark records)."""
    return hashlib.sha256(kernel_source(spec).encode()).hexdigest()[:12]
