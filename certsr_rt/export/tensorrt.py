"""TensorRT engine build and engine cache (TensorRT 10 and 11).

UNTESTED HERE: TensorRT cannot be installed on any machine of this project, so the calls into ``tensorrt``
in :func:`build_engine` and :func:`deserialize_engine` are written to the documented TensorRT 10 Python
API and kept thin; they have never run. Everything around them (shape profiles, cache keys, the engine
cache, the refusal of engines built for another GPU, TensorRT version or shape range) is tested with a
fake ``tensorrt`` module.

Decisions (``DESIGN.md``):

* Networks are **strongly typed** (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``), the only kind
  TensorRT 11 builds. Precision therefore comes from the ONNX file: an fp16 export
  (``certsr-rt export --fp16``) gives an fp16 engine; there are no builder precision flags.
* One optimisation profile covers batch 1..``max_batch`` and height/width 1..``max_size``.
* A timing cache per (GPU, TensorRT version) makes rebuilds fast.
* Engines are cached under a key of everything that affects the build (:class:`EngineKey`); a JSON file
  beside each engine records that key, and an engine whose key does not match the running machine or
  the requested shape range is refused with a message that says what differs, never deserialized.
  A cached engine built for a larger shape range (and otherwise the same key) serves a smaller request,
  so ``certsr-rt export --engine --max-size 512x512`` is found by a backend that needs 256x256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from certsr_rt.errors import BackendError, InputError
from certsr_rt.io.atomic import write_atomic

__all__ = [
    "ENGINE_FORMAT_VERSION",
    "EngineCache",
    "EngineKey",
    "GpuInfo",
    "ShapeProfile",
    "build_engine",
    "deserialize_engine",
    "model_record",
    "parse_size",
    "prepare_engine",
    "read_engine_record",
]

log = logging.getLogger(__name__)

ENGINE_FORMAT_VERSION = "1"
"""Bumped when the way engines are built changes (invalidates cached engines)."""


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"HxW"`` (e.g. ``"256x256"``) into ``(height, width)``.

    Raises:
        InputError: the text is not two positive integers joined by ``x``.
    """
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise InputError(f"Expected a size like 256x256 (height x width, positive), but got {text!r}")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class ShapeProfile:
    """The range of input shapes an engine accepts (one TensorRT optimisation profile).

    Minimum shapes are 1; the optimum is the maximum (the upscaler sends full chunks of full tiles).
    """

    max_batch: int = 21
    """Largest batch (the number of noisy samples per chunk)."""

    max_height: int = 256
    """Largest LR height (the upscaler's tile plus its overlap must fit)."""

    max_width: int = 256
    """Largest LR width."""

    channels: int = 3
    """Input channels (fixed)."""

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_height", "max_width", "channels"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"Expected {name} >= 1 in the shape profile, but got {getattr(self, name)}")

    @property
    def min_shape(self) -> tuple[int, int, int, int]:
        """Smallest accepted input shape."""
        return (1, self.channels, 1, 1)

    @property
    def opt_shape(self) -> tuple[int, int, int, int]:
        """Shape TensorRT tunes its kernels for."""
        return self.max_shape

    @property
    def max_shape(self) -> tuple[int, int, int, int]:
        """Largest accepted input shape."""
        return (self.max_batch, self.channels, self.max_height, self.max_width)

    def describe(self) -> str:
        """Human-readable range, e.g. ``batch <= 21, 3 channels, HxW <= 256x256``."""
        return (
            f"batch <= {self.max_batch}, {self.channels} channels, HxW <= {self.max_height}x{self.max_width}"
        )

    def covers(self, other: ShapeProfile) -> bool:
        """Whether every shape ``other`` accepts is accepted here."""
        return (
            self.channels == other.channels
            and self.max_batch >= other.max_batch
            and self.max_height >= other.max_height
            and self.max_width >= other.max_width
        )

    def check(self, shape: tuple[int, ...]) -> None:
        """Raise :class:`BackendError` unless ``shape`` (``N x C x H x W``) lies in the profile."""
        ok = (
            len(shape) == 4
            and 1 <= shape[0] <= self.max_batch
            and shape[1] == self.channels
            and 1 <= shape[2] <= self.max_height
            and 1 <= shape[3] <= self.max_width
        )
        if not ok:
            raise BackendError(
                f"input shape {'x'.join(map(str, shape))} is outside the engine's shape range "
                f"({self.describe()}); use smaller tiles/chunks or rebuild the engine with larger "
                "--max-batch/--max-size"
            )


