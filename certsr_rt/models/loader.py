"""Turn a registered name or a checkpoint file into an :class:`SRModel`.

Checkpoints are read with ``torch.load(weights_only=True)`` or safetensors only: a file is never unpickled
as code. The architecture and its hyper-parameters are detected from key names and tensor shapes by the
registered architectures, each in its own file (``models/arch/rrdbnet.py``: three RRDBNet key layouts;
``models/arch/srvgg.py``: SRVGGNetCompact), tried in registry order (:mod:`certsr_rt.models.arch`).

Wrappers ``params_ema`` (preferred), ``params``, ``state_dict`` and ``model`` are unwrapped, a ``module.``
prefix (DistributedDataParallel) is stripped, and half-precision tensors are cast to fp32. A ``certsr_meta``
dict (written by ``certsr_rt.train``; in a safetensors file, a JSON string under the ``certsr_meta``
metadata key) supplies the name, the recommended σ and the hyper-parameters.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import re
import struct
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from certsr_rt._device import resolve_device
from certsr_rt.errors import ModelLoadError
from certsr_rt.models import arch as arch_registry
from certsr_rt.models.arch.base import Architecture, StateDict, preview
from certsr_rt.models.descriptor import SRModel
from certsr_rt.models.registry import ModelSpec, list_specs, registered_names

__all__ = ["detect_architecture", "load_model", "load_state_dict_file", "read_bundled_weights"]

_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")
_MAX_WRAPPER_DEPTH = 3


# --------------------------------------------------------------------------------------------- public API


def load_model(name_or_path: str | Path, device: torch.device | str = "cpu") -> SRModel:
    """Load a registered model or a checkpoint file, in eval mode on ``device``.

    Args:
        name_or_path: a registered name (see :func:`~certsr_rt.models.list_specs`; ``realesrgan-x4plus`` is
            the default) or a path to a ``.pth`` / ``.pt`` / ``.safetensors`` checkpoint.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``, or ``"auto"`` (CUDA when available).

    Returns:
        The model, fp32, in eval mode, on ``device``.

    Raises:
        ModelLoadError: unknown name and no such file, unreadable or unrecognised checkpoint, weights that do
            not fit the detected architecture, or a bundled file whose sha256 differs from ``SHA256SUMS``.
        InputError: ``device`` is not a device.
    """
    dev = resolve_device(device)
    key = str(name_or_path)
    specs = {s.name: s for s in list_specs()}
    if isinstance(name_or_path, str) and key in specs:
        model = _load_registered(specs[key])
    else:
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise ModelLoadError(f"no such model or file: {key} (registered: {registered_names()})")
        if not path.is_file():
            raise ModelLoadError(f"{key} is a directory; expected a .pth, .pt or .safetensors file")
        model = _load_file(path)
    return model.to(dev)


def load_state_dict_file(path: str | Path) -> tuple[StateDict, dict[str, Any] | None]:
    """Read a checkpoint's state dict (unwrapped, fp32) and its ``certsr_meta``, without building a model.

    Keys are returned in the file's own layout; :func:`detect_architecture` converts them.

    Args:
        path: a ``torch.save`` file (read with ``weights_only=True``) or a ``.safetensors`` file.

    Returns:
        ``(state_dict, meta)``; ``meta`` is the ``certsr_meta`` dict or ``None``.

    Raises:
        ModelLoadError: missing or unreadable file, pickled objects other than tensors and plain containers,
            or no state dict inside.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"no such file: {path}")
    state_dict, meta, _ = _read_checkpoint(path)
    return state_dict, meta


def detect_architecture(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any], StateDict]:
    """Detect the architecture and hyper-parameters of a state dict, and convert it to our key names.

    Args:
        state_dict: an unwrapped state dict (as returned by :func:`load_state_dict_file`).

    Returns:
        ``(architecture, hyperparameters, converted_state_dict)``: the name of a registered
        :class:`~certsr_rt.models.arch.Architecture`, the keyword arguments that build its module, and the
        state dict renamed to that module's parameter names.

    Raises:
        ModelLoadError: the keys match none of the known layouts, or the shapes are inconsistent.
    """
    arch, hyperparameters, converted = arch_registry.detect(state_dict)
    return arch.name, hyperparameters, converted


