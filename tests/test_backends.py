"""Backends behind one interface: onnxruntime vs torch, the factory, missing libraries, and the TensorRT
logic that does not need TensorRT (profiles, engine cache keys, refusals, the build sequence) with a fake
``tensorrt`` module."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import make_model, tiny_rrdbnet, tiny_srvgg

from certsr_rt.errors import BackendError, CertSRError, InputError, MissingDependencyError
from certsr_rt.export import describe_exported
from certsr_rt.export import tensorrt as trt_export
from certsr_rt.export.tensorrt import EngineCache, EngineKey, GpuInfo, ShapeProfile
from certsr_rt.runtime import backends
from certsr_rt.runtime.backends.torch_backend import TorchBackend
from certsr_rt.smoothing.aggregate import median
from certsr_rt.smoothing.noise import gaussian_field

ASSETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "assets" / "data"

needs_ort = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="onnx/onnxruntime are not installed",
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    """One ONNX cache for the module, so each tiny model is exported once."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CERTSR_RT_CACHE", str(root))
        yield root


# ----------------------------------------------------------------------------- onnxruntime vs torch


@needs_ort
def test_onnxruntime_backend_equals_torch_backend(cache: Path) -> None:
    from certsr_rt.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    model = tiny_rrdbnet()
    x = torch.rand(5, 3, 13, 9, generator=torch.Generator().manual_seed(0))
    with OnnxRuntimeBackend(model, "cpu", threads=1) as ort_backend:
        assert (ort_backend.precision, ort_backend.scale, ort_backend.in_channels) == ("fp32", 4, 3)
        got = ort_backend.infer(x)
        assert ort_backend.onnx_path is not None and ort_backend.onnx_path.parent == cache / "onnx"
    with TorchBackend(model, "cpu") as torch_backend:
        expected = torch_backend.infer(x)
    assert got.shape == expected.shape == (5, 3, 52, 36) and got.dtype == torch.float32
    assert (got - expected).abs().max().item() <= 1e-4


@needs_ort
def test_onnxruntime_backend_from_an_exported_file(tmp_path: Path) -> None:
    from certsr_rt.export.onnx import export_onnx
    from certsr_rt.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    model = tiny_srvgg()
    path = export_onnx(model, tmp_path / "m.onnx").path
    exported = describe_exported(path)
    backend = backends.create_backend("onnxruntime", exported, "cpu", "auto")
    assert isinstance(backend, OnnxRuntimeBackend)
    assert (backend.scale, backend.in_channels, backend.precision) == (4, 3, "fp32")
    x = torch.rand(2, 3, 6, 5)
    with torch.inference_mode():
        assert (backend.infer(x) - model.module(x)).abs().max().item() <= 1e-4
    with pytest.raises(InputError, match="is an fp32 export, but precision fp16"):
        backends.create_backend("onnxruntime", exported, "cpu", "fp16")
    with pytest.raises(InputError, match="needs a loaded model, not the exported file .*m.onnx"):
        backends.create_backend("torch", exported, "cpu", "auto")
    with pytest.raises(InputError, match="needs a loaded model, not the exported file .*m.onnx"):
        TorchBackend(exported, "cpu")  # type: ignore[arg-type]


@needs_ort
def test_onnxruntime_backend_argument_errors() -> None:
    with pytest.raises(InputError, match="fp16 needs a CUDA device"):
        backends.create_backend("onnxruntime", tiny_srvgg(), "cpu", "fp16")
    with pytest.raises(InputError, match="fp32, fp16 or auto for onnxruntime, but got 'bf16'"):
        backends.create_backend("onnxruntime", tiny_srvgg(), "cpu", "bf16")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BackendError, match=r"CUDA execution provider.*certsr-rt\[gpu\]"):
            backends.create_backend("onnxruntime", tiny_srvgg(), "cuda", "fp32")


@needs_ort
def test_same_smoothing_on_torch_and_onnxruntime_on_a_real_image(cache: Path) -> None:
    """The median of 21 noisy forwards agrees across backends: the noise belongs to the project."""
    cv2 = pytest.importorskip("cv2")
    path = ASSETS / "Set5" / "LR_x4" / "img_001.png"
    if not path.is_file():
        pytest.skip("../shared/assets is not present")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)[:32, :24, ::-1].astype(np.float32) / 255.0
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None]
    noise = gaussian_field((21, 3, *x.shape[2:]), seed=0)
    noisy = x + 0.05 * noise
    model = tiny_rrdbnet()
    results = {}
    for name in ("torch", "onnxruntime"):
        with backends.create_backend(name, model, "cpu", "fp32") as backend:
            outputs = torch.cat([backend.infer(chunk) for chunk in noisy.split(8)])
        results[name] = median(outputs)
    assert results["torch"].shape == (3, 128, 96)
    assert (results["torch"] - results["onnxruntime"]).abs().max().item() <= 1e-4


@needs_ort
def test_upscale_command_onnxruntime_equals_torch_on_a_real_image(tmp_path: Path, cache: Path) -> None:
    """``certsr-rt upscale --backend onnxruntime`` vs ``--backend torch``, float32 TIFF in and out."""
    try:
        from typer.testing import CliRunner

        from certsr_rt.cli.app import app
        from certsr_rt.io.images import read_image, write_image
        from certsr_rt.models import load_model

        load_model("tiny-srvgg")
    except (ImportError, CertSRError) as exc:
        pytest.skip(f"upscale command or tiny-srvgg not available: {exc}")
    cv2 = pytest.importorskip("cv2")
    src = ASSETS / "Set5" / "LR_x4" / "img_003.png"
    if not src.is_file():
        pytest.skip("../shared/assets is not present")
    photo = tmp_path / "photo.tif"
    write_image(photo, cv2.imread(str(src), cv2.IMREAD_COLOR)[:40, :40, ::-1].astype(np.float32) / 255.0)
    out = {}
    for name in ("torch", "onnxruntime"):
        out[name] = tmp_path / f"{name}.tif"
        args = [
            "upscale",
            str(photo),
            "-o",
            str(out[name]),
            "--backend",
            name,
            "--model",
            "tiny-srvgg",
            "--device",
            "cpu",
            "--samples",
            "21",
            "--sigma",
            "0.05",
            "--seed",
            "0",
            "--quiet",
        ]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (result.output, result.exception)
    a, b = read_image(out["torch"]), read_image(out["onnxruntime"])
    assert a.shape == b.shape == (160, 160, 3) and a.dtype == np.float32
    assert np.abs(a - b).max() <= 1e-4


