"""Losses of the ESRGAN objective: L1, VGG perceptual loss and the relativistic-average GAN loss.

The same :class:`SRLoss` (``L1 + L_percep``, equations 1-2 of the CertSR paper) is what the attacks in
:mod:`certsr_rt.attacks` maximise and what fine-tuning minimises, so an adversarial example crafted during
training and one crafted for evaluation target the same objective.

Perceptual features. ESRGAN compares VGG19 ImageNet features at ``conv5_4`` *before* its ReLU. VGG19
weights come from torchvision (a download on first use). When they cannot be had (offline, or torchvision
missing), the loss falls back, with a one-line warning, to the VGG16 ImageNet features bundled with the
package (``models/weights/vgg16_features_imagenet1k_v1_fp16.pth``: torchvision's
``VGG16_Weights.IMAGENET1K_V1`` ``features``, stored in fp16, loaded as fp32), whose corresponding layer is
``conv5_3`` before its ReLU (the last convolution of the last block, as ``conv5_4`` is for VGG19). A local
``features.N.*`` state dict can also be given. VGG16 and VGG19 give losses of the same kind but different
values: a number measured with one is not comparable with a number measured with the other, so
:attr:`PerceptualLoss.weights_source` says which was used (evaluation reports record it).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from certsr_rt._deps import require
from certsr_rt.errors import InputError, MissingDependencyError, ModelLoadError, first_line

__all__ = [
    "VGG_CONFIGS",
    "PerceptualLoss",
    "RelativisticAverageGANLoss",
    "SRLoss",
    "vgg_layer_names",
]

# Convolutions per block; "M" is a 2x2 max-pool. Indices of the resulting nn.Sequential match torchvision's
# ``vgg16().features`` / ``vgg19().features`` exactly, so their state dicts load unchanged.
VGG_CONFIGS: dict[str, tuple[int, ...]] = {
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
_DEFAULT_LAYER = {"vgg16": "conv5_3", "vgg19": "conv5_4"}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
log = logging.getLogger(__name__)

BUNDLED_VGG16_FILE = "vgg16_features_imagenet1k_v1_fp16.pth"
"""The bundled perceptual backbone, in ``certsr_rt/models/weights`` (sha256 in ``SHA256SUMS``)."""

BUNDLED_VGG16_SOURCE = (
    f"the bundled VGG16 ImageNet features ({BUNDLED_VGG16_FILE}: torchvision VGG16_Weights.IMAGENET1K_V1, "
    "fp16 copy)"
)
""":attr:`PerceptualLoss.weights_source` when the bundled VGG16 is used."""

_OFFLINE_HINT = (
    "to use VGG19 offline, copy torchvision's VGG19 ImageNet file (vgg19-dcbb9e9d.pth, in "
    "~/.cache/torch/hub/checkpoints on a machine that has downloaded it) here and pass it with "
    "--perceptual-weights FILE"
)


def vgg_layer_names(vgg_type: str) -> list[str]:
    """Names of the modules of ``vgg_type``'s ``features`` in order: ``conv1_1``, ``relu1_1``, ... ``pool5``.

    Args:
        vgg_type: ``"vgg16"`` or ``"vgg19"``.

    Returns:
        One name per module of torchvision's ``features`` sequential, same indices.
    """
    if vgg_type not in VGG_CONFIGS:
        raise InputError(f"vgg_type must be one of {sorted(VGG_CONFIGS)}, got {vgg_type!r}")
    names: list[str] = []
    for block, convs in enumerate(VGG_CONFIGS[vgg_type], start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def _build_features(vgg_type: str, state: Mapping[str, torch.Tensor], source: str) -> nn.Sequential:
    """VGG ``features`` with torchvision's indices and the channel widths found in ``state``.

    Widths come from the weights so that a narrow VGG (tests) loads too; ImageNet VGGs have 64..512.
    """
    layers: list[nn.Module] = []
    in_ch = 3
    for name in vgg_layer_names(vgg_type):
        if name.startswith("conv"):
            weight = state[f"{len(layers)}.weight"]
            if weight.dim() != 4 or weight.shape[1] != in_ch or weight.shape[2:] != (3, 3):
                raise ModelLoadError(
                    f"{source}: {vgg_type} {name} (features.{len(layers)}) should be a 3x3 convolution "
                    f"from {in_ch} channels, got weight shape {tuple(weight.shape)}"
                )
            layers.append(nn.Conv2d(in_ch, weight.shape[0], 3, 1, 1))
            in_ch = weight.shape[0]
        elif name.startswith("relu"):
            layers.append(nn.ReLU(inplace=False))
        else:
            layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


_FEATURE_KEY = re.compile(r"^(?:features\.)?(\d+)\.(weight|bias)$")


def _features_from_state(state: object, source: str) -> tuple[str, dict[str, torch.Tensor]]:
    """Validate a VGG state dict; return its type and its ``features`` part keyed ``N.weight``/``N.bias``."""
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ModelLoadError(f"{source}: expected a state dict of VGG features, got {type(state).__name__}")
    features: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("classifier."):
            continue  # a full torchvision VGG state dict: the classifier is not needed
        match = _FEATURE_KEY.match(key)
        if match is None or not isinstance(value, torch.Tensor):
            raise ModelLoadError(
                f"{source}: expected VGG feature keys 'features.N.weight' / 'features.N.bias', got {key!r}"
            )
        features[f"{match.group(1)}.{match.group(2)}"] = value.detach().float()
    convs = sorted(int(k.split(".")[0]) for k, v in features.items() if k.endswith("weight") and v.dim() == 4)
    by_count = {sum(cfg): name for name, cfg in VGG_CONFIGS.items()}
    vgg_type = by_count.get(len(convs))
    if vgg_type is None:
        raise ModelLoadError(
            f"{source}: expected the 13 convolutions of VGG16 or the 16 of VGG19, found {len(convs)}"
        )
    names = vgg_layer_names(vgg_type)
    expected = [i for i, n in enumerate(names) if n.startswith("conv")]
    if convs != expected:
        raise ModelLoadError(
            f"{source}: {vgg_type} convolutions must sit at features indices {expected}, found {convs}"
        )
    return vgg_type, features


def _features_from_file(path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """Read a local VGG ``features`` state dict (torch, read with ``weights_only=True``, or safetensors).

    The checkpoint reader of :mod:`certsr_rt.models.loader` does the reading, so a bad file is one line
    (torch's own message for a non-checkpoint spans a dozen lines of advice that does not apply).
    """
    from certsr_rt.models.loader import load_state_dict_file

    if not path.is_file():
        raise ModelLoadError(f"perceptual weights file {path} does not exist")
    try:
        state, _ = load_state_dict_file(path)
    except ModelLoadError as exc:
        raise ModelLoadError(f"cannot read perceptual weights: {exc}") from None
    return _features_from_state(state, str(path))


def _features_bundled() -> tuple[str, dict[str, torch.Tensor]]:
    """The bundled VGG16 ImageNet ``features`` (fp16 on disk, cast to fp32), after checking its sha256."""
    from certsr_rt.models.loader import read_bundled_weights

    data = read_bundled_weights(BUNDLED_VGG16_FILE, "the bundled VGG16 perceptual weights")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds for a bad file
        raise ModelLoadError(f"cannot read the bundled {BUNDLED_VGG16_FILE}: {first_line(exc)}") from exc
    return _features_from_state(state, BUNDLED_VGG16_FILE)


def _features_from_torchvision() -> tuple[str, dict[str, torch.Tensor]]:
    """VGG19 ImageNet weights at torchvision's URL, through the torch hub cache (downloads once, 548 MB)."""
    tv_models = require("torchvision.models", "train", "the VGG19 perceptual loss")
    url = tv_models.VGG19_Weights.IMAGENET1K_V1.url
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, SSL, hash mismatch, ...
        raise ModelLoadError(
            f"could not get the VGG19 ImageNet weights from torchvision ({type(exc).__name__}: {exc}); "
            + _OFFLINE_HINT
        ) from exc
    return _features_from_state(state, url)


def _short_reason(exc: BaseException) -> str:
    """Why torchvision's VGG19 could not be had, without the advice that follows in the error."""
    cause = exc.__cause__
    if isinstance(exc, ModelLoadError) and cause is not None:
        return f"{type(cause).__name__}: {first_line(cause)}"
    return first_line(exc)


class PerceptualLoss(nn.Module):
    """Distance between VGG ImageNet features of two images (ESRGAN's perceptual loss), frozen.

    Inputs are RGB in [0, 1]; they are normalised with the ImageNet mean and standard deviation before VGG.
    For each selected layer the loss is the mean absolute difference of the feature maps, and the layers
    are summed with their weights. The target's features carry no gradient. The network stays in eval mode
    with ``requires_grad=False`` even when a parent module is put in training mode.

    Args:
        weights_path: a local file with a VGG16 or VGG19 ``features.N.*`` state dict (torchvision layout;
            ``classifier.*`` keys are ignored). ``None`` takes VGG19 ImageNet from torchvision, which needs
            the network the first time; when that fails (offline, no torchvision) it warns in one line and
            uses the bundled VGG16 ImageNet features (:data:`BUNDLED_VGG16_SOURCE`).
        layers: which layers and with what weight: a mapping ``{"conv5_4": 1.0}`` or a sequence of names
            (weight 1 each). Names are those of :func:`vgg_layer_names` (``convB_I`` is the output of the
            convolution before its ReLU, ``reluB_I`` after). ``None`` means ESRGAN's choice: ``conv5_4`` for
            VGG19 and the corresponding ``conv5_3`` for VGG16.
        device: where the network lives.

    Raises:
        ModelLoadError: the weights cannot be read (a bad ``weights_path``, a damaged bundled file).
        InputError: a layer name that the detected VGG does not have, or a negative weight.
    """

    def __init__(
        self,
        weights_path: str | Path | None = None,
        layers: Mapping[str, float] | Sequence[str] | None = None,
        *,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        if weights_path is not None:
            vgg_type, state = _features_from_file(Path(weights_path))
            source = str(weights_path)
        else:
            try:
                vgg_type, state = _features_from_torchvision()
                source = "torchvision VGG19_Weights.IMAGENET1K_V1"
            except (ModelLoadError, MissingDependencyError) as exc:
                vgg_type, state = _features_bundled()
                source = BUNDLED_VGG16_SOURCE
                log.warning(
                    "VGG19 perceptual weights unavailable (%s); using %s, layer conv5_3 by default",
                    _short_reason(exc),
                    BUNDLED_VGG16_SOURCE,
                )
        self.vgg_type = vgg_type
        self.weights_source = source
        """Where the VGG weights came from: the torchvision VGG19, the bundled VGG16, or the given file."""
        names = vgg_layer_names(vgg_type)
        if layers is None:
            layers = {_DEFAULT_LAYER[vgg_type]: 1.0}
        elif isinstance(layers, str):
            raise InputError(f"layers must be a mapping or a list of names, got the string {layers!r}")
        elif not isinstance(layers, Mapping):
            layers = dict.fromkeys(layers, 1.0)
        if not layers:
            raise InputError("layers must name at least one VGG layer, got none")
        for name, weight in layers.items():
            if name not in names:
                raise InputError(f"{vgg_type} has no layer {name!r}; expected one of {names}")
            if weight < 0:
                raise InputError(f"layer weights must be >= 0, got {name}={weight}")
        self.layer_weights: dict[str, float] = {name: float(w) for name, w in layers.items()}
        self._index = {names.index(name): name for name in self.layer_weights}

        features = _build_features(vgg_type, state, self.weights_source)
        try:
            features.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"the {vgg_type} weights do not fit the {vgg_type} layout: {exc}") from exc
        # Only run as deep as the deepest selected layer.
        self.features = features[: max(self._index) + 1]
        self.features.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.to(device)
        super().train(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Stay in eval mode whatever ``mode`` says: the loss network is frozen."""
        return super().train(False)

    def _extract(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"Expected N x 3 x H x W RGB images in [0, 1], but got shape {tuple(x.shape)}")
        h = (x.to(self.mean.dtype) - self.mean) / self.std
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self._index:
                out[self._index[i]] = h
        return out

    def forward(self, sr: torch.Tensor, hr: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Weighted sum over layers of the mean absolute feature difference.

        Args:
            sr: ``N x 3 x H x W`` images to score (gradients flow into them).
            hr: ``N x 3 x H x W`` targets, same shape (treated as constants).
            reduction: ``"mean"`` (a scalar, the mean over the batch) or ``"none"`` (shape ``(N,)``).

        Returns:
            The loss.
        """
        if sr.shape != hr.shape:
            raise InputError(
                f"sr and hr must have the same shape, got {tuple(sr.shape)} and {tuple(hr.shape)}"
            )
        if reduction not in ("mean", "none"):
            raise InputError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        total = self._per_image(sr, hr, groups=1)
        return total.mean() if reduction == "mean" else total

    def group_losses(self, preds: Sequence[torch.Tensor], hr: torch.Tensor) -> torch.Tensor:
        """The loss of each prediction group against one target batch, in one VGG pass.

        Equal to ``torch.stack([self(p, hr) for p in preds])`` but the predictions go through VGG as one
        batch and the target's features are computed once, not once per group (MRS fine-tuning scores
        several groups of predictions against the same HR crops every iteration).

        Args:
            preds: ``G`` tensors of shape ``N x 3 x H x W`` (gradients flow into them).
            hr: the ``N x 3 x H x W`` targets (treated as constants).

        Returns:
            Shape ``(G,)``: the batch-mean loss of each group.
        """
        if not preds:
            raise InputError("group_losses needs at least one prediction group, got none")
        for pred in preds:
            if pred.shape != hr.shape:
                raise InputError(
                    f"every group must have the target's shape {tuple(hr.shape)}, got {tuple(pred.shape)}"
                )
        per_image = self._per_image(torch.cat(list(preds)), hr, groups=len(preds))
        return per_image.view(len(preds), hr.shape[0]).mean(1)

    def _per_image(self, sr: torch.Tensor, hr: torch.Tensor, groups: int) -> torch.Tensor:
        """Per-image loss of ``sr`` (``groups`` stacked copies of ``hr``'s batch size) against ``hr``."""
        feats_sr = self._extract(sr)
        with torch.no_grad():
            feats_hr = self._extract(hr)
        total = sr.new_zeros(sr.shape[0], dtype=self.mean.dtype)
        for name, weight in self.layer_weights.items():
            f_sr = feats_sr[name].unflatten(0, (groups, hr.shape[0]))
            diff = (f_sr - feats_hr[name].unsqueeze(0)).abs().flatten(2).mean(2).flatten()
            total = total + weight * diff.to(total.dtype)
        return total


class SRLoss(nn.Module):
    """The SR loss that FGSM/BIM/PGD/CW attack: ``l1_weight * L1 + perceptual_weight * L_percep``.

    With the default weights this is equations 1-2 of the CertSR paper: ``L(f(x), y) = ||f(x) - y||_1 +
    L_percep(f(x), y)`` with the L1 term averaged over pixels and channels.

    Args:
        perceptual: the perceptual loss, or ``None`` for a pure L1 loss (fast; tests, quick CPU runs).
        l1_weight: weight of the L1 term.
        perceptual_weight: weight of the perceptual term (ignored without ``perceptual``).
    """

    def __init__(
        self,
        perceptual: PerceptualLoss | None,
        l1_weight: float = 1.0,
        perceptual_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if l1_weight < 0 or perceptual_weight < 0:
            raise InputError(f"loss weights must be >= 0, got l1={l1_weight}, perceptual={perceptual_weight}")
        self.perceptual = perceptual
        self.l1_weight = float(l1_weight)
        self.perceptual_weight = float(perceptual_weight)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Loss of the prediction ``sr`` against the ground truth ``hr``.

        Args:
            sr: ``N x C x H x W`` model output (unclamped is fine).
            hr: ``N x C x H x W`` ground truth in [0, 1].
            reduction: ``"mean"`` -> a scalar (mean over the batch); ``"none"`` -> one value per image,
                shape ``(N,)``. The attacks use ``"none"`` so that each image is attacked as if alone.

        Returns:
            The loss.
        """
        if sr.shape != hr.shape:
            raise InputError(
                f"sr and hr must have the same shape, got {tuple(sr.shape)} and {tuple(hr.shape)}"
            )
        if reduction not in ("mean", "none"):
            raise InputError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        total = self.l1_weight * (sr - hr).abs().flatten(1).mean(1)
        if self.perceptual is not None and self.perceptual_weight > 0:
            total = total + self.perceptual_weight * self.perceptual(sr, hr, reduction="none").to(total.dtype)
        return total.mean() if reduction == "mean" else total


class RelativisticAverageGANLoss:
    """ESRGAN's relativistic average GAN loss (RaGAN) with binary cross-entropy on logits.

    With ``C`` the discriminator's raw output (logits), real ``x_r`` (HR) and fake ``x_f`` (SR), and
    ``D(a, b) = C(a) - mean(C(b))``:

    * discriminator: ``0.5 * [BCE(D(x_r, x_f), 1) + BCE(D(x_f, x_r), 0)]``;
    * generator: ``loss_weight * 0.5 * [BCE(D(x_r, x_f), 0) + BCE(D(x_f, x_r), 1)]``.

    The detachments reproduce BasicSR's ``ESRGANModel`` exactly: the generator loss takes no gradient
    through the real logits; in the discriminator loss each term takes no gradient through the other
    side's mean (BasicSR computes the two terms in separate backward passes). Pass
    ``fake_pred = D(sr.detach())`` to the discriminator loss.

    Args:
        loss_weight: weight of the generator's adversarial term (ESRGAN: 5e-3). The discriminator loss is
            not weighted, as in BasicSR.
    """

    def __init__(self, loss_weight: float = 5e-3) -> None:
        if loss_weight < 0:
            raise InputError(f"loss_weight must be >= 0, got {loss_weight}")
        self.loss_weight = float(loss_weight)

    @staticmethod
    def _bce(logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)

    @staticmethod
    def _check(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> None:
        if real_pred.shape != fake_pred.shape:
            raise InputError(
                "real and fake discriminator outputs must have the same shape, got "
                f"{tuple(real_pred.shape)} and {tuple(fake_pred.shape)}"
            )

    def generator_loss(self, real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
        """Adversarial loss of the generator (weighted by ``loss_weight``).

        Args:
            real_pred: discriminator logits on HR images (detached here).
            fake_pred: discriminator logits on the generator's SR images (gradients flow to the generator).

        Returns:
            A scalar.
        """
        self._check(real_pred, fake_pred)
        real = real_pred.detach()
        loss_real = self._bce(real - fake_pred.mean(), False)
        loss_fake = self._bce(fake_pred - real.mean(), True)
        return self.loss_weight * 0.5 * (loss_real + loss_fake)

    def discriminator_loss(self, real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
        """Loss of the discriminator.

        Args:
            real_pred: discriminator logits on HR images.
            fake_pred: discriminator logits on **detached** SR images, ``D(sr.detach())``.

        Returns:
            A scalar.
        """
        self._check(real_pred, fake_pred)
        loss_real = self._bce(real_pred - fake_pred.detach().mean(), True)
        loss_fake = self._bce(fake_pred - real_pred.detach().mean(), False)
        return 0.5 * (loss_real + loss_fake)