# ------------------------------------------------------------------------------------------------ loading


def _load_registered(spec: ModelSpec) -> SRModel:
    if spec.file is None:
        state_dict = _generated_state_dict(spec)
        return _build(
            state_dict,
            architecture=spec.architecture,
            hyperparameters=dict(spec.hyperparameters),
            name=spec.name,
            default_sigma=spec.default_sigma,
            sha256=_state_dict_sha256(state_dict),
            source=f"generated:{spec.name}:seed={spec.seed}",
        )
    path = _WEIGHTS_DIR / spec.file
    if not path.is_file():
        raise ModelLoadError(f"bundled weights of {spec.name} are missing: {path} (reinstall certsr-rt)")
    expected = _bundled_sha256(spec.file)
    state_dict, _meta, digest = _read_checkpoint(path, expected_sha256=expected)
    _arch, _hp, state_dict = detect_architecture(state_dict)
    return _build(
        state_dict,
        architecture=spec.architecture,
        hyperparameters=dict(spec.hyperparameters),
        name=spec.name,
        default_sigma=spec.default_sigma,
        sha256=digest,
        source=str(path),
    )


def _load_file(path: Path) -> SRModel:
    state_dict, meta, digest = _read_checkpoint(path)
    try:
        architecture, hyperparameters, state_dict = detect_architecture(state_dict)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None
    name: str = path.stem
    default_sigma: float | None = None
    # A copy of a registered file (e.g. the bundled one passed by path) keeps the registered name and σ.
    for spec in list_specs():
        if spec.sha256 is not None and spec.sha256 == digest:
            name, default_sigma = spec.name, spec.default_sigma
            hyperparameters = dict(spec.hyperparameters)
            break
    if meta is not None:
        meta_arch = meta.get("architecture")
        if meta_arch is not None and meta_arch != architecture:
            raise ModelLoadError(
                f"{path}: certsr_meta says architecture {meta_arch!r} but the weights are {architecture}"
            )
        if isinstance(meta.get("hyperparameters"), Mapping):
            hyperparameters = dict(meta["hyperparameters"])
        meta_scale = meta.get("scale")
        scale = arch_registry.get_architecture(architecture).scale(hyperparameters)
        if meta_scale is not None and int(meta_scale) != scale:
            raise ModelLoadError(
                f"{path}: certsr_meta says scale {meta_scale} but its hyper-parameters give {scale}"
            )
        if meta.get("name"):
            name = str(meta["name"])
        if "default_sigma" in meta:
            sigma = meta["default_sigma"]
            default_sigma = None if sigma is None else float(sigma)
    try:
        return _build(
            state_dict,
            architecture=architecture,
            hyperparameters=hyperparameters,
            name=name,
            default_sigma=default_sigma,
            sha256=digest,
            source=str(path.resolve()),
        )
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None


def _build(
    state_dict: StateDict,
    *,
    architecture: str,
    hyperparameters: dict[str, Any],
    name: str,
    default_sigma: float | None,
    sha256: str,
    source: str,
) -> SRModel:
    arch = arch_registry.get_architecture(architecture)
    # Built on the meta device and filled with assign=True: no throw-away random init (0.3 s for RRDBNet)
    # and no use of the global RNG.
    module = arch.build(hyperparameters, device="meta")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} with wrong shape (e.g. {wrong[0]})")
        raise ModelLoadError(
            f"weights do not fit {architecture}({_fmt_hp(hyperparameters)}): " + "; ".join(parts) + " keys"
        )
    module.load_state_dict(state_dict, strict=True, assign=True)
    module.eval()
    in_channels, out_channels = arch.channels(hyperparameters)
    return SRModel(
        module=module,
        name=name,
        architecture=architecture,
        scale=arch.scale(hyperparameters),
        in_channels=in_channels,
        out_channels=out_channels,
        hyperparameters=dict(hyperparameters),
        default_sigma=default_sigma,
        sha256=sha256,
        source=source,
        supports_half=arch.supports_half,  # the runtime still falls back to fp32 on inf/NaN
    )