# ----------------------------------------------------------------------------- the factory


def test_create_backend_by_name_and_errors() -> None:
    model = tiny_srvgg()
    assert isinstance(backends.create_backend("torch", model, "cpu", "auto"), TorchBackend)
    with pytest.raises(
        InputError, match="Expected a backend in auto, torch, onnxruntime, tensorrt, but got 'tvm'"
    ):
        backends.create_backend("tvm", model, "cpu", "auto")
    assert backends.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert backends.resolve_device("auto") == torch.device("cpu")


def test_cuda_without_an_index_becomes_the_current_device_everywhere(monkeypatch) -> None:
    """torch.device("cuda") != torch.device("cuda:0"): a backend kept on "cuda" refused every tensor."""
    from certsr_rt._device import resolve_device

    assert torch.device("cuda") != torch.device("cuda", 0)  # why the index must be filled in
    assert resolve_device("cuda", check_available=False) == torch.device("cuda", 0)  # no CUDA here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0) and resolve_device("auto").index == 1
    # Every backend, however it is created, holds the normalised device.
    backend = TorchBackend(tiny_srvgg(), "cuda", "fp32")
    assert backend.device == torch.device("cuda", 1) and str(backend.device) == "cuda:1"
    assert backends.create_backend("torch", tiny_srvgg(), torch.device("cuda"), "fp32").device.index == 1


def test_auto_picks_onnxruntime_on_cpu_when_installed_else_torch(monkeypatch, cache: Path) -> None:
    model = tiny_srvgg()
    monkeypatch.setattr(backends, "_installed", lambda name: False)
    assert backends.available_backends("cpu") == ["torch"]
    assert backends.create_backend("auto", model, "cpu", "auto").name == "torch"
    monkeypatch.setattr(backends, "_installed", lambda name: name == "onnxruntime")
    assert backends.available_backends("cpu") == ["onnxruntime", "torch"]
    if importlib.util.find_spec("onnxruntime") is not None:
        assert backends.create_backend("auto", model, "cpu", "auto").name == "onnxruntime"
    # bf16 is torch-only: auto skips onnxruntime rather than failing.
    chosen = backends.create_backend("auto", model, "cpu", "fp32")
    assert chosen.name in ("onnxruntime", "torch")


def test_upscale_default_backend_is_onnxruntime_on_cpu_when_installed(monkeypatch) -> None:
    monkeypatch.setattr(backends, "_installed", lambda name: True)
    assert backends.default_backend("cpu") == "auto"  # auto on CPU: onnxruntime, then torch
    assert backends.default_backend("cuda:0") == "torch"
    monkeypatch.setattr(backends, "_installed", lambda name: name == "onnxruntime")  # no onnx to export
    assert backends.default_backend("cpu") == "torch"


def test_auto_order_on_cuda(monkeypatch) -> None:
    from certsr_rt.runtime.backends import onnxruntime_backend

    monkeypatch.setattr(backends, "_installed", lambda name: True)
    monkeypatch.setattr(onnxruntime_backend, "onnxruntime_has_cuda", lambda: True)
    assert backends.available_backends("cuda:0") == ["tensorrt", "onnxruntime", "torch"]
    monkeypatch.setattr(onnxruntime_backend, "onnxruntime_has_cuda", lambda: False)
    assert backends.available_backends("cuda:0") == ["tensorrt", "torch"]
    monkeypatch.setattr(backends, "_installed", lambda name: False)
    assert backends.available_backends("cuda:0") == ["torch"]


def test_auto_skips_a_backend_that_cannot_be_created(monkeypatch) -> None:
    monkeypatch.setattr(backends, "available_backends", lambda device: ["tensorrt", "torch"])
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert backends.create_backend("auto", tiny_srvgg(), "cpu", "fp32").name == "torch"


@needs_ort
def test_auto_falls_through_when_a_backend_fails_to_activate(monkeypatch, caplog) -> None:
    from certsr_rt.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    def fail(self: Any) -> None:
        raise BackendError("onnxruntime could not load model.onnx: bad graph")

    monkeypatch.setattr(backends, "available_backends", lambda device: ["onnxruntime", "torch"])
    monkeypatch.setattr(OnnxRuntimeBackend, "_activate_impl", fail)
    with caplog.at_level("WARNING", logger="certsr_rt"):
        chosen = backends.create_backend("auto", tiny_srvgg(), "cpu", "fp32")
    assert chosen.name == "torch" and chosen.is_active
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "onnxruntime could not start" in warning and "bad graph" in warning
    chosen.activate()  # the upscaler activates again: harmless
    # Nothing left to fall through to: one error with every reason.
    monkeypatch.setattr(backends, "available_backends", lambda device: ["onnxruntime"])
    with pytest.raises(InputError, match="no backend can run this model on cpu: onnxruntime: .*bad graph"):
        backends.create_backend("auto", tiny_srvgg(), "cpu", "fp32")


