"""The CUDA median kernel: its network and key logic on CPU (always), NVRTC compilation (when the bindings
are installed), and the kernel against torch on a GPU (skipped without one)."""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest
import torch

from certsr_rt.errors import BackendError, InputError
from certsr_rt.runtime import cuda_median as cm
from certsr_rt.smoothing import aggregate
from certsr_rt.smoothing import network as sn


def _sorted_positions(values: torch.Tensor, positions: tuple[int, ...]) -> torch.Tensor:
    return torch.sort(values, dim=0).values[list(positions)]


# ----------------------------------------------------------------------------- the network (CPU)


@pytest.mark.parametrize("n", [*range(1, 34), 47, 64])
def test_batcher_network_sorts(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, 500, generator=gen)
    network = sn.batcher_sorting_network(n)
    assert all(0 <= a < b < n for a, b in network)
    assert torch.equal(sn.simulate_network(x, network), torch.sort(x, dim=0).values)


def test_median_network_for_21_has_91_compare_exchanges() -> None:
    assert len(sn.batcher_sorting_network(21)) == 112
    assert len(sn.selection_network(21, (10,))) == 91


def test_median_network_for_21_is_correct_for_every_zero_one_input() -> None:
    # Zero-one principle: a compare-exchange network puts the k-th smallest value on wire k for every
    # input iff it does so for every 0/1 input (compare-exchange commutes with monotone maps). All 2**21.
    n = 21
    network = sn.selection_network(n, (10,))
    codes = np.arange(1 << n, dtype=np.uint32)
    wires = [((codes >> i) & 1).astype(np.uint8) for i in range(n)]
    for a, b in network:
        wires[a], wires[b] = np.minimum(wires[a], wires[b]), np.maximum(wires[a], wires[b])
    ones = np.zeros(1 << n, dtype=np.uint8)
    for i in range(n):
        ones += ((codes >> i) & 1).astype(np.uint8)
    # The median of 21 bits is 1 exactly when at least 11 of them are 1.
    assert np.array_equal(wires[10], (ones >= 11).astype(np.uint8))


@pytest.mark.parametrize(
    ("n", "ranks"),
    [
        (21, ()),
        (21, (1, 21)),
        (21, (4, 18)),
        (20, ()),
        (22, (3,)),
        (5, (1, 2, 3, 4, 5)),
        (64, (10, 55)),
        (2, ()),
        (1, (1,)),
        (33, (17,)),
    ],
)
def test_pruned_selection_network_gives_the_needed_order_statistics(n: int, ranks: tuple[int, ...]) -> None:
    positions = sn.needed_ranks(n, ranks)
    network = sn.selection_network(n, positions)
    assert len(network) <= len(sn.batcher_sorting_network(n))
    gen = torch.Generator().manual_seed(7)
    # Heavy ties (small integers), then continuous values.
    for x in (torch.randint(0, 4, (n, 2000), generator=gen).float(), torch.randn(n, 2000, generator=gen)):
        got = sn.simulate_network(x, network)[list(positions)]
        assert torch.equal(got, _sorted_positions(x, positions))


def test_needed_ranks_and_bad_ranks() -> None:
    assert sn.needed_ranks(21) == (10,)
    assert sn.needed_ranks(20) == (9, 10)
    assert sn.needed_ranks(21, (1, 21, 11)) == (0, 10, 20)
    with pytest.raises(InputError, match=r"\[1, 21\].*22"):
        sn.needed_ranks(21, (22,))
    with pytest.raises(InputError, match="n >= 1"):
        sn.batcher_sorting_network(0)


def _to_key(values: np.ndarray) -> np.ndarray:
    """The kernel's to_key() in numpy, for checking the order it induces."""
    u = values.astype(np.float32).view(np.uint32)
    key = np.where(u & 0x80000000, ~u, u | 0x80000000).astype(np.uint32)
    return np.where(np.isnan(values), np.uint32(0xFFFFFFFF), key)


