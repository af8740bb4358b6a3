"""The public API: ``certsr_rt.__all__`` is pinned, and every certsr-rt type that a public function or
method takes or returns is itself public (a user can name it in a type hint without reaching into a
private module)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import typing

import certsr_rt
from certsr_rt import errors

PUBLIC = {
    "__version__",
    "Architecture",
    "Backend",
    "BackendError",
    "BoundsConfig",
    "BoundsSummary",
    "Cancelled",
    "CertifiedRanks",
    "CertSRError",
    "create_backend",
    "DEFAULT_MODEL",
    "describe_exported",
    "EngineKey",
    "ExportedModel",
    "FrameStream",
    "GpuInfo",
    "InputError",
    "list_specs",
    "load_model",
    "MissingDependencyError",
    "ModelLoadError",
    "ModelSpec",
    "RadiusMapConfig",
    "RadiusSchedule",
    "RadiusSummary",
    "ShapeProfile",
    "SmoothingConfig",
    "SRModel",
    "StreamStats",
    "Terminated",
    "TileLimits",
    "upscale_stream",
    "upscale_video_file",
    "Upscaler",
    "UpscaleResult",
    "UpscalerLike",
    "VacuousBoundWarning",
    "VideoResult",
}

# Modules that import an optional library at import time are skipped by the namespace scan.
_OPTIONAL = ("certsr_rt.cli",)


def _namespace() -> dict[str, object]:
    """Every class and alias defined in a certsr_rt module, to resolve annotations written under
    ``TYPE_CHECKING``."""
    from numpy.typing import NDArray

    names: dict[str, object] = {"NDArray": NDArray}
    for info in pkgutil.walk_packages(certsr_rt.__path__, "certsr_rt."):
        if info.name.startswith(_OPTIONAL):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            continue
        for key, value in vars(module).items():
            if not key.startswith("__"):
                names.setdefault(key, value)
    return names


def _certsr_types(annotation: object) -> set[type]:
    origin = typing.get_origin(annotation)
    if origin is not None:
        return set().union(*(_certsr_types(a) for a in typing.get_args(annotation)), _certsr_types(origin))
    if isinstance(annotation, type) and annotation.__module__.startswith("certsr_rt"):
        return {annotation}
    return set()


def _signatures(obj: object) -> typing.Iterator[tuple[str, object]]:
    """(where, function) for a public function, or a public class's public methods, properties and fields."""
    if not inspect.isclass(obj):
        if callable(obj):
            yield obj.__name__, obj
        return
    for name, member in inspect.getmembers(obj):
        if name.startswith("_") and name not in ("__init__", "__call__"):
            continue
        if inspect.isfunction(member):
            yield f"{obj.__name__}.{name}", member
        elif isinstance(member, property) and member.fget is not None:
            yield f"{obj.__name__}.{name}", member.fget
    if dataclasses.is_dataclass(obj):
        yield obj.__name__, obj


def test_all_is_pinned_and_resolves() -> None:
    assert set(certsr_rt.__all__) == PUBLIC
    for name in certsr_rt.__all__:
        assert getattr(certsr_rt, name) is not None, name


def test_every_type_a_public_function_takes_or_returns_is_public() -> None:
    namespace = _namespace()
    missing: dict[str, str] = {}
    for name in certsr_rt.__all__:
        obj = getattr(certsr_rt, name)
        for where, function in _signatures(obj):
            module = inspect.getmodule(function)
            globalns = {**namespace, **(vars(module) if module is not None else {})}
            hints = typing.get_type_hints(function, globalns=globalns)
            for hint in hints.values():
                for t in _certsr_types(hint):
                    if t.__name__ not in PUBLIC and not issubclass(t, BaseException):
                        missing.setdefault(t.__name__, where)
    assert missing == {}, f"types used by the public API but not exported: {missing}"


def test_errors_export_exceptions_only() -> None:
    for name in errors.__all__:
        obj = getattr(errors, name)
        assert inspect.isclass(obj) and issubclass(obj, BaseException | Warning), name
    assert "first_line" not in errors.__all__