@needs_ort
def test_onnxruntime_session_errors_are_backend_errors(tmp_path: Path) -> None:
    from certsr_rt.export.onnx import export_onnx

    path = export_onnx(tiny_srvgg(), tmp_path / "m.onnx").path
    backend = backends.create_backend("onnxruntime", describe_exported(path), "cpu", "auto")
    path.write_bytes(path.read_bytes()[:2000])  # truncated after it was described
    with pytest.raises(BackendError, match="onnxruntime could not load .*m.onnx: "):
        backend.activate()


def test_onnxruntime_refuses_a_cuda_session_that_came_up_on_the_cpu(monkeypatch, tmp_path: Path) -> None:
    """onnxruntime creates a CPU session when the CUDA provider fails to load: that is a BackendError."""
    from certsr_rt.runtime.backends import onnxruntime_backend

    asked: list[Any] = []

    class Session:
        def __init__(self, path: str, sess_options: Any, providers: list[Any]) -> None:
            asked.append(providers)

        def get_providers(self) -> list[str]:
            return list(fake.session_providers)

        def get_inputs(self) -> list[Any]:
            return [types.SimpleNamespace(name="input")]

        def get_outputs(self) -> list[Any]:
            return [types.SimpleNamespace(name="output")]

    fake = types.SimpleNamespace(
        SessionOptions=lambda: types.SimpleNamespace(),
        InferenceSession=Session,
        get_available_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        session_providers=["CPUExecutionProvider"],
    )
    monkeypatch.setattr(onnxruntime_backend, "require", lambda *args: fake)
    backend = onnxruntime_backend.OnnxRuntimeBackend(tiny_srvgg(), "cuda")
    assert backend.device == torch.device("cuda:0")  # normalised: compares equal to its tensors' device
    backend.onnx_path = tmp_path / "m.onnx"  # skip the export; the fake session reads nothing
    message = r"could not start its CUDA provider on cuda:0 .*CPUExecutionProvider"
    with pytest.raises(BackendError, match=message):
        backend.activate()
    assert not backend.is_active and backend.session is None
    assert asked[0][0] == ("CUDAExecutionProvider", {"device_id": 0})
    fake.session_providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert backend.activate().is_active


