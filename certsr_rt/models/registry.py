"""Named models: what each registered name means, where its weights come from, and its recommended σ.

A :class:`ModelSpec` is pure data. :func:`certsr_rt.models.load_model` turns a name into a loaded
:class:`~certsr_rt.models.SRModel`; this module only describes. What an architecture is (its module, scale,
detection) is in its own file under ``models/arch`` (:func:`~certsr_rt.models.arch.get_architecture`).

The ``tiny-*`` entries are test-only: a few thousand parameters, no file, weights drawn from a fixed seed,
so that every test of the pipeline runs in milliseconds on CPU (timm's ``test_vit`` idea).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from certsr_rt.errors import ModelLoadError
from certsr_rt.models.arch import Architecture, architectures, find_architecture, get_architecture

__all__ = [
    "DEFAULT_MODEL",
    "ModelSpec",
    "get_spec",
    "list_specs",
    "registered_names",
]

DEFAULT_MODEL = "certsr-compact-x4"


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        name: the registered name users type (``--model realesrgan-x4plus``).
        architecture: a registered architecture's name (``"RRDBNet"``, ``"SRVGGNetCompact"``: see
            :func:`~certsr_rt.models.arch.architectures`).
        hyperparameters: keyword arguments that rebuild the module with the architecture's class.
        file: file name of the bundled weights inside ``certsr_rt/models/weights/``, or ``None`` for a
            test-only model whose weights are generated from ``seed``.
        sha256: sha256 of the bundled file (the same value as in ``weights/SHA256SUMS``), or ``None`` when
            there is no file.
        license: SPDX identifier of the weights' license.
        description: one line for humans (``certsr-rt models``).
        default_sigma: recommended σ of the Gaussian noise for median smoothing, in [0, 1] image units.
        is_default: whether this is :data:`DEFAULT_MODEL`.
        seed: seed of the local ``torch.Generator`` that draws the weights of a model without a file.
    """

    name: str
    architecture: str
    hyperparameters: Mapping[str, Any] = field(hash=False)  # a mapping is unhashable; name identifies
    file: str | None
    sha256: str | None
    license: str
    description: str
    default_sigma: float
    is_default: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if find_architecture(self.architecture) is None:
            names = sorted(a.name for a in architectures())
            raise ValueError(f"architecture must be one of {names}, got {self.architecture!r}")
        # A read-only view, so that a caller cannot change the registry through a spec it was handed.
        object.__setattr__(self, "hyperparameters", MappingProxyType(dict(self.hyperparameters)))

    @property
    def arch(self) -> Architecture:
        """The registered :class:`~certsr_rt.models.arch.Architecture` of this model."""
        return get_architecture(self.architecture)

    @property
    def is_test_only(self) -> bool:
        """True for the ``tiny-*`` models: random weights, for tests only."""
        return self.file is None

    @property
    def scale(self) -> int:
        """Upscaling factor of the model."""
        return self.arch.scale(self.hyperparameters)

    @property
    def num_parameters(self) -> int:
        """Number of parameters, counted on an empty (meta-device) module: no weights are read."""
        module = self.arch.build(self.hyperparameters, device="meta")
        return sum(p.numel() for p in module.parameters())


# How the real models' sigma was chosen (σ belongs to the model): an LPIPS sweep on Set5 + Set14
# (benchmarks/bench_quality.py), keeping the largest swept sigma whose LPIPS cost over the plain model is
# at most 0.01 on both clean inputs and inputs with N(0, 0.03^2) sensor noise. Both bundled models were
# trained on noisy degradations already, so smoothing mostly softens them: the chosen sigma is small.
# realesr-animevideov3's network; certsr-compact-x4 is the same network fine-tuned.
_ANIMEVIDEOV3_X4 = dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4, act_type="prelu")

_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="realesrgan-x4plus",
            architecture="RRDBNet",
            hyperparameters=dict(
                num_in_ch=3, num_out_ch=3, scale=4, num_feat=64, num_block=23, num_grow_ch=32
            ),
            file="realesrgan_x4plus.pth",
            sha256="086cb22a3e5b7727080a43be34a4b953085bf801c6938834dea72adfd7ce028d",
            license="BSD-3-Clause",
            description="Real-ESRGAN x4plus (ESRGAN generator, 23 RRDB blocks): best quality, slow",
            default_sigma=0.01,  # LPIPS sweep: benchmarks/results/quality_set5_set14.md
        ),
        ModelSpec(
            name="realesr-animevideov3-x4",
            architecture="SRVGGNetCompact",
            hyperparameters=_ANIMEVIDEOV3_X4,
            file="realesr_animevideov3_x4.pth",
            sha256="b0b8a8b95789674e6b208eb1e798377af694497b9becfa427f4cb7985944636a",
            license="BSD-3-Clause",
            description="Real-ESRGAN animevideov3 (compact, 16 convs): fast, for video and CPU",
            default_sigma=0.01,  # LPIPS sweep: benchmarks/results/quality_set5_set14_animevideov3.md
        ),
        ModelSpec(
            name="certsr-compact-x4",
            architecture="SRVGGNetCompact",
            hyperparameters=_ANIMEVIDEOV3_X4,
            file="certsr_compact_x4.pth",
            sha256="599409b1d7b46404db2616d9f7822400efc333f1e6e95e328cb712a8747269fc",
            license="BSD-3-Clause",
            description="CertSR compact: animevideov3 MRS-fine-tuned by certsr-rt (1422 CPU iterations)",
            # LPIPS sweep on Set5 + Set14: benchmarks/results/certsr_compact_x4.md
            default_sigma=0.06,
            is_default=True,
        ),
        ModelSpec(
            name="tiny-rrdbnet",
            architecture="RRDBNet",
            hyperparameters=dict(num_in_ch=3, num_out_ch=3, scale=4, num_feat=8, num_block=1, num_grow_ch=4),
            file=None,
            sha256=None,
            license="BSD-3-Clause",
            description="test only: tiny RRDBNet (1 block, nf 8), random weights from a fixed seed",
            default_sigma=0.06,
            seed=0,
        ),
        ModelSpec(
            name="tiny-srvgg",
            architecture="SRVGGNetCompact",
            hyperparameters=dict(
                num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4, act_type="prelu"
            ),
            file=None,
            sha256=None,
            license="BSD-3-Clause",
            description="test only: tiny SRVGGNetCompact (2 convs, nf 8), random weights from a fixed seed",
            default_sigma=0.06,
            seed=1,
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The spec registered under ``name``.

    Args:
        name: a registered name, e.g. ``"realesrgan-x4plus"``.

    Returns:
        The model's spec.

    Raises:
        ModelLoadError: ``name`` is not registered (the message lists the registered names).
    """
    try:
        return _SPECS[name]
    except KeyError:
        raise ModelLoadError(f"no registered model {name!r} (registered: {registered_names()})") from None


def registered_names() -> str:
    """The user-facing registered names, comma-separated, for messages (test-only models left out)."""
    return ", ".join(s.name for s in list_specs(include_test=False))


def list_specs(include_test: bool = True) -> list[ModelSpec]:
    """All registered specs, the default first, test-only models last.

    Args:
        include_test: include the ``tiny-*`` test-only models.

    Returns:
        The specs in display order.
    """
    specs = [s for s in _SPECS.values() if include_test or not s.is_test_only]
    return sorted(specs, key=lambda s: (not s.is_default, s.is_test_only))