def test_order_preserving_key_matches_torch_order_with_nan_last() -> None:
    special = np.array(
        [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38, 1.0, -1.0], dtype=np.float32
    )
    rng = np.random.default_rng(0)
    values = np.concatenate([special, rng.standard_normal(500).astype(np.float32) * 1e3])
    by_key = values[np.argsort(_to_key(values), kind="stable")]
    by_torch = torch.sort(torch.from_numpy(values), stable=True).values.numpy()
    # Same order (NaN last, -inf first); -0.0 and +0.0 may swap, which == cannot see.
    assert np.isnan(by_key[-1]) and np.isnan(by_torch[-1])
    assert np.array_equal(by_key[:-1], by_torch[:-1])


# ----------------------------------------------------------------------------- the source and NVRTC


def test_kernel_source_has_the_network_and_outputs() -> None:
    src = cm.kernel_source(cm.KernelSpec(21, (2, 19), "f16", "network"))
    assert src.count("u32 t = min(") == len(sn.selection_network(21, sn.needed_ranks(21, (2, 19))))
    assert "med[m] = store_f(from_key(v10));" in src
    assert "extra[0LL * M + m] = store_f(from_key(v1));" in src
    assert "extra[1LL * M + m] = store_f(from_key(v18));" in src
    even = cm.kernel_source(cm.KernelSpec(20, (), "f32", "network"))
    assert "0.5f * (from_key(v9) + from_key(v10))" in even
    generic = cm.kernel_source(cm.KernelSpec(101, (3,), "bf16", "generic"))
    assert "i < 101" in generic and "count >= 51" in generic and "count >= 3" in generic
    with pytest.raises(InputError, match="n <= 64"):
        cm.kernel_source(cm.KernelSpec(65, (), "f32", "network"))
    with pytest.raises(InputError, match="f64"):
        cm.kernel_source(cm.KernelSpec(3, (), "f64", "network"))


def _nvrtc_usable() -> bool:
    if importlib.util.find_spec("cuda") is None:
        return False
    try:
        cm.compile_kernel(cm.KernelSpec(3, (), "f32", "network"), "compute_80")
    except Exception:  # noqa: BLE001 - any failure to reach libnvrtc means: skip
        return False
    return True


needs_nvrtc = pytest.mark.skipif(not _nvrtc_usable(), reason="cuda-python with libnvrtc is not installed")


@needs_nvrtc
@pytest.mark.parametrize(
    "spec",
    [
        cm.KernelSpec(21, (), "f32", "network"),
        cm.KernelSpec(21, (3, 19), "f16", "network"),
        cm.KernelSpec(20, (1,), "bf16", "network"),
        cm.KernelSpec(64, (), "f16", "network"),
        cm.KernelSpec(21, (2,), "f32", "generic"),
        cm.KernelSpec(1001, (40, 962), "f16", "generic"),
    ],
    ids=lambda s: f"{s.path}-{s.dtype}-n{s.n}",
)
def test_nvrtc_compiles_the_kernel_to_ptx(spec: cm.KernelSpec) -> None:
    ptx = cm.compile_kernel(spec, "compute_80")
    assert f".entry {spec.entry}".encode() in ptx


@needs_nvrtc
def test_nvrtc_compiles_a_cubin_for_hopper_and_reports_errors() -> None:
    cubin = cm.compile_kernel(cm.KernelSpec(21, (), "f16", "network"), "sm_90")
    assert cubin[:4] == b"\x7fELF"
    with pytest.raises(BackendError, match="NVRTC could not compile"):
        cm.compile_kernel(cm.KernelSpec(21, (), "f16", "network"), "compute_1")


# ----------------------------------------------------------------------------- dispatch on CPU


@pytest.mark.parametrize(("n", "ranks"), [(21, ()), (21, (2, 20)), (20, (1,)), (1, (1,))])
def test_cpu_falls_back_to_the_torch_reference(n: int, ranks: tuple[int, ...]) -> None:
    x = torch.randn(n, 3, 5, 7, generator=torch.Generator().manual_seed(n))
    med, stats = cm.median_and_order_statistics(x, ranks)
    ref_med, ref_stats = aggregate.median_and_order_statistics(x, ranks, method="sort")
    assert torch.equal(med, ref_med)
    assert all(torch.equal(a, b) for a, b in zip(stats, ref_stats, strict=True))
    assert torch.equal(cm.median(x), aggregate.median(x))