@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built for.

    Attributes:
        name: device name as CUDA reports it.
        compute_capability: ``(major, minor)``.
    """

    name: str
    compute_capability: tuple[int, int]

    @classmethod
    def of(cls, device: Any) -> GpuInfo:
        """The GPU behind a torch CUDA device."""
        import torch

        props = torch.cuda.get_device_properties(device)
        return cls(name=str(props.name), compute_capability=(int(props.major), int(props.minor)))

    def describe(self) -> str:
        """E.g. ``NVIDIA H100 80GB HBM3 (sm_90)``."""
        return f"{self.name} (sm_{self.compute_capability[0]}{self.compute_capability[1]})"


@dataclass(frozen=True)
class EngineKey:
    """Everything that affects an engine build; its :meth:`digest` names the cached engine.

    Attributes:
        onnx_sha256: SHA-256 of the ONNX file (precision is part of the graph).
        precision: ``fp32`` or ``fp16``, from the ONNX metadata (recorded for messages).
        profile: the optimisation profile.
        tensorrt_version: ``tensorrt.__version__`` at build time.
        gpu: the GPU.
        optimization_level: ``IBuilderConfig.builder_optimization_level``.
        workspace_bytes: workspace memory-pool limit, ``None`` for TensorRT's default.
        format_version: :data:`ENGINE_FORMAT_VERSION`.
    """

    onnx_sha256: str
    precision: str
    profile: ShapeProfile
    tensorrt_version: str
    gpu: GpuInfo
    optimization_level: int = 3
    workspace_bytes: int | None = None
    format_version: str = ENGINE_FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (stored beside each engine)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineKey:
        """Inverse of :meth:`to_json`."""
        data = dict(data)
        data["profile"] = ShapeProfile(**data["profile"])
        gpu = data["gpu"]
        data["gpu"] = GpuInfo(name=gpu["name"], compute_capability=tuple(gpu["compute_capability"]))
        return cls(**data)

    def digest(self) -> str:
        """Stable hash of every field (the cache file name)."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:32]

    def mismatches(self, wanted: EngineKey) -> list[str]:
        """Reasons why an engine built with this key cannot serve ``wanted``; empty when it can.

        The shape range may be larger than wanted; every other field must be equal.
        """
        reasons = []
        if self.gpu != wanted.gpu:
            reasons.append(f"it was built for GPU {self.gpu.describe()}, this is {wanted.gpu.describe()}")
        if self.tensorrt_version != wanted.tensorrt_version:
            reasons.append(
                f"it was built with TensorRT {self.tensorrt_version}, "
                f"this is TensorRT {wanted.tensorrt_version}"
            )
        if not self.profile.covers(wanted.profile):
            reasons.append(
                f"its shape range is {self.profile.describe()}, needed {wanted.profile.describe()}"
            )
        if self.onnx_sha256 != wanted.onnx_sha256:
            reasons.append(
                f"it was built from ONNX {self.onnx_sha256[:12]}, expected {wanted.onnx_sha256[:12]} "
                "(other weights or precision)"
            )
        if self.format_version != wanted.format_version:
            reasons.append(f"it has engine format {self.format_version}, expected {wanted.format_version}")
        return reasons


def _can_serve(recorded: EngineKey, wanted: EngineKey) -> bool:
    """Whether a cached engine built with ``recorded`` may be used where ``wanted`` would be built.

    Everything that affects the build must be equal except the shape range, which may be larger.
    """
    return (
        not recorded.mismatches(wanted)
        and recorded.precision == wanted.precision
        and recorded.optimization_level == wanted.optimization_level
        and recorded.workspace_bytes == wanted.workspace_bytes
    )


def model_record(model: Any) -> dict[str, Any]:
    """The model description stored beside a built engine, so the engine runs without its ONNX file.

    Args:
        model: anything with ``name``, ``architecture``, ``scale``, ``in_channels``, ``out_channels`` and
            ``default_sigma``: an :class:`~certsr_rt.models.SRModel` or an
            :class:`~certsr_rt.export.exported.ExportedModel`.

    Returns:
        Plain JSON values, as :func:`read_engine_record` returns them.
    """
    sigma = model.default_sigma
    return {
        "name": str(model.name),
        "architecture": str(model.architecture),
        "scale": int(model.scale),
        "in_channels": int(model.in_channels),
        "out_channels": int(model.out_channels),
        "default_sigma": None if sigma is None else float(sigma),
    }


