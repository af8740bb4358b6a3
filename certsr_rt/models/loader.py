"""Turn a registered name or a checkpoint file into an :class:`SRModel`.

Checkpoints are read with ``torch.load(weights_only=True)`` or safetensors only: a file is never unpickled
as code. The architecture and its hyper-parameters are detected from key names and tensor shapes:

* RRDBNet (ESRGAN generator) in three key layouts, converted to the BasicSR / Real-ESRGAN "new-arch" names
  of :class:`~certsr_rt.models.RRDBNet`:

  - new-arch: ``conv_first, body.N.rdbK.convJ, conv_body, conv_up1, conv_up2, conv_hr, conv_last``;
  - the ESRGAN repository's: ``conv_first, RRDB_trunk.N.RDBK.convJ, trunk_conv, upconv1, upconv2, HRconv,
    conv_last``;
  - the 2018 "old-arch": ``model.0, model.1.sub.N.RDBK.convJ.0, model.1.sub.<num_block>`` (trunk conv),
    ``model.3, model.6, model.8, model.10``.

* SRVGGNetCompact: ``body.N`` only (convs at even indices, PReLU weights at odd ones).

Wrappers ``params_ema`` (preferred), ``params``, ``state_dict`` and ``model`` are unwrapped, a ``module.``
prefix (DistributedDataParallel) is stripped, and half-precision tensors are cast to fp32. A ``certsr_meta``
dict (written by ``certsr_rt.train``; in a safetensors file, a JSON string under the ``certsr_meta``
metadata key) supplies the name, the recommended σ and the hyper-parameters.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
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
from certsr_rt.models.descriptor import SRModel
from certsr_rt.models.registry import (
    ModelSpec,
    build_module,
    list_specs,
    registered_names,
    scale_of,
)

__all__ = ["detect_architecture", "load_model", "load_state_dict_file", "read_bundled_weights"]

log = logging.getLogger(__name__)

_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")
_MAX_WRAPPER_DEPTH = 3

StateDict = dict[str, torch.Tensor]


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
        ``(architecture, hyperparameters, converted_state_dict)``: the key of
        :data:`~certsr_rt.models.registry.ARCHITECTURES`, the keyword arguments that build the module, and
        the state dict renamed to that module's parameter names.

    Raises:
        ModelLoadError: the keys match none of the known layouts, or the shapes are inconsistent.
    """
    sd = dict(state_dict)
    if "conv_first.weight" in sd and "body.0.rdb1.conv1.weight" in sd:
        return "RRDBNet", _rrdbnet_hyperparameters(sd), sd
    if "RRDB_trunk.0.RDB1.conv1.weight" in sd:
        sd = _convert_esrgan_repo(sd)
        return "RRDBNet", _rrdbnet_hyperparameters(sd), sd
    if "model.0.weight" in sd and "model.1.sub.0.RDB1.conv1.0.weight" in sd:
        sd = _convert_old_arch(sd)
        return "RRDBNet", _rrdbnet_hyperparameters(sd), sd
    if "body.0.weight" in sd and all(re.fullmatch(r"body\.\d+\.(weight|bias)", k) for k in sd):
        return "SRVGGNetCompact", _srvgg_hyperparameters(sd), sd
    raise ModelLoadError(
        f"unrecognised state dict ({len(sd)} tensors, first keys: {_preview(sd)}); expected an RRDBNet "
        "(ESRGAN / Real-ESRGAN) or SRVGGNetCompact checkpoint"
    )


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
        if meta_scale is not None and int(meta_scale) != scale_of(architecture, hyperparameters):
            raise ModelLoadError(
                f"{path}: certsr_meta says scale {meta_scale} but its hyper-parameters give "
                f"{scale_of(architecture, hyperparameters)}"
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
    # Built on the meta device and filled with assign=True: no throw-away random init (0.3 s for RRDBNet)
    # and no use of the global RNG.
    module = build_module(architecture, hyperparameters, device="meta")
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
    scale = scale_of(architecture, hyperparameters)
    return SRModel(
        module=module,
        name=name,
        architecture=architecture,
        scale=scale,
        in_channels=int(hyperparameters.get("num_in_ch", 3)),
        out_channels=int(hyperparameters.get("num_out_ch", 3)),
        hyperparameters=dict(hyperparameters),
        default_sigma=default_sigma,
        sha256=sha256,
        source=source,
        supports_half=True,  # both architectures run in fp16; the runtime falls back on inf/NaN
    )


def _generated_state_dict(spec: ModelSpec) -> StateDict:
    """Deterministic weights for a test-only model: PyTorch's default init, drawn from a local generator.

    An RRDBNet has no skip from its input to its output, and with random weights its output sits around
    -0.06 with a spread of 0.03: after clamping to [0, 1] every image would be black and tests comparing
    outputs would compare nothing. So its last convolution is then rescaled (weight and bias, still a
    fixed function of the seed) to give mean 0.5 and spread 0.25 on a probe image drawn from the same
    generator: outputs stay a random function of the input, now in the visible range.
    """
    gen = torch.Generator().manual_seed(spec.seed)
    template = build_module(spec.architecture, spec.hyperparameters, device="meta").state_dict()
    out: StateDict = {}
    for key, t in template.items():
        if t.dim() == 1 and key.endswith(".weight"):  # PReLU slopes: PyTorch's default 0.25
            out[key] = torch.full(tuple(t.shape), 0.25)
            continue
        weight = template[key.rsplit(".", 1)[0] + ".weight"]
        bound = 1.0 / math.sqrt(weight[0].numel())  # fan_in; kaiming_uniform(a=sqrt(5)) and bias bound
        out[key] = (torch.rand(tuple(t.shape), generator=gen) * 2 - 1) * bound
    if spec.architecture == "RRDBNet":
        module = build_module(spec.architecture, spec.hyperparameters, device="meta")
        module.load_state_dict(out, assign=True)
        probe = torch.rand(1, int(spec.hyperparameters.get("num_in_ch", 3)), 16, 16, generator=gen)
        with torch.no_grad():
            y = module(probe)
        gain = 0.25 / max(float(y.std()), 1e-8)
        out["conv_last.weight"] = out["conv_last.weight"] * gain
        out["conv_last.bias"] = (out["conv_last.bias"] - float(y.mean())) * gain + 0.5
    return out


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


# -------------------------------------------------------------------------------------- layout conversion


def _convert_esrgan_repo(sd: StateDict) -> StateDict:
    renames = {
        "trunk_conv.": "conv_body.",
        "upconv1.": "conv_up1.",
        "upconv2.": "conv_up2.",
        "HRconv.": "conv_hr.",
    }
    out: StateDict = {}
    for key, v in sd.items():
        new = re.sub(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.", r"body.\1.rdb\2.", key)
        for old, repl in renames.items():
            if new.startswith(old):
                new = repl + new[len(old) :]
        out[new] = v
    return out


def _convert_old_arch(sd: StateDict) -> StateDict:
    blocks = _indices(sd, r"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight")
    num_block = max(blocks) + 1
    if f"model.1.sub.{num_block}.weight" not in sd or "model.10.weight" not in sd:
        raise ModelLoadError(
            "old-arch ESRGAN layout (model.N keys) with an unsupported structure: expected "
            f"model.1.sub.{num_block} (trunk conv) and model.3/6/8/10 (x4 upsampler), found {_preview(sd, 8)}"
        )
    fixed = {
        "model.0.": "conv_first.",
        f"model.1.sub.{num_block}.": "conv_body.",
        "model.3.": "conv_up1.",
        "model.6.": "conv_up2.",
        "model.8.": "conv_hr.",
        "model.10.": "conv_last.",
    }
    out: StateDict = {}
    for key, v in sd.items():
        new = re.sub(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.", r"body.\1.rdb\2.conv\3.", key)
        if new == key:
            for old, repl in fixed.items():
                if key.startswith(old):
                    new = repl + key[len(old) :]
                    break
        out[new] = v
    return out


# ------------------------------------------------------------------------------ hyper-parameter detection


def _rrdbnet_hyperparameters(sd: StateDict) -> dict[str, Any]:
    if "conv_up3.weight" in sd:
        raise ModelLoadError(
            "RRDBNet x8 checkpoints (conv_up3) are not supported; expected an x4, x2 or x1 one"
        )
    for key in ("conv_first.weight", "conv_last.weight", "body.0.rdb1.conv1.weight"):
        if key not in sd or sd[key].dim() != 4:
            raise ModelLoadError(f"RRDBNet state dict without a 4-D {key} (found {_preview(sd)})")
    blocks = _indices(sd, r"body\.(\d+)\.rdb1\.conv1\.weight")
    if blocks != set(range(len(blocks))):
        raise ModelLoadError(f"RRDBNet blocks are not numbered 0..{len(blocks) - 1}: found {sorted(blocks)}")
    num_feat, first_in = sd["conv_first.weight"].shape[:2]
    num_out = sd["conv_last.weight"].shape[0]
    # BasicSR's x2 / x1 RRDBNet pixel-unshuffle the input by 2 / 4 before conv_first.
    if first_in == num_out:
        scale, num_in = 4, first_in
    elif first_in == 4 * num_out:
        scale, num_in = 2, num_out
    elif first_in == 16 * num_out:
        scale, num_in = 1, num_out
    else:
        scale, num_in = 4, first_in
    return {
        "num_in_ch": int(num_in),
        "num_out_ch": int(num_out),
        "scale": scale,
        "num_feat": int(num_feat),
        "num_block": len(blocks),
        "num_grow_ch": int(sd["body.0.rdb1.conv1.weight"].shape[0]),
    }


def _srvgg_hyperparameters(sd: StateDict) -> dict[str, Any]:
    last = max(_indices(sd, r"body\.(\d+)\.weight"))
    first = sd["body.0.weight"]
    if first.dim() != 4 or last < 2 or last % 2 or sd[f"body.{last}.weight"].dim() != 4:
        raise ModelLoadError(
            f"SRVGGNetCompact-like keys (body.N) but an unexpected structure: last conv body.{last}, "
            f"body.0.weight shape {tuple(first.shape)}"
        )
    num_feat, num_in = int(first.shape[0]), int(first.shape[1])
    prelu = sd.get("body.1.weight")
    if prelu is not None and tuple(prelu.shape) == (num_feat,):
        act_type = "prelu"
    elif prelu is None:
        # ReLU and LeakyReLU have no weights: the file cannot tell them apart.
        act_type = "relu"
        log.warning("SRVGGNetCompact without PReLU weights: assuming ReLU activations")
    else:
        raise ModelLoadError(
            f"SRVGGNetCompact body.1.weight: expected shape ({num_feat},), got {tuple(prelu.shape)}"
        )
    last_out = int(sd[f"body.{last}.weight"].shape[0])
    upscale = math.isqrt(last_out // num_in) if last_out % num_in == 0 else 0
    if upscale < 1 or upscale * upscale * num_in != last_out:
        raise ModelLoadError(
            f"SRVGGNetCompact last conv has {last_out} output channels; "
            f"expected in_channels ({num_in}) x scale^2"
        )
    return {
        "num_in_ch": num_in,
        "num_out_ch": num_in,
        "num_feat": num_feat,
        "num_conv": (last - 2) // 2,
        "upscale": upscale,
        "act_type": act_type,
    }


# ---------------------------------------------------------------------------------------------- helpers


def _indices(sd: Mapping[str, Any], pattern: str) -> set[int]:
    rx = re.compile(pattern)
    return {int(m.group(1)) for k in sd if (m := rx.fullmatch(k))}


def _preview(sd: Mapping[str, Any], n: int = 4) -> str:
    keys = list(sd)
    more = f", ... ({len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(str(k) for k in keys[:n]) + more


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        if not obj:
            return "an empty dict"
        return f"a dict with keys {_preview(obj)}"
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {tuple(obj.shape)}"
    return f"a {type(obj).__name__}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else "no message"


def _fmt_hp(hp: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in hp.items())