def test_cpu_errors() -> None:
    x = torch.randn(5, 4)
    with pytest.raises(InputError, match=r"\[1, 5\]"):
        cm.median_and_order_statistics(x, (6,))
    with pytest.raises(InputError, match="method"):
        cm.median_and_order_statistics(x, method="quick")
    with pytest.raises(BackendError, match="cannot run: tensors are on cpu"):
        cm.median_and_order_statistics(x, method="network")
    assert cm.kernel_unavailable_reason("cpu") == "tensors are on cpu, not CUDA"


# ----------------------------------------------------------------------------- the kernel on a GPU

gpu = pytest.mark.gpu
needs_kernel = pytest.mark.skipif(
    not torch.cuda.is_available() or cm.kernel_unavailable_reason("cuda") is not None,
    reason="needs a CUDA device and cuda-python",
)


def _check_against_torch(x: torch.Tensor, ranks: tuple[int, ...], method: str) -> None:
    med, stats = cm.median_and_order_statistics(x, ranks, method=method)
    torch.cuda.synchronize()
    ref_med, ref_stats = aggregate.median_and_order_statistics(x.float().cpu(), ranks, method="sort")
    for got, ref in zip([med, *stats], [ref_med, *ref_stats], strict=True):
        assert got.dtype == x.dtype and got.shape == x.shape[1:]
        ref = ref.to(x.dtype)
        # equal_nan: NaN must land exactly where torch puts it (NaN orders last).
        assert torch.equal(torch.isnan(got.cpu()), torch.isnan(ref)), "NaN positions differ"
        assert torch.equal(got.cpu().nan_to_num(0.0), ref.nan_to_num(0.0))


@gpu
@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("n", "ranks", "method"),
    [
        (21, (), "network"),
        (21, (3, 19), "network"),
        (21, (3, 19), "generic"),
        (20, (1, 20), "network"),
        (3, (), "network"),
        (1, (1,), "network"),
        (64, (5,), "network"),
        (65, (), "generic"),
        (101, (7, 95), "auto"),
        (22, (), "generic"),
    ],
)
def test_kernel_matches_torch_on_random_data(
    dtype: torch.dtype, n: int, ranks: tuple[int, ...], method: str
) -> None:
    gen = torch.Generator(device="cuda").manual_seed(n)
    x = torch.randn(n, 3, 37, 53, generator=gen, device="cuda").to(dtype)
    _check_against_torch(x, ranks, method)


@gpu
@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("method", ["network", "generic"])
def test_kernel_ties_all_equal_extremes_and_nan(dtype: torch.dtype, method: str) -> None:
    n = 21
    gen = torch.Generator(device="cuda").manual_seed(0)
    ties = torch.randint(0, 3, (n, 4096), generator=gen, device="cuda").to(dtype)
    _check_against_torch(ties, (2, 20), method)
    _check_against_torch(torch.full((n, 1000), 0.25, device="cuda", dtype=dtype), (1, 21), method)
    info = torch.finfo(dtype)
    pool = torch.tensor(
        [
            float("inf"),
            float("-inf"),
            info.max,
            -info.max,
            info.tiny,
            -info.tiny,
            0.0,
            -0.0,
            info.tiny / 4,
            1.0,
        ],
        device="cuda",
        dtype=dtype,
    )
    extremes = pool[torch.randint(0, len(pool), (n, 4096), generator=gen, device="cuda")]
    _check_against_torch(extremes, (1, 11, 21), method)
    with_nan = torch.randn(n, 4096, generator=gen, device="cuda").to(dtype)
    with_nan[torch.rand(n, 4096, generator=gen, device="cuda") < 0.2] = float("nan")
    _check_against_torch(with_nan, (1, 21), method)


@gpu
@needs_kernel
def test_kernel_takes_non_contiguous_input_and_a_given_stream() -> None:
    x = torch.randn(3, 21, 64, 64, device="cuda").transpose(0, 1)  # 21 x 3 x 64 x 64, not contiguous
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        med, _ = cm.median_and_order_statistics(x, method="network", stream=stream)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(med.cpu(), aggregate.median(x.cpu()))