def _generated_state_dict(spec: ModelSpec) -> StateDict:
    """Deterministic weights for a test-only model: PyTorch's default init, drawn from a local generator.

    A network without a skip from its input to its output (RRDBNet) gives outputs around -0.06 with a
    spread of 0.03 with random weights: after clamping to [0, 1] every image would be black and tests
    comparing outputs would compare nothing. So the last convolution its architecture names
    (:attr:`~certsr_rt.models.arch.Architecture.output_conv`) is then rescaled (weight and bias, still a
    fixed function of the seed) to give mean 0.5 and spread 0.25 on a probe image drawn from the same
    generator: outputs stay a random function of the input, now in the visible range.
    """
    arch = arch_registry.get_architecture(spec.architecture)
    gen = torch.Generator().manual_seed(spec.seed)
    template = arch.build(spec.hyperparameters, device="meta").state_dict()
    out: StateDict = {}
    for key, t in template.items():
        if t.dim() == 1 and key.endswith(".weight"):  # PReLU slopes: PyTorch's default 0.25
            out[key] = torch.full(tuple(t.shape), 0.25)
            continue
        weight = template[key.rsplit(".", 1)[0] + ".weight"]
        bound = 1.0 / math.sqrt(weight[0].numel())  # fan_in; kaiming_uniform(a=sqrt(5)) and bias bound
        out[key] = (torch.rand(tuple(t.shape), generator=gen) * 2 - 1) * bound
    if arch.output_conv is not None:
        _calibrate_output(arch, spec, out, gen)
    return out


def _calibrate_output(
    arch: Architecture, spec: ModelSpec, state_dict: StateDict, gen: torch.Generator
) -> None:
    """Rescale ``arch.output_conv`` in ``state_dict`` (in place) to mean 0.5, spread 0.25 on a probe."""
    module = arch.build(spec.hyperparameters, device="meta")
    module.load_state_dict(state_dict, assign=True)
    probe = torch.rand(1, arch.channels(spec.hyperparameters)[0], 16, 16, generator=gen)
    with torch.no_grad():
        y = module(probe)
    gain = 0.25 / max(float(y.std()), 1e-8)
    weight, bias = f"{arch.output_conv}.weight", f"{arch.output_conv}.bias"
    state_dict[weight] = state_dict[weight] * gain
    state_dict[bias] = (state_dict[bias] - float(y.mean())) * gain + 0.5


# ------------------------------------------------------------------------------------------- file reading


