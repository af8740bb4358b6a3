"""LPIPS-alex (Zhang et al. 2018) through the ``lpips`` package, fully offline.

The ``lpips`` package ships only its small linear calibration layers and asks torchvision to download the
ImageNet AlexNet trunk, which fails without a network. We build ``lpips.LPIPS(net="alex",
pnet_rand=True)`` (random trunk, no download) and copy the bundled torchvision AlexNet ImageNet weights
(``models/weights/alexnet_features_imagenet1k_v1.pth``, checked against ``SHA256SUMS``) into
``net.slice1..5``. The result is the standard LPIPS v0.1 alex metric.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from certsr_rt._deps import require
from certsr_rt.errors import InputError, ModelLoadError

__all__ = ["LPIPSMetric"]

_ALEXNET_FILE = "alexnet_features_imagenet1k_v1.pth"
# torchvision AlexNet ``features`` index -> the lpips slice that holds it under the same name.
_ALEX_SLICES = {0: "slice1", 3: "slice2", 6: "slice3", 8: "slice4", 10: "slice5"}


@lru_cache(maxsize=1)
def _alexnet_features() -> dict[str, torch.Tensor]:
    """The bundled AlexNet ``features.*`` state dict, after checking its sha256."""
    from certsr_rt.models.loader import read_bundled_weights

    data = read_bundled_weights(_ALEXNET_FILE, "the bundled AlexNet weights")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ModelLoadError(f"{_ALEXNET_FILE} should hold a state dict, got {type(state).__name__}")
    return state


def _as_nchw(name: str, image: Any) -> torch.Tensor:
    """Convert one input to a float32 ``N x 3 x H x W`` tensor in [0, 1] (device unchanged)."""
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3 or array.shape[2] not in (1, 3):
            raise InputError(
                f"{name}: numpy images must be H x W, H x W x 1 or H x W x 3 (RGB), got shape {image.shape}"
            )
        if array.dtype == np.uint8:
            scaled = array.astype(np.float32) / 255.0
        elif array.dtype == np.uint16:
            scaled = array.astype(np.float32) / 65535.0
        elif np.issubdtype(array.dtype, np.floating):
            scaled = array.astype(np.float32)
        else:
            raise InputError(f"{name}: expected uint8, uint16 or float in [0, 1], got dtype {array.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))[None]
    elif isinstance(image, torch.Tensor):
        tensor = image
        if tensor.ndim == 3:
            tensor = tensor[None]
        if tensor.ndim != 4 or tensor.shape[1] not in (1, 3):
            raise InputError(
                f"{name}: tensors must be N x C x H x W (or C x H x W) with C in (1, 3), "
                f"got shape {tuple(image.shape)}"
            )
        if not tensor.is_floating_point():
            raise InputError(f"{name}: tensors must be float in [0, 1], got dtype {tensor.dtype}")
        tensor = tensor.float()
    else:
        raise InputError(
            f"{name} must be a numpy H x W x C image or a torch N x C x H x W tensor, "
            f"got {type(image).__name__}"
        )
    if tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    return tensor


class LPIPSMetric:
    """LPIPS v0.1 with the AlexNet trunk (lower is more similar), offline and silent.

    Inputs are in [0, 1] and are mapped to [-1, 1] internally (``2x − 1``), which is what LPIPS expects.
    Grayscale inputs are repeated to three channels.

    Example:
        >>> metric = LPIPSMetric()
        >>> metric(sr_uint8, hr_uint8)  # doctest: +SKIP
        0.213

    Args:
        device: torch device for the network (``"cpu"``, ``"cuda"``, ``torch.device``).

    Raises:
        MissingDependencyError: the ``lpips`` package is not installed (``certsr-rt[train]``).
        ModelLoadError: the bundled AlexNet weights are missing or do not match their sha256.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        lpips = require("lpips", "train", "LPIPS")
        self.device = torch.device(device)
        # pnet_rand=True: torchvision builds an untrained AlexNet and downloads nothing. torchvision warns
        # about the deprecated ``pretrained`` argument lpips passes; lpips itself prints unless verbose=False.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.")
            net = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
        features = _alexnet_features()
        for index, slice_name in _ALEX_SLICES.items():
            conv = getattr(net.net, slice_name)._modules[str(index)]
            part = {
                "weight": features[f"features.{index}.weight"],
                "bias": features[f"features.{index}.bias"],
            }
            try:
                conv.load_state_dict(part)
            except (RuntimeError, KeyError) as exc:
                raise ModelLoadError(
                    f"AlexNet features.{index} does not fit lpips net.{slice_name}.{index}: {exc}"
                ) from exc
        net.eval()
        for param in net.parameters():
            param.requires_grad_(False)
        self.net = net.to(self.device)

    def distance(self, img: Any, ref: Any) -> torch.Tensor:
        """Per-image LPIPS distances, differentiable with respect to tensor inputs.

        Args:
            img: numpy ``H x W x C`` image (uint8 / uint16 / float in [0, 1]) or a float tensor
                ``N x C x H x W`` (or ``C x H x W``) in [0, 1].
            ref: the reference, same shape.

        Returns:
            Float tensor of shape ``(N,)`` on the metric's device.

        Raises:
            InputError: shapes differ or an input is not an image.
        """
        a = _as_nchw("img", img)
        b = _as_nchw("ref", ref)
        if a.shape != b.shape:
            raise InputError(
                f"img and ref must have the same shape, got {tuple(img.shape)} and {tuple(ref.shape)}"
            )
        a = a.to(self.device) * 2.0 - 1.0
        b = b.to(self.device) * 2.0 - 1.0
        return self.net(a, b).reshape(-1)

    def __call__(self, img: Any, ref: Any) -> float:
        """LPIPS distance between ``img`` and ``ref`` (the mean over a batch).

        Args:
            img: numpy ``H x W x C`` RGB image (uint8 / uint16 / float in [0, 1]) or float tensor
                ``N x C x H x W`` in [0, 1].
            ref: the reference, same shape.

        Returns:
            The distance as a Python float (0 for identical images).
        """
        with torch.no_grad():
            return float(self.distance(img, ref).mean())