@gpu
@needs_kernel
def test_kernels_are_compiled_once_per_process() -> None:
    x = torch.randn(21, 100, device="cuda")
    cm.median(x, method="network")
    before = len(cm._functions)
    for _ in itertools.repeat(None, 3):
        cm.median(x, method="network")
    assert len(cm._functions) == before


# ----------------------------------------------------------------------------- driver calls (fake, CPU)


class _FakeDriver:
    """Records the driver calls of loading and launching; has no cuCtxSetCurrent on purpose."""

    def __init__(self, launch_status: int = 0) -> None:
        self.calls: list[str] = []
        self.launch_status = launch_status

    def _ok(self, name: str, *values: object) -> tuple:
        self.calls.append(name)
        return (0, *values)

    def cuInit(self, flags: int) -> tuple:  # noqa: N802 - the driver's names
        return self._ok("cuInit")

    def cuDeviceGet(self, index: int) -> tuple:  # noqa: N802
        return self._ok("cuDeviceGet", f"dev{index}")

    def cuDevicePrimaryCtxRetain(self, dev: str) -> tuple:  # noqa: N802
        return self._ok("cuDevicePrimaryCtxRetain", f"ctx-{dev}")

    def cuCtxPushCurrent(self, ctx: str) -> tuple:  # noqa: N802
        return self._ok(f"push {ctx}")

    def cuCtxPopCurrent(self) -> tuple:  # noqa: N802
        return self._ok("pop", "ctx")

    def cuModuleLoadData(self, image: bytes) -> tuple:  # noqa: N802
        return self._ok("cuModuleLoadData", "module")

    def cuModuleGetFunction(self, module: str, name: bytes) -> tuple:  # noqa: N802
        return self._ok("cuModuleGetFunction", "fn")

    def CUstream(self, handle: int) -> int:  # noqa: N802
        return handle

    def cuLaunchKernel(self, *args: object) -> tuple:  # noqa: N802
        self.calls.append("cuLaunchKernel")
        return (self.launch_status,)


def _with_fake_driver(monkeypatch, driver: _FakeDriver) -> None:
    monkeypatch.setattr(cm, "_bindings", lambda: (None, driver))
    monkeypatch.setattr(cm, "compile_kernel", lambda spec, arch: b"cubin")
    monkeypatch.setattr(cm, "_device_index", lambda device: 1)
    monkeypatch.setattr(cm, "_functions", {})
    monkeypatch.setattr(cm, "_contexts", {})
    monkeypatch.setattr(cm, "_modules", [])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (9, 0))


def test_load_and_launch_push_and_pop_the_primary_context(monkeypatch) -> None:
    driver = _FakeDriver()
    _with_fake_driver(monkeypatch, driver)
    stream = type("S", (), {"cuda_stream": 7})()
    cm._launch(torch.randn(21, 10), cm.KernelSpec(21, (), "f32", "network"), stream)
    assert driver.calls == [
        "cuInit",
        "cuDeviceGet",
        "cuDevicePrimaryCtxRetain",
        "push ctx-dev1",
        "cuModuleLoadData",
        "cuModuleGetFunction",
        "pop",
        "push ctx-dev1",
        "cuLaunchKernel",
        "pop",
    ]
    failing = _FakeDriver(launch_status=700)
    _with_fake_driver(monkeypatch, failing)
    with pytest.raises(BackendError, match="cuLaunchKernel failed"):
        cm._launch(torch.randn(21, 10), cm.KernelSpec(21, (), "f32", "network"), stream)
    assert failing.calls[-2:] == ["cuLaunchKernel", "pop"]  # restored even when the launch fails


class _FakeStream:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def wait_stream(self, other: _FakeStream) -> None:
        self.log.append(f"{self.name} waits for {other.name}")