def _read_checkpoint(
    path: Path, expected_sha256: str | None = None
) -> tuple[StateDict, dict[str, Any] | None, str]:
    """Read, hash and parse a checkpoint file once: ``(state_dict, meta, sha256)``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data:
        raise ModelLoadError(f"{path}: not a torch checkpoint or safetensors file (the file is empty)")
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise ModelLoadError(
            f"sha256 mismatch for {path}: expected {expected_sha256}, got {digest} "
            "(corrupt or modified file; reinstall certsr-rt)"
        )
    if _looks_like_safetensors(data):
        obj, meta = _parse_safetensors(path, data)
    else:
        obj, meta = _parse_torch(path, data), None
    state_dict, wrapped_meta = _unwrap(path, obj)
    return _to_fp32(state_dict), meta if meta is not None else wrapped_meta, digest


def _looks_like_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    (header_len,) = struct.unpack("<Q", data[:8])
    return 2 <= header_len <= len(data) - 8 and data[8:9] == b"{"


def _parse_safetensors(path: Path, data: bytes) -> tuple[StateDict, dict[str, Any] | None]:
    import safetensors.torch  # a core dependency, imported on use only

    try:
        tensors = safetensors.torch.load(data)
        (header_len,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + header_len])
    except Exception as exc:  # safetensors raises its own SafetensorError; any failure means "not valid"
        raise ModelLoadError(f"{path}: not a valid safetensors file ({_one_line(exc)})") from None
    meta = None
    raw = (header.get("__metadata__") or {}).get("certsr_meta")
    if raw is not None:
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError:
            raise ModelLoadError(f"{path}: certsr_meta metadata is not JSON: {raw[:60]!r}") from None
        if not isinstance(meta, dict):
            raise ModelLoadError(f"{path}: certsr_meta must be a JSON object, got {type(meta).__name__}")
    return tensors, meta


def _parse_torch(path: Path, data: bytes) -> Any:
    try:
        with warnings.catch_warnings():
            # Files pickled with protocol > 2 load fine but make torch warn about it.
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if "Weights only load failed" in text and found:
            raise ModelLoadError(
                f"{path}: refusing to unpickle a Python object ({found.group(1)}); only tensors and plain "
                "containers are loaded (torch.load weights_only=True)"
            ) from None
        reason = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        detail = reason.group(1).strip() if reason else _one_line(exc)
        raise ModelLoadError(f"{path}: not a torch checkpoint or safetensors file ({detail})") from None
    except Exception as exc:  # torch.load raises many types (EOFError, KeyError, RuntimeError...) on garbage
        raise ModelLoadError(
            f"{path}: not a torch checkpoint or safetensors file ({type(exc).__name__}: {_one_line(exc)})"
        ) from None


def _unwrap(path: Path, obj: Any) -> tuple[StateDict, dict[str, Any] | None]:
    meta: dict[str, Any] | None = None
    for _ in range(_MAX_WRAPPER_DEPTH):
        if not isinstance(obj, dict):
            break
        if meta is None and isinstance(obj.get("certsr_meta"), dict):
            meta = obj["certsr_meta"]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict) and obj[k]), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{path}: expected a dict of tensors (a state dict), found {_describe(obj)}")
    if not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ModelLoadError(
            f"{path}: expected a state dict (tensors, possibly under {'/'.join(_WRAPPER_KEYS)}), "
            f"found {_describe(obj)}"
        )
    if all(k.startswith("module.") for k in obj):  # saved from a DistributedDataParallel wrapper
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj, meta


def _to_fp32(state_dict: StateDict) -> StateDict:
    return {
        k: (v.float() if v.is_floating_point() and v.dtype != torch.float32 else v).contiguous()
        for k, v in state_dict.items()
    }


def read_bundled_weights(filename: str, what: str) -> bytes:
    """The bytes of a file in ``models/weights``, after checking its sha256 against ``SHA256SUMS``.

    Args:
        filename: the file's name in the bundled weights folder.
        what: what it is, for the error message (``"the bundled AlexNet weights"``).

    Raises:
        ModelLoadError: the file is missing or unreadable, has no ``SHA256SUMS`` entry, or another sha256.
    """
    path = _WEIGHTS_DIR / filename
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc
        raise ModelLoadError(f"cannot read {what} {path}: {reason} (reinstall certsr-rt)") from exc
    expected = _bundled_sha256(filename)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ModelLoadError(f"{path} has sha256 {actual}, expected {expected} (from SHA256SUMS)")
    return data


def _bundled_sha256(filename: str) -> str:
    """The expected sha256 of a bundled weights file, from ``weights/SHA256SUMS``."""
    sums = _WEIGHTS_DIR / "SHA256SUMS"
    try:
        lines = sums.read_text().splitlines()
    except OSError:
        raise ModelLoadError(f"cannot read {sums} (reinstall certsr-rt)") from None
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == filename:
            return parts[0].lower()
    raise ModelLoadError(f"{sums} has no entry for {filename} (reinstall certsr-rt)")


def _state_dict_sha256(state_dict: StateDict) -> str:
    h = hashlib.sha256()
    for key, t in state_dict.items():
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- helpers


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        if not obj:
            return "an empty dict"
        return f"a dict with keys {preview(obj)}"
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {tuple(obj.shape)}"
    return f"a {type(obj).__name__}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else "no message"


def _fmt_hp(hp: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in hp.items())