def read_engine_record(engine_path: str | Path) -> tuple[EngineKey, dict[str, Any]]:
    """The :class:`EngineKey` and model description recorded beside an engine (``<engine>.json``).

    Returns:
        ``(key, model)`` where ``model`` has ``name``, ``architecture``, ``scale``, ``in_channels``,
        ``out_channels`` and ``default_sigma``. Records written before ``architecture`` and
        ``default_sigma`` were stored read as ``"unknown"`` and ``None``.

    Raises:
        BackendError: no record, or an unreadable one: such an engine is never run, since nothing says
            which GPU, TensorRT version and shapes it was built for.
    """
    meta = Path(engine_path).with_suffix(".json")
    if not meta.is_file():
        raise BackendError(
            f"refusing engine {engine_path}: expected its build record {meta.name} beside it, found none, so "
            "its GPU, TensorRT version and shape range cannot be checked; "
            "rebuild it with certsr-rt export --engine"
        )
    try:
        record = json.loads(meta.read_text())
        info = record["model"]
        sigma = info.get("default_sigma")
        model = {
            "name": str(info["name"]),
            "architecture": str(info.get("architecture", "unknown")),
            "scale": int(info["scale"]),
            "in_channels": int(info["in_channels"]),
            "out_channels": int(info["out_channels"]),
            "default_sigma": None if sigma is None else float(sigma),
        }
        return EngineKey.from_json(record["key"]), model
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackendError(
            f"refusing engine {engine_path}: its build record {meta} is unreadable ({exc!r})"
        ) from exc


class EngineCache:
    """Engines on disk: ``<root>/<digest>.engine`` + ``<digest>.json`` + one timing cache per GPU/TensorRT.

    Args:
        root: directory (created on demand), e.g. ``~/.cache/certsr-rt/tensorrt``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def engine_path(self, key: EngineKey) -> Path:
        """Where the engine for ``key`` lives."""
        return self.root / f"{key.digest()}.engine"

    def timing_cache_path(self, key: EngineKey) -> Path:
        """The timing cache shared by every build on the same GPU and TensorRT version."""
        slug = re.sub(r"[^A-Za-z0-9]+", "-", key.gpu.name).strip("-").lower()
        cc = "".join(map(str, key.gpu.compute_capability))
        return self.root / f"timing-{slug}-sm{cc}-trt{key.tensorrt_version}.cache"

    def lookup(self, key: EngineKey) -> Path | None:
        """A cached engine that can serve ``key``, or ``None``.

        The engine stored under ``key``'s own digest is taken when present. Otherwise any cached engine
        whose record equals ``key`` in everything but the shape range (same ONNX file, GPU, TensorRT
        version, optimisation level, workspace and engine format) and whose shape range
        :meth:`~ShapeProfile.covers` the wanted one serves it; of several, the one with the smallest
        largest input (``max_batch x max_height x max_width``) is taken. So an engine built by
        ``certsr-rt export --engine --max-size 512x512`` also serves a backend that needs 256x256.
        Records for another GPU or TensorRT version, and unreadable records, are skipped: never run.

        Raises:
            BackendError: a file exists under ``key``'s own digest but its record disagrees (never run it).
        """
        path = self.engine_path(key)
        if path.is_file():
            recorded, _ = read_engine_record(path)
            reasons = recorded.mismatches(key)
            if reasons:
                raise BackendError(f"refusing cached engine {path}: " + "; ".join(reasons))
            return path
        best: tuple[int, str, Path] | None = None
        for candidate in self.root.glob("*.engine") if self.root.is_dir() else ():
            try:
                recorded, _ = read_engine_record(candidate)
            except BackendError as exc:
                log.debug("engine cache: skipping %s (%s)", candidate, exc)
                continue
            if not _can_serve(recorded, key):
                continue
            p = recorded.profile
            rank = (p.max_batch * p.max_height * p.max_width, candidate.name, candidate)
            if best is None or rank[:2] < best[:2]:
                best = rank
        if best is not None:
            log.info("engine cache: %s serves %s", best[2], key.profile.describe())
            return best[2]
        return None

    def store(self, key: EngineKey, engine: bytes, model: dict[str, Any]) -> Path:
        """Write engine bytes and their record atomically; returns the engine path.

        Args:
            key: the build key.
            engine: serialized engine.
            model: ``name``, ``architecture``, ``scale``, ``in_channels``, ``out_channels`` and
                ``default_sigma`` of the generator (so an engine given by path can be run without its ONNX
                file; see :func:`read_engine_record`).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.engine_path(key)
        record = {"key": key.to_json(), "model": model}
        write_atomic(path.with_suffix(".json"), json.dumps(record, indent=2, sort_keys=True).encode())
        write_atomic(path, engine)
        return path