def test_a_given_stream_waits_for_the_current_one_before_the_launch(monkeypatch) -> None:
    log: list[str] = []
    current, side = _FakeStream("current", log), _FakeStream("side", log)

    def launch(x: torch.Tensor, spec: cm.KernelSpec, stream: _FakeStream) -> tuple:
        log.append(f"launch on {stream.name}")
        total = x[0].numel()
        return torch.zeros(total), torch.zeros(len(spec.ranks), total)

    monkeypatch.setattr(cm, "kernel_unavailable_reason", lambda device: None)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current)
    monkeypatch.setattr(cm, "_launch", launch)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, s: log.append(f"record on {s.name}"))
    cm.median_and_order_statistics(torch.randn(21, 4, 5), stream=side)
    assert log[:2] == ["side waits for current", "launch on side"]
    assert log[2:] == ["record on side"] * 3
    log.clear()
    cm.median_and_order_statistics(torch.randn(21, 4, 5))
    assert log == ["launch on current"]


# ----------------------------------------------------------------------------- toolchain failures (fake, CPU)


class _FakeNvrtc:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls = 0

    def nvrtcVersion(self) -> tuple:  # noqa: N802 - NVRTC's name
        self.calls += 1
        if self.error is not None:
            raise self.error
        return (0, 13, 0)


def _pretend_cuda(monkeypatch, nvrtc: _FakeNvrtc, bindings: str | None, torch_cuda: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cm, "_bindings", lambda: (nvrtc, _FakeDriver()))
    monkeypatch.setattr(cm, "_bindings_version", lambda: bindings)
    monkeypatch.setattr(torch.version, "cuda", torch_cuda)
    monkeypatch.setattr(cm, "_toolchain", cm._NOT_PROBED)
    monkeypatch.setattr(cm, "_unavailable", None)


def test_a_missing_libnvrtc_is_found_by_the_availability_check_with_one_warning(monkeypatch, caplog) -> None:
    # What cuda.pathfinder raises when libnvrtc.so.13 is not on the machine.
    nvrtc = _FakeNvrtc(RuntimeError("Unable to load libnvrtc.so.13\nsearched: ..."))
    _pretend_cuda(monkeypatch, nvrtc, "13.0.1", "13.0")
    with caplog.at_level("WARNING", logger="certsr_rt"):
        first = cm.kernel_unavailable_reason("cuda:0")
        second = cm.kernel_unavailable_reason("cuda:0")
    assert first == second == "NVRTC could not be loaded: Unable to load libnvrtc.so.13"
    assert nvrtc.calls == 1 and len(caplog.records) == 1
    assert "using torch" in caplog.records[0].getMessage()


def test_cuda_python_of_another_cuda_major_than_torch_is_refused(monkeypatch) -> None:
    nvrtc = _FakeNvrtc()
    _pretend_cuda(monkeypatch, nvrtc, "13.0.1", "12.8")
    reason = cm.kernel_unavailable_reason("cuda:0")
    assert reason is not None and "cuda-python 13.0.1 is for CUDA 13, but torch runs CUDA 12.8" in reason
    assert "pip install 'cuda-python>=12,<13'" in reason and nvrtc.calls == 0
    _pretend_cuda(monkeypatch, nvrtc, "12.9.0", "12.8")
    assert cm.kernel_unavailable_reason("cuda:0") is None and nvrtc.calls == 1


def test_any_compile_or_load_failure_falls_back_to_torch_once(monkeypatch, caplog) -> None:
    """A RuntimeError from compiling (not a BackendError) must not reach the Upscaler."""
    _with_fake_driver(monkeypatch, _FakeDriver())
    monkeypatch.setattr(cm, "_unavailable", None)
    monkeypatch.setattr(cm, "kernel_unavailable_reason", lambda device: None)
    stream = type("S", (), {"cuda_stream": 7})()
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: stream)

    def broken(spec: cm.KernelSpec, arch: str) -> bytes:
        raise RuntimeError("Unable to load libnvrtc-builtins.so.13.0")

    monkeypatch.setattr(cm, "compile_kernel", broken)
    x = torch.randn(21, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    with caplog.at_level("WARNING", logger="certsr_rt"):
        med, _ = cm.median_and_order_statistics(x)
    assert torch.equal(med, aggregate.median(x))
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "could not be compiled or loaded for sm_90: Unable to load libnvrtc-builtins" in warning
    assert cm._unavailable is not None and "kernel failed once" in cm._unavailable
    with pytest.raises(BackendError, match="could not be compiled or loaded"):
        cm.median_and_order_statistics(x, method="network")  # an explicit method still says why