@pytest.mark.parametrize(
    ("name", "device", "module", "extra"),
    [
        ("onnxruntime", "cpu", "onnxruntime", "onnx"),
        ("onnxruntime", "cuda", "onnxruntime", "gpu"),
        ("tensorrt", "cuda", "tensorrt", "trt"),
    ],
)
def test_missing_library_names_the_extra(
    monkeypatch, name: str, device: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(MissingDependencyError, match=rf"pip install 'certsr-rt\[{extra}\]'") as info:
        backends.create_backend(name, tiny_srvgg(), device, "auto")
    assert info.value.module == module and info.value.extra == extra


def test_no_extra_pulls_both_onnxruntime_packages() -> None:
    """onnxruntime and onnxruntime-gpu install the same module: an extra that pulls both is broken."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def expand(extra: str) -> set[str]:
        names = set()
        for text in extras[extra]:
            req = Requirement(text)
            names |= set().union(*map(expand, req.extras)) if req.name == "certsr-rt" else {req.name}
        return names

    for extra in extras:
        assert not {"onnxruntime", "onnxruntime-gpu"} <= expand(extra), extra
    assert "onnxruntime" in expand("dev") and "onnxruntime-gpu" not in expand("dev")
    assert {"onnxruntime-gpu", "onnx", "onnxscript", "cuda-python"} <= expand("gpu")
    assert {"tensorrt", "onnxruntime-gpu", "onnx"} <= expand("trt")


# ----------------------------------------------------------------------------- TensorRT, with a fake module


def make_fake_trt(version: str = "10.9.0.34", parse_ok: bool = True, build_ok: bool = True):
    """A stand-in for the ``tensorrt`` module that records the calls the build and load make."""
    calls: list[tuple] = []

    class DataType:
        FLOAT, HALF = "DataType.FLOAT", "DataType.HALF"

    class Logger:
        WARNING = "WARNING"

        def __init__(self, level: str) -> None:
            self.level = level

    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 1  # the real enum value; int() of it is what the flag mask uses

    class MemoryPoolType:
        WORKSPACE = "WORKSPACE"

    class TensorIOMode:
        INPUT, OUTPUT = "INPUT", "OUTPUT"

    class Network:
        num_inputs = num_outputs = 1

        def get_input(self, i: int) -> Any:
            return types.SimpleNamespace(name="input")

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = blob

        def serialize(self) -> bytes:
            return self.blob + b"+tuned"

    class Config:
        builder_optimization_level = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            calls.append(("workspace", pool, size))

        def add_optimization_profile(self, profile: Any) -> None:
            calls.append(("add_profile",))

        def create_timing_cache(self, blob: bytes) -> TimingCache:
            calls.append(("create_timing_cache", bytes(blob)))
            self.cache = TimingCache(bytes(blob))
            return self.cache

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            calls.append(("set_timing_cache", ignore_mismatch))
            return True

        def get_timing_cache(self) -> TimingCache:
            return self.cache

    class Profile:
        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            calls.append(("set_shape", name, lo, opt, hi))

    class Builder:
        def __init__(self, logger: Logger) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            calls.append(("build", config.builder_optimization_level))
            return b"SERIALIZED-ENGINE" if build_ok else None

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.num_errors = 0 if parse_ok else 1

        def parse_from_file(self, path: str) -> bool:
            calls.append(("parse", path))
            return parse_ok

        def get_error(self, i: int) -> str:
            return "In node 3 (Foo): unsupported operator"

    class Context:
        pass

    class Engine:
        """Two I/O tensors, ``input`` and ``output``, float32 unless ``module.io_dtypes`` says otherwise."""

        name = "engine"
        num_io_tensors = 2

        def __init__(self, data: bytes) -> None:
            self.data = data

        def get_tensor_name(self, i: int) -> str:
            return ("input", "output")[i]

        def get_tensor_mode(self, name: str) -> str:
            return TensorIOMode.INPUT if name == "input" else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> str:
            return module.io_dtypes.get(name, DataType.FLOAT)

        def create_execution_context(self) -> Context:
            calls.append(("context", self.data))
            return Context()

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Any:
            calls.append(("deserialize", data))
            return Engine(data)

    module = types.ModuleType("tensorrt")
    module.__version__ = version
    module.io_dtypes = {}  # test knob: tensor name -> DataType the fake engine reports
    for obj in (
        DataType,
        Logger,
        NetworkDefinitionCreationFlag,
        MemoryPoolType,
        TensorIOMode,
        Builder,
        OnnxParser,
        Runtime,
    ):
        setattr(module, obj.__name__, obj)
    return module, calls


H100 = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0))
A100 = GpuInfo("NVIDIA A100-SXM4-40GB", (8, 0))
MODEL_INFO = {
    "name": "tiny",
    "architecture": "SRVGGNetCompact",
    "scale": 4,
    "in_channels": 3,
    "out_channels": 3,
    "default_sigma": 0.03,
}


def _key(**changes: Any) -> EngineKey:
    key = EngineKey(
        onnx_sha256="ab" * 32,
        precision="fp16",
        profile=ShapeProfile(),
        tensorrt_version="10.9.0.34",
        gpu=H100,
    )
    return dataclasses.replace(key, **changes)


def test_parse_size() -> None:
    assert trt_export.parse_size("256x192") == (256, 192)
    assert trt_export.parse_size(" 64X64 ") == (64, 64)
    for bad in ("256", "0x5", "axb", "-1x3", "12x"):
        with pytest.raises(InputError, match="Expected a size like 256x256"):
            trt_export.parse_size(bad)


def test_shape_profile_checks_and_refuses() -> None:
    profile = ShapeProfile(max_batch=21, max_height=224, max_width=200)
    assert profile.min_shape == (1, 3, 1, 1) and profile.max_shape == profile.opt_shape == (21, 3, 224, 200)
    profile.check((21, 3, 224, 200))
    profile.check((1, 3, 1, 1))
    for bad in [
        (22, 3, 10, 10),
        (1, 3, 225, 10),
        (1, 3, 10, 201),
        (1, 4, 10, 10),
        (0, 3, 10, 10),
        (3, 10, 10),
    ]:
        with pytest.raises(BackendError, match="outside the engine's shape range"):
            profile.check(bad)
    assert profile.covers(ShapeProfile(max_batch=8, max_height=192, max_width=192))
    assert not profile.covers(ShapeProfile(max_batch=21, max_height=256, max_width=192))
    with pytest.raises(InputError, match="max_batch >= 1"):
        ShapeProfile(max_batch=0)


def test_engine_key_digest_covers_every_field() -> None:
    base = _key()
    assert base.digest() == _key().digest()
    variants = [
        _key(onnx_sha256="cd" * 32),
        _key(precision="fp32"),
        _key(profile=ShapeProfile(max_batch=20)),
        _key(profile=ShapeProfile(max_height=255)),
        _key(profile=ShapeProfile(max_width=255)),
        _key(tensorrt_version="11.0.0"),
        _key(gpu=A100),
        _key(gpu=GpuInfo(H100.name, (9, 1))),
        _key(optimization_level=5),
        _key(workspace_bytes=1 << 30),
        _key(format_version="2"),
    ]
    digests = {v.digest() for v in variants}
    assert len(digests) == len(variants) and base.digest() not in digests
    assert EngineKey.from_json(json.loads(json.dumps(base.to_json()))) == base


def test_engine_key_mismatch_reasons_say_what_differs() -> None:
    wanted = _key()
    assert wanted.mismatches(wanted) == []
    assert _key(profile=ShapeProfile(max_batch=32, max_height=512, max_width=512)).mismatches(wanted) == []
    (reason,) = _key(gpu=A100).mismatches(wanted)
    assert reason == (
        "it was built for GPU NVIDIA A100-SXM4-40GB (sm_80), this is NVIDIA H100 80GB HBM3 (sm_90)"
    )
    (reason,) = _key(tensorrt_version="10.3.0").mismatches(wanted)
    assert "TensorRT 10.3.0, this is TensorRT 10.9.0.34" in reason
    (reason,) = _key(profile=ShapeProfile(max_height=128)).mismatches(wanted)
    assert "HxW <= 128x256, needed" in reason and "HxW <= 256x256" in reason


def test_engine_cache_store_lookup_and_tampered_record(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "trt")
    key = _key()
    assert cache.lookup(key) is None
    path = cache.store(key, b"ENGINE", MODEL_INFO)
    assert path.read_bytes() == b"ENGINE" and cache.lookup(key) == path
    assert trt_export.read_engine_record(path) == (key, MODEL_INFO)
    record = json.loads(path.with_suffix(".json").read_text())
    record["key"]["gpu"]["name"] = "NVIDIA GeForce RTX 3060"
    path.with_suffix(".json").write_text(json.dumps(record))
    with pytest.raises(BackendError, match="refusing cached engine .*built for GPU NVIDIA GeForce RTX 3060"):
        cache.lookup(key)
    assert cache.timing_cache_path(key).name == "timing-nvidia-h100-80gb-hbm3-sm90-trt10.9.0.34.cache"


@pytest.mark.parametrize(
    ("recorded", "message"),
    [
        (_key(gpu=A100), "built for GPU NVIDIA A100"),
        (_key(tensorrt_version="10.0.1"), "TensorRT 10.0.1"),
        (_key(profile=ShapeProfile(max_batch=8)), "shape range is batch <= 8"),
    ],
)
def test_deserialize_refuses_foreign_engines_without_loading_them(
    tmp_path: Path, recorded: EngineKey, message: str
) -> None:
    trt, calls = make_fake_trt()
    path = EngineCache(tmp_path).store(recorded, b"FOREIGN", MODEL_INFO)
    with pytest.raises(BackendError, match=f"refusing engine .*{message}.*rebuild it with certsr-rt export"):
        trt_export.deserialize_engine(trt, path, _key(onnx_sha256=""))
    assert not [c for c in calls if c[0] == "deserialize"]


def test_deserialize_refuses_an_engine_without_record_and_loads_a_matching_one(tmp_path: Path) -> None:
    trt, calls = make_fake_trt()
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"X")
    with pytest.raises(BackendError, match="expected its build record bare.json beside it, found none"):
        trt_export.deserialize_engine(trt, bare, _key())
    path = EngineCache(tmp_path).store(_key(), b"GOOD", MODEL_INFO)
    engine = trt_export.deserialize_engine(trt, path, _key(onnx_sha256=""))
    assert engine.name == "engine" and calls == [("deserialize", b"GOOD")]


def test_build_engine_is_strongly_typed_with_profile_and_timing_cache(tmp_path: Path) -> None:
    trt, calls = make_fake_trt()
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"onnx")
    timing = tmp_path / "timing.cache"
    timing.write_bytes(b"old")
    key = _key(profile=ShapeProfile(max_batch=21, max_height=200, max_width=100), workspace_bytes=1 << 30)
    engine = trt_export.build_engine(trt, onnx_file, key, timing_cache=timing)
    assert engine == b"SERIALIZED-ENGINE"
    assert ("create_network", 1 << 1) in calls
    assert ("parse", str(onnx_file)) in calls
    assert ("set_shape", "input", (1, 3, 1, 1), (21, 3, 200, 100), (21, 3, 200, 100)) in calls
    assert ("workspace", "WORKSPACE", 1 << 30) in calls
    assert ("create_timing_cache", b"old") in calls and ("set_timing_cache", False) in calls
    assert ("build", 3) in calls
    assert timing.read_bytes() == b"old+tuned"


def test_build_engine_failures_are_backend_errors(tmp_path: Path) -> None:
    trt, _ = make_fake_trt(parse_ok=False)
    with pytest.raises(BackendError, match="could not parse .*unsupported operator"):
        trt_export.build_engine(trt, tmp_path / "m.onnx", _key())
    trt, _ = make_fake_trt(build_ok=False)
    with pytest.raises(BackendError, match="failed to build an engine"):
        trt_export.build_engine(trt, tmp_path / "m.onnx", _key())


def test_prepare_engine_builds_once_per_key(tmp_path: Path, caplog) -> None:
    trt, calls = make_fake_trt()
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"onnx graph")
    cache = EngineCache(tmp_path / "trt")

    def prepare(profile: ShapeProfile, gpu: GpuInfo = H100) -> tuple[Path, EngineKey]:
        return trt_export.prepare_engine(
            trt, onnx_file, precision="fp16", profile=profile, gpu=gpu, cache=cache, model=MODEL_INFO
        )

    with caplog.at_level("INFO", logger="certsr_rt"):
        path, key = prepare(ShapeProfile())
        assert path.is_file() and key.tensorrt_version == "10.9.0.34" and key.gpu == H100
        builds = lambda: sum(c[0] == "build" for c in calls)  # noqa: E731
        assert builds() == 1
        assert prepare(ShapeProfile()) == (path, key) and builds() == 1
    (note,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("building a TensorRT")]
    assert "NVIDIA H100" in note
    assert prepare(ShapeProfile(max_batch=8)) == (path, key) and builds() == 1  # covered: reused
    other, _ = prepare(ShapeProfile(max_batch=32))
    assert other != path and builds() == 2
    prepare(ShapeProfile(), gpu=A100)
    assert builds() == 3
    assert cache.timing_cache_path(key).is_file()


def test_tensorrt_backend_argument_checks_without_a_gpu(tmp_path: Path) -> None:
    from certsr_rt.runtime.backends.tensorrt_backend import TensorRTBackend

    trt, _ = make_fake_trt()
    with pytest.raises(InputError, match="Expected a CUDA device for TensorRT, but got cpu"):
        TensorRTBackend(tiny_srvgg(), "cpu", trt_module=trt)
    with pytest.raises(InputError, match="fp32, fp16 or auto for TensorRT, but got 'bf16'"):
        TensorRTBackend(tiny_srvgg(), "cuda", "bf16", trt_module=trt)
    backend = TensorRTBackend(tiny_srvgg(), "cuda", trt_module=trt, profile=ShapeProfile(max_batch=7))
    assert (backend.precision, backend.max_batch, backend.scale) == ("fp16", 7, 4)
    no_half = make_model(tiny_srvgg().module, "m", "SRVGGNetCompact", supports_half=False)
    assert TensorRTBackend(no_half, "cuda", trt_module=trt).precision == "fp32"
    with pytest.raises(InputError, match="shape profile with 3 channels, but got 1"):
        TensorRTBackend(tiny_srvgg(), "cuda", trt_module=trt, profile=ShapeProfile(channels=1))


def test_tensorrt_backend_from_an_engine_file_reads_its_record(tmp_path: Path) -> None:
    from certsr_rt.runtime.backends.tensorrt_backend import TensorRTBackend

    trt, calls = make_fake_trt()
    info = {"name": "tiny", "scale": 2, "in_channels": 3, "out_channels": 3}
    path = EngineCache(tmp_path).store(_key(precision="fp32"), b"E", info)
    backend = TensorRTBackend(describe_exported(path), "cuda", trt_module=trt)
    assert (backend.scale, backend.precision, backend.model_name) == (2, "fp32", "tiny")
    assert backend.profile == ShapeProfile() and backend.max_batch == 21
    small_key = _key(profile=ShapeProfile(max_batch=4, max_height=64))
    small = EngineCache(tmp_path / "small").store(small_key, b"E", info)
    assert TensorRTBackend(describe_exported(small), "cuda", trt_module=trt).max_batch == 4
    with pytest.raises(InputError, match="is an fp32 build, but precision fp16 was asked"):
        TensorRTBackend(describe_exported(path), "cuda", "fp16", trt_module=trt)
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"E")
    with pytest.raises(InputError, match="build record bare.json .* so it is never run"):
        describe_exported(bare)  # what comes before any backend: an engine without its record
    upper = tmp_path / "COPY.ENGINE"
    upper.write_bytes(b"E")
    upper.with_suffix(".json").write_text(path.with_suffix(".json").read_text())
    assert TensorRTBackend(describe_exported(str(upper)), "cuda", trt_module=trt).engine_path == upper
    for given in (path, str(path)):  # a bare path is refused: the file is described once, by the caller
        with pytest.raises(InputError, match="Expected an SRModel or an ExportedModel, but got the path"):
            TensorRTBackend(given, "cuda", trt_module=trt)  # type: ignore[arg-type]
    assert calls == []  # nothing was deserialized


def test_engine_cache_lookup_takes_the_smallest_covering_engine(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "trt")
    wanted = _key(profile=ShapeProfile())  # batch 21, 256x256: the backend's default
    big = cache.store(_key(profile=ShapeProfile(max_height=512, max_width=512)), b"BIG", MODEL_INFO)
    assert cache.lookup(wanted) == big
    medium_profile = ShapeProfile(max_batch=32, max_height=320, max_width=320)
    medium = cache.store(_key(profile=medium_profile), b"M", MODEL_INFO)
    assert cache.lookup(wanted) == medium
    # Larger in one direction but smaller in another: does not cover.
    cache.store(_key(profile=ShapeProfile(max_batch=8, max_height=1024, max_width=1024)), b"N", MODEL_INFO)
    assert cache.lookup(wanted) == medium
    # Everything else must be equal: another GPU, TensorRT, ONNX, precision, level or workspace never serves.
    other = tmp_path / "other"
    for changes in (
        {"gpu": A100},
        {"tensorrt_version": "10.3.0"},
        {"onnx_sha256": "cd" * 32},
        {"precision": "fp32"},
        {"optimization_level": 5},
        {"workspace_bytes": 1 << 30},
        {"format_version": "0"},
    ):
        profile = ShapeProfile(max_height=512, max_width=512)
        EngineCache(other).store(_key(profile=profile, **changes), b"X", MODEL_INFO)
    (other / "junk.engine").write_bytes(b"no record")
    (other / "broken.engine").write_bytes(b"X")
    (other / "broken.json").write_text("{not json")
    assert EngineCache(other).lookup(wanted) is None
    # The exact key wins when it is present.
    exact = cache.store(wanted, b"EXACT", MODEL_INFO)
    assert cache.lookup(wanted) == exact
    assert EngineCache(tmp_path / "missing").lookup(wanted) is None


def test_prepare_engine_reuses_an_engine_exported_with_a_larger_size(tmp_path: Path) -> None:
    trt, calls = make_fake_trt()
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"onnx graph")
    cache = EngineCache(tmp_path / "trt")

    def prepare(profile: ShapeProfile) -> tuple[Path, EngineKey]:
        return trt_export.prepare_engine(
            trt, onnx_file, precision="fp16", profile=profile, gpu=H100, cache=cache, model=MODEL_INFO
        )

    large = ShapeProfile(max_batch=21, max_height=512, max_width=512)
    path, key = prepare(large)  # certsr-rt export --engine --max-size 512x512
    assert key.profile == large
    again, key2 = prepare(ShapeProfile())  # the TensorRT backend's default profile
    assert again == path and key2.profile == large
    assert sum(c[0] == "build" for c in calls) == 1


# ----------------------------------------------------------------------------- half-precision fallback


class _HalfThenFull(backends.Backend):
    """A backend whose 'half precision' returns NaN on chosen batches; fp32 is the identity x 2 upscale."""

    name = "fake"

    def __init__(self, precision: str = "fp16", can_fall_back: bool = True) -> None:
        super().__init__(device=torch.device("cpu"), scale=2, in_channels=3, precision=precision)
        self.can_fall_back = can_fall_back
        self.switches = 0
        self.runs: list[str] = []

    def _activate_impl(self) -> None:
        pass

    def _infer_impl(self, x: torch.Tensor) -> torch.Tensor:
        self.runs.append(self.precision)
        out = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        if self.precision != "fp32" and x.abs().max() > 100:  # "overflows" in half precision
            out[0, 0, 0, 0] = float("inf")
        return out

    def _fall_back_to_fp32(self) -> None:
        if not self.can_fall_back:
            super()._fall_back_to_fp32()
        self.switches += 1


def test_half_precision_non_finite_batch_is_recomputed_in_fp32_once(caplog) -> None:
    backend = _HalfThenFull()
    small = torch.rand(2, 3, 4, 4)
    assert torch.isfinite(backend.infer(small)).all() and backend.runs == ["fp16"]
    assert not backend.fell_back_to_fp32
    big = small * 1000
    with caplog.at_level("WARNING", logger="certsr_rt"):
        out = backend.infer(big)
        backend.infer(big)
    assert torch.isfinite(out).all() and torch.equal(out, big.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert backend.runs == ["fp16", "fp16", "fp32", "fp32"]
    assert backend.switches == 1 and backend.fell_back_to_fp32 and backend.precision == "fp32"
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "produced NaN/inf in fp16; recomputing in fp32" in warnings[0].getMessage()


def test_fp32_output_is_not_second_guessed_and_a_backend_that_cannot_switch_says_so() -> None:
    fp32 = _HalfThenFull(precision="fp32")
    x = torch.full((1, 3, 2, 2), float("nan"))
    assert torch.isnan(fp32.infer(x)).all() and fp32.runs == ["fp32"] and fp32.switches == 0
    stuck = _HalfThenFull(can_fall_back=False)
    with pytest.raises(BackendError, match="fake backend produced NaN/inf in fp16 and cannot switch to fp32"):
        stuck.infer(torch.rand(1, 3, 2, 2) * 1000)
    assert not stuck.fell_back_to_fp32 and stuck.precision == "fp16"


def test_torch_backend_falls_back_through_the_shared_mechanism(caplog) -> None:
    model = tiny_srvgg()
    backend = TorchBackend(model, "cpu", "fp32")
    backend.precision = "bf16"  # reduced precision runs on CUDA only; the mechanism is the same on CPU
    backend.activate()
    assert backend._private is not None

    class Overflow(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) * float("inf")  # what an fp16 overflow does to an image

    backend._private = dataclasses.replace(backend._private, module=Overflow(backend._private.module))
    x = torch.rand(2, 3, 5, 6)
    with caplog.at_level("WARNING", logger="certsr_rt"):
        got = backend.infer(x)
    with torch.inference_mode():
        expected = model.module(x)
    assert torch.equal(got, expected)
    assert backend.fell_back_to_fp32 and backend.precision == "fp32" and backend._private is None
    assert sum(r.levelname == "WARNING" for r in caplog.records) == 1


def test_torch_backend_channels_last_leaves_the_shared_model_as_it_is() -> None:
    model = tiny_srvgg()
    backend = TorchBackend(model, "cpu", "fp32")
    backend.channels_last = True  # what CUDA turns on; the memory format logic is the same on CPU
    backend.activate()
    weights = [p for p in model.module.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous() for p in weights)  # the shared SRModel: untouched
    private = [p for p in backend._private.module.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in private)
    x = torch.rand(2, 3, 5, 6)
    got = backend.infer(x)
    with torch.inference_mode():
        expected = model.module(x)
    assert got.is_contiguous() and got.dtype == torch.float32
    assert (got - expected).abs().max().item() <= 1e-5
    backend.precision = "bf16"
    backend._fall_back_to_fp32()  # an fp32 copy, still channels_last; the shared model still untouched
    assert backend._private is not None and all(p.is_contiguous() for p in weights)


class _InfSession:
    def __init__(self, real: Any) -> None:
        self.real = real

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = self.real.run(outputs, feeds)[0]
        return [np.full_like(out, np.inf)]


@needs_ort
def test_onnxruntime_backend_from_a_model_falls_back_to_an_fp32_session(cache: Path) -> None:
    from certsr_rt.export.onnx import onnx_cache_path
    from certsr_rt.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    model = tiny_srvgg()
    backend = OnnxRuntimeBackend(model, "cpu", threads=1).activate()
    backend.precision = "fp16"  # onnxruntime fp16 needs CUDA; pretend this session is the fp16 one
    backend.session = _InfSession(backend.session)
    x = torch.rand(2, 3, 7, 5)
    got = backend.infer(x)
    with torch.inference_mode():
        assert (got - model.module(x)).abs().max().item() <= 1e-4
    assert backend.fell_back_to_fp32 and backend.onnx_path == onnx_cache_path(model, fp16=False)
    assert not isinstance(backend.session, _InfSession)


@needs_ort
def test_onnxruntime_backend_from_a_file_cannot_fall_back(tmp_path: Path) -> None:
    from certsr_rt.export.onnx import export_onnx

    path = export_onnx(tiny_srvgg(), tmp_path / "m.onnx").path
    backend = backends.create_backend("onnxruntime", describe_exported(path), "cpu", "auto").activate()
    backend.precision = "fp16"
    backend.session = _InfSession(backend.session)
    with pytest.raises(BackendError, match=r"m.onnx is an fp16 export .* export the model without --fp16"):
        backend.infer(torch.rand(1, 3, 4, 4))
    assert not backend.fell_back_to_fp32


class _FakeStream:
    def __init__(self, device: Any = None) -> None:
        self.device = device


def _trt_backend_on_a_pretend_gpu(monkeypatch, model: Any, device: str = "cuda:0", **kwargs: Any):
    """A TensorRTBackend activated with the fake tensorrt, a pretend H100, a stand-in stream and a device
    guard that records ``("enter", device)`` / ``("exit",)`` in the fake's calls."""
    from certsr_rt.runtime.backends.tensorrt_backend import TensorRTBackend

    trt, calls = make_fake_trt()

    class DeviceGuard:
        def __init__(self, device: Any) -> None:
            self.device = device

        def __enter__(self) -> None:
            calls.append(("enter", str(self.device)))

        def __exit__(self, *exc: object) -> None:
            calls.append(("exit",))

    monkeypatch.setattr(GpuInfo, "of", classmethod(lambda cls, device: H100))
    monkeypatch.setattr(torch.cuda, "Stream", _FakeStream)
    monkeypatch.setattr(torch.cuda, "device", DeviceGuard)
    backend = TensorRTBackend(model, device, trt_module=trt, **kwargs)
    return backend, trt, calls


@needs_ort
def test_tensorrt_builds_loads_and_creates_contexts_on_its_own_device(monkeypatch, tmp_path: Path) -> None:
    """TensorRT works on the current device: every build, deserialisation and context is under a guard."""
    model = tiny_srvgg()
    backend, _, calls = _trt_backend_on_a_pretend_gpu(monkeypatch, model, device="cuda:1", cache_dir=tmp_path)
    assert backend.device == torch.device("cuda:1")
    backend.activate()
    backend._fall_back_to_fp32()
    names = [c[0] for c in calls]
    assert names.count("enter") == 2 and all(c == ("enter", "cuda:1") for c in calls if c[0] == "enter")
    depth = 0
    for name in names:
        depth += {"enter": 1, "exit": -1}.get(name, 0)
        if name in ("build", "deserialize", "context"):
            assert depth == 1, f"{name} ran outside the device guard: {names}"
    assert depth == 0 and {"build", "deserialize", "context"} <= set(names)


@needs_ort
def test_tensorrt_backend_from_a_model_falls_back_to_an_fp32_engine(monkeypatch, cache: Path) -> None:
    from certsr_rt.export.onnx import onnx_cache_path

    model = tiny_srvgg()
    backend, _, calls = _trt_backend_on_a_pretend_gpu(monkeypatch, model)
    backend.activate()
    assert backend.precision == "fp16" and backend.onnx_path == onnx_cache_path(model, fp16=True)
    half_engine = backend.engine_path
    key, info = trt_export.read_engine_record(half_engine)
    assert key.precision == "fp16" and key.gpu == H100 and key.profile == ShapeProfile()
    assert info == {**MODEL_INFO, "name": "tiny-srvgg"}  # architecture and default_sigma recorded
    backend._fall_back_to_fp32()  # what infer() calls when an fp16 batch gives NaN/inf
    assert backend.onnx_path == onnx_cache_path(model, fp16=False)
    assert backend.engine_path != half_engine
    assert trt_export.read_engine_record(backend.engine_path)[0].precision == "fp32"
    assert [c[0] for c in calls].count("build") == 2 and backend.context is not None


def test_tensorrt_backend_from_a_file_cannot_fall_back(monkeypatch, tmp_path: Path) -> None:
    path = EngineCache(tmp_path).store(_key(), b"E", MODEL_INFO)
    backend, _, _ = _trt_backend_on_a_pretend_gpu(monkeypatch, describe_exported(path))
    backend.activate()
    with pytest.raises(BackendError, match=r"\.engine is an fp16 build .* export the model without --fp16"):
        backend._fall_back_to_fp32()


def _count_reads(monkeypatch, module: types.ModuleType, function: str) -> list[Path]:
    """Replace ``module.function(path)`` by one that records each path it reads, and return that list."""
    reads: list[Path] = []
    real = getattr(module, function)

    def counting(path: str | Path) -> Any:
        reads.append(Path(path))
        return real(path)

    monkeypatch.setattr(module, function, counting)
    return reads


def test_an_engine_file_is_described_once_and_its_record_read_once(monkeypatch, tmp_path: Path) -> None:
    """describe_exported reads the build record; neither the backend nor deserialize_engine read it again."""
    path = EngineCache(tmp_path).store(_key(profile=ShapeProfile(max_batch=6)), b"E", MODEL_INFO)
    reads = _count_reads(monkeypatch, trt_export, "read_engine_record")
    exported = describe_exported(path)
    assert exported.engine_key == _key(profile=ShapeProfile(max_batch=6)) and reads == [path]
    backend, _, calls = _trt_backend_on_a_pretend_gpu(monkeypatch, exported)
    assert backend.max_batch == 6  # the recorded shape range, from the description
    backend.activate()
    assert ("deserialize", b"E") in calls and reads == [path]
    # The described record is what is checked: an engine built for another GPU is never deserialized.
    foreign = describe_exported(EngineCache(tmp_path / "a100").store(_key(gpu=A100), b"F", MODEL_INFO))
    backend, _, calls = _trt_backend_on_a_pretend_gpu(monkeypatch, foreign)
    with pytest.raises(BackendError, match="refusing engine .*built for GPU NVIDIA A100"):
        backend.activate()
    assert not [c for c in calls if c[0] == "deserialize"]


@needs_ort
def test_the_upscaler_describes_an_exported_file_once(monkeypatch, tmp_path: Path) -> None:
    from certsr_rt.export import onnx as onnx_export
    from certsr_rt.runtime.upscaler import Upscaler
    from certsr_rt.smoothing.config import SmoothingConfig

    path = onnx_export.export_onnx(tiny_srvgg(), tmp_path / "m.onnx").path
    reads = _count_reads(monkeypatch, onnx_export, "read_metadata")
    with Upscaler(path, SmoothingConfig(sigma=0.05, samples=3, seed=0), device="cpu") as up:
        assert up.backend.name == "onnxruntime" and up.backend.onnx_path == path
        assert up(np.zeros((8, 8, 3), np.uint8)).shape == (32, 32, 3)
    assert reads == [path]


def test_tensorrt_backend_refuses_an_engine_without_float32_io(monkeypatch, tmp_path: Path) -> None:
    path = EngineCache(tmp_path).store(_key(), b"E", MODEL_INFO)
    backend, trt, _ = _trt_backend_on_a_pretend_gpu(monkeypatch, describe_exported(path))
    trt.io_dtypes = {"output": trt.DataType.HALF}
    message = "float32 input and output, but its tensor 'output' is DataType.HALF"
    with pytest.raises(BackendError, match=message):
        backend.activate()
    assert not backend.is_active
    trt.io_dtypes = {}
    assert backend.activate().is_active


def test_tensorrt_buffers_are_256_byte_aligned() -> None:
    from certsr_rt.runtime.backends.tensorrt_backend import TENSORRT_ALIGNMENT, aligned

    batch = torch.rand(21, 3, 5, 7)
    first = batch[:8]
    if first.data_ptr() % TENSORRT_ALIGNMENT == 0:
        assert aligned(first) is first
    chunk = batch[1:9]  # a contiguous view 420 bytes in: not aligned
    assert chunk.is_contiguous() and chunk.data_ptr() % TENSORRT_ALIGNMENT != 0
    copy = aligned(chunk)
    assert copy.data_ptr() % TENSORRT_ALIGNMENT == 0
    assert torch.equal(copy, chunk) and copy.shape == chunk.shape
    flat = torch.rand(1000)[3:]
    assert aligned(flat).data_ptr() % TENSORRT_ALIGNMENT == 0 and torch.equal(aligned(flat), flat)