def build_engine(
    trt: ModuleType,
    onnx_path: str | Path,
    key: EngineKey,
    *,
    timing_cache: Path | None = None,
) -> bytes:
    """Build a serialized engine from an ONNX file with the TensorRT 10/11 Python API.

    Untested here (see the module docstring); written to the documented API.

    Args:
        trt: the ``tensorrt`` module.
        onnx_path: the ONNX file (weights embedded).
        key: build settings (profile, optimisation level, workspace).
        timing_cache: file to load the timing cache from and save it back to.

    Returns:
        The serialized engine.

    Raises:
        BackendError: the parser or the builder failed (parser errors are in the message).
    """
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {onnx_path}: {errors or 'no parser error recorded'}")
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise BackendError(
            "expected an ONNX model with 1 input and 1 output, "
            f"got {network.num_inputs} and {network.num_outputs}"
        )
    config = builder.create_builder_config()
    config.builder_optimization_level = key.optimization_level
    if key.workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, key.workspace_bytes)
    profile = builder.create_optimization_profile()
    input_name = network.get_input(0).name
    profile.set_shape(input_name, key.profile.min_shape, key.profile.opt_shape, key.profile.max_shape)
    config.add_optimization_profile(profile)
    blob = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, ignore_mismatch=False)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path} ({key.profile.describe()})")
    log.info("built TensorRT engine in %.1f s", time.perf_counter() - start)
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def deserialize_engine(
    trt: ModuleType, engine_path: str | Path, wanted: EngineKey, recorded: EngineKey | None = None
) -> Any:
    """Load an engine after checking its build record against ``wanted``.

    Args:
        trt: the ``tensorrt`` module.
        engine_path: the ``.engine`` file (its ``.json`` record must be beside it).
        wanted: the GPU, TensorRT version and shape range the caller needs (``onnx_sha256`` is not
            compared when it is empty, for engines given by path).
        recorded: the key of the engine's build record when the caller has read it already (an
            :class:`~certsr_rt.export.exported.ExportedModel`'s ``engine_key``, or what
            :func:`prepare_engine` returned); ``None`` reads the record here.

    Returns:
        A ``tensorrt.ICudaEngine``.

    Raises:
        BackendError: the record is missing or says the engine was built for another GPU, TensorRT version
            or a smaller shape range (the engine is not deserialized), or TensorRT cannot load it.
    """
    if recorded is None:
        recorded, _ = read_engine_record(engine_path)
    if not wanted.onnx_sha256:
        wanted = dataclasses.replace(wanted, onnx_sha256=recorded.onnx_sha256)
    reasons = recorded.mismatches(wanted)
    if reasons:
        raise BackendError(
            f"refusing engine {engine_path}: " + "; ".join(reasons) + "; rebuild it with certsr-rt "
            "export --engine"
        )
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise BackendError(f"TensorRT {wanted.tensorrt_version} could not deserialize {engine_path}")
    return engine


def prepare_engine(
    trt: ModuleType,
    onnx_path: str | Path,
    *,
    precision: str,
    profile: ShapeProfile,
    gpu: GpuInfo,
    cache: EngineCache,
    model: dict[str, Any],
    optimization_level: int = 3,
    workspace_bytes: int | None = None,
) -> tuple[Path, EngineKey]:
    """A cached engine for this ONNX file, GPU and TensorRT version that covers ``profile``, else a new one.

    A cached engine with a larger shape range is reused (see :meth:`EngineCache.lookup`); one is built
    and stored only when none serves.

    Args:
        trt: the ``tensorrt`` module.
        onnx_path: the validated ONNX export.
        precision: the export's precision (``fp32`` / ``fp16``).
        profile: shapes the engine must accept.
        gpu: the GPU it runs on.
        cache: where engines live.
        model: ``name``, ``architecture``, ``scale``, ``in_channels``, ``out_channels``,
            ``default_sigma`` (recorded beside the engine; see :meth:`EngineCache.store`).
        optimization_level: builder optimisation level (0-5).
        workspace_bytes: workspace limit, ``None`` for TensorRT's default.

    Returns:
        ``(engine path, the key it was built with)``; the key's profile may be larger than ``profile``.
    """
    from certsr_rt.export.onnx import file_sha256

    key = EngineKey(
        onnx_sha256=file_sha256(onnx_path),
        precision=precision,
        profile=profile,
        tensorrt_version=str(trt.__version__),
        gpu=gpu,
        optimization_level=optimization_level,
        workspace_bytes=workspace_bytes,
    )
    path = cache.lookup(key)
    if path is None:
        # The upscale command shows this (info, unless --quiet): a build takes minutes and happens once.
        log.info(
            "building a TensorRT engine for %s on %s (%s): once per model, GPU and shape range, "
            "several minutes; cached in %s",
            onnx_path,
            gpu.describe(),
            profile.describe(),
            cache.root,
        )
        engine = build_engine(trt, onnx_path, key, timing_cache=cache.timing_cache_path(key))
        return cache.store(key, engine, model), key
    recorded, _ = read_engine_record(path)
    return path, recorded
