"""Registry, SRModel descriptor, tiny test models, bundled models and the ``models`` CLI command."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import certsr_rt.models as models
from certsr_rt.errors import InputError, ModelLoadError
from certsr_rt.models import DEFAULT_MODEL, SRModel, get_spec, list_specs, load_model
from certsr_rt.models import loader as loader_mod

WEIGHTS = Path(loader_mod.__file__).parent / "weights"


def run(model: SRModel, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


# ---------------------------------------------------------------------------------------------- registry


def test_public_names():
    assert set(models.__all__) == {
        "RRDBNet",
        "SRVGGNetCompact",
        "SRModel",
        "ModelSpec",
        "load_model",
        "list_specs",
        "get_spec",
        "DEFAULT_MODEL",
    }
    for name in models.__all__:
        assert getattr(models, name) is not None


def test_registry_contents():
    names = [s.name for s in list_specs()]
    assert names == [
        "certsr-compact-x4",
        "realesrgan-x4plus",
        "realesr-animevideov3-x4",
        "tiny-rrdbnet",
        "tiny-srvgg",
    ]
    assert DEFAULT_MODEL == "certsr-compact-x4"
    assert [s.name for s in list_specs() if s.is_default] == [DEFAULT_MODEL]
    assert [s.name for s in list_specs(include_test=False)] == names[:3]
    for spec in list_specs():
        assert spec.scale == 4 and spec.license == "BSD-3-Clause"
        assert 0 < spec.default_sigma < 0.2
        if spec.is_test_only:
            assert spec.file is None and spec.sha256 is None and "test" in spec.description
            assert spec.default_sigma == 0.06
    assert get_spec("tiny-rrdbnet").hyperparameters["num_block"] == 1
    assert get_spec("tiny-srvgg").hyperparameters["num_conv"] == 2


def test_spec_hashes_match_sha256sums():
    sums = dict(reversed(line.split()) for line in (WEIGHTS / "SHA256SUMS").read_text().splitlines() if line)
    for spec in list_specs(include_test=False):
        assert spec.sha256 == sums[spec.file]
        assert (WEIGHTS / spec.file).is_file()


def test_spec_is_frozen_and_read_only():
    spec = get_spec("tiny-srvgg")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.hyperparameters["num_conv"] = 100  # type: ignore[index]
    assert hash(spec) == hash(get_spec("tiny-srvgg"))


def test_unknown_spec_lists_names():
    registered = "registered: certsr-compact-x4, realesrgan-x4plus, realesr-animevideov3-x4"
    with pytest.raises(ModelLoadError, match=registered):
        get_spec("esrgan-x16")


def test_num_parameters_without_weights():
    assert get_spec("realesrgan-x4plus").num_parameters == 16_697_987
    assert get_spec("realesr-animevideov3-x4").num_parameters == 621_424


# ---------------------------------------------------------------------------------------- tiny test models


@pytest.mark.parametrize("name", ["tiny-rrdbnet", "tiny-srvgg"])
def test_tiny_models_are_deterministic_and_leave_global_rng_alone(name):
    state = torch.random.get_rng_state()
    a = load_model(name)
    b = load_model(name)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.module.parameters(), b.module.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    assert a.source.startswith(f"generated:{name}")
    assert a.default_sigma == 0.06 and a.name == name


def test_tiny_models_differ_from_each_other_and_are_not_constant():
    a, b = load_model("tiny-rrdbnet"), load_model("tiny-srvgg")
    assert a.sha256 != b.sha256
    y = run(a, torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0)))
    assert torch.isfinite(y).all() and y.std() > 0


# -------------------------------------------------------------------------------------------- descriptor


@pytest.mark.parametrize("name", ["tiny-rrdbnet", "tiny-srvgg"])
@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (8, 8)])
def test_call_contract_shapes(name, hw):
    model = load_model(name)
    assert not model.module.training
    assert (model.device, model.dtype) == (torch.device("cpu"), torch.float32)
    y = run(model, torch.rand(2, 3, *hw))
    assert y.shape == (2, 3, hw[0] * 4, hw[1] * 4) and y.dtype == torch.float32


def test_call_does_not_clamp_and_passes_gradients():
    model = load_model("tiny-srvgg")
    x = torch.full((1, 3, 4, 4), 3.0, requires_grad=True)  # far outside [0, 1]
    y = model(x)
    assert y.max() > 1.5  # the nearest-upsampled skip carries the 3.0 through, unclamped
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.rand(3, 4, 4), "N x C x H x W"),
        (torch.rand(1, 4, 4, 4), "expected 3 input channels, got 4"),
        (torch.rand(1, 3, 4, 4, dtype=torch.float64), "expected input dtype torch.float32"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "expected input dtype torch.float32"),
        (torch.rand(1, 3, 0, 4), "H, W >= 1"),
    ],
)
def test_call_rejects_bad_inputs(x, match):
    with pytest.raises(InputError, match=match):
        load_model("tiny-rrdbnet")(x)


def test_to_returns_self_and_casts():
    model = load_model("tiny-srvgg")
    assert model.to("cpu", torch.float64) is model
    assert model.dtype == torch.float64
    assert run(model, torch.rand(1, 3, 2, 2, dtype=torch.float64)).dtype == torch.float64


def test_repr_is_short():
    text = repr(load_model("tiny-rrdbnet"))
    assert "tiny-rrdbnet" in text and "Conv2d" not in text


def test_descriptor_fields():
    model = load_model("tiny-rrdbnet")
    assert (model.architecture, model.scale, model.in_channels, model.out_channels) == ("RRDBNet", 4, 3, 3)
    assert model.supports_half is True
    assert model.num_parameters == get_spec("tiny-rrdbnet").num_parameters
    rebuilt = models.RRDBNet(**model.hyperparameters)
    rebuilt.load_state_dict(model.module.state_dict())


# ---------------------------------------------------------------------------- architectures, one file each


class ToyShuffleNet(torch.nn.Module):
    """A toy x2 architecture defined here: two convolutions and a pixel shuffle, on even sizes only."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 4) -> None:
        super().__init__()
        self.toy_head = torch.nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.toy_tail = torch.nn.Conv2d(num_feat, num_out_ch * 4, 3, 1, 1)
        self.shuffle = torch.nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] % 2 or x.shape[3] % 2:  # what its size multiple promises the descriptor pads away
            raise ValueError(f"ToyShuffleNet needs even sizes, got {tuple(x.shape)}")
        return self.shuffle(self.toy_tail(torch.relu(self.toy_head(x))))


def _detect_toy(sd: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]] | None:
    # Its own layout, and an older one with other names that it converts (as rrdbnet.py does).
    if set(sd) == {"head.weight", "head.bias", "tail.weight", "tail.bias"}:
        sd = {f"toy_{k}": v for k, v in sd.items()}
    if set(sd) != {"toy_head.weight", "toy_head.bias", "toy_tail.weight", "toy_tail.bias"}:
        return None
    num_feat, num_in = sd["toy_head.weight"].shape[:2]
    hp = {
        "num_in_ch": int(num_in),
        "num_out_ch": int(sd["toy_tail.weight"].shape[0]) // 4,
        "num_feat": int(num_feat),
    }
    return hp, sd


@pytest.fixture
def toy_architecture():
    from certsr_rt.models.arch import Architecture, register_architecture, unregister_architecture

    arch = register_architecture(
        Architecture(
            name="ToyShuffleNet",
            module=ToyShuffleNet,
            detect=_detect_toy,
            scale=lambda hp: 2,
            bytes_per_lr_pixel=500,
            supports_half=False,
            size_multiple=lambda hp: 2,
        )
    )
    yield arch
    unregister_architecture(arch.name)


@pytest.mark.parametrize("layout", ["own", "old"])
def test_an_architecture_registered_from_a_test_file_loads_and_runs(toy_architecture, tmp_path, layout):
    from certsr_rt.models.arch import bytes_per_lr_pixel, tile_limits
    from certsr_rt.models.registry import ModelSpec
    from certsr_rt.runtime.upscaler import Upscaler
    from certsr_rt.smoothing.config import SmoothingConfig

    torch.manual_seed(0)
    module = ToyShuffleNet(num_feat=4).eval()
    sd = module.state_dict()
    if layout == "old":
        sd = {k[len("toy_") :]: v for k, v in sd.items()}
    path = tmp_path / "toy.pth"
    torch.save({"params_ema": sd}, path)
    model = load_model(path)
    assert (model.architecture, model.scale, model.in_channels, model.out_channels) == (
        "ToyShuffleNet",
        2,
        3,
        3,
    )
    assert model.hyperparameters == {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 4}
    assert (model.size_multiple, model.supports_half, model.name) == (2, False, "toy")
    even = torch.rand(1, 3, 6, 8)
    with torch.inference_mode():
        assert torch.equal(run(model, even), module(even))
    assert run(model, torch.rand(2, 3, 5, 7)).shape == (2, 3, 10, 14)  # odd: padded to 2, then cropped
    # The runtime asks the architecture, never its name: memory figure, tile limits (none measured: the
    # strictest of all), and the smoothed upscale itself.
    assert bytes_per_lr_pixel("ToyShuffleNet") == 500
    assert tile_limits("ToyShuffleNet").min_tile == 96
    image = (torch.rand(6, 8, 3) * 255).to(torch.uint8).numpy()
    with Upscaler(model, SmoothingConfig(sigma=0.05, samples=3, seed=0), device="cpu", tile=0) as up:
        assert up(image).shape == (12, 16, 3) and up.backend.precision == "fp32"
    spec = ModelSpec(
        name="toy",
        architecture="ToyShuffleNet",
        hyperparameters=model.hyperparameters,
        file=None,
        sha256=None,
        license="MIT",
        description="test only",
        default_sigma=0.05,
    )
    assert spec.scale == 2 and spec.num_parameters == model.num_parameters


def test_architecture_registry_refuses_duplicates_and_unknown_names(toy_architecture):
    from certsr_rt.models.arch import (
        architectures,
        get_architecture,
        register_architecture,
        unregister_architecture,
    )

    assert [a.name for a in architectures()] == ["RRDBNet", "SRVGGNetCompact", "ToyShuffleNet"]
    with pytest.raises(ValueError, match="'ToyShuffleNet' is registered already"):
        register_architecture(toy_architecture)
    with pytest.raises(ValueError, match="'RRDBNet' is not an architecture registered at run time"):
        unregister_architecture("RRDBNet")
    with pytest.raises(ModelLoadError, match="unknown architecture 'EDSR'; expected one of"):
        get_architecture("EDSR")
    with pytest.raises(ValueError, match="architecture must be one of"):
        dataclasses.replace(get_spec("tiny-srvgg"), architecture="EDSR")


def test_unregistered_architecture_is_not_detected(tmp_path):
    torch.save(ToyShuffleNet().state_dict(), tmp_path / "toy.pth")
    with pytest.raises(ModelLoadError, match="unrecognised state dict .*toy_head.weight"):
        load_model(tmp_path / "toy.pth")


# --------------------------------------------------------------------------------------- bundled models


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,arch,params",
    [("realesrgan-x4plus", "RRDBNet", 16_697_987), ("realesr-animevideov3-x4", "SRVGGNetCompact", 621_424)],
)
def test_bundled_models_load_and_run(name, arch, params):
    spec = get_spec(name)
    model = load_model(name)
    assert (model.architecture, model.num_parameters, model.scale) == (arch, params, 4)
    assert model.sha256 == spec.sha256 and model.default_sigma == spec.default_sigma
    assert Path(model.source).name == spec.file
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = run(model, x)
    assert y.shape == (1, 3, 32, 32) and torch.isfinite(y).all()
    # A real SR model roughly preserves the image: compare with a nearest upsample.
    ref = torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")
    assert (y - ref).abs().mean() < 0.25


# ---------------------------------------------------------------------------------------------------- CLI


def test_models_command_prints_table():
    typer = pytest.importorskip("typer")
    from typer.testing import CliRunner

    from certsr_rt.cli.models import models_command

    app = typer.Typer()
    app.command("models")(models_command)
    app.command("other")(lambda: None)  # two commands, so "models" is a sub-command as in the real app
    result = CliRunner().invoke(app, ["models", "--all"])
    assert result.exit_code == 0, result.output
    out = result.output
    for spec in list_specs():
        assert spec.name in out
    assert "16,697,987" in out and "621,424" in out and "BSD-3-Clause" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert lines["certsr-compact-x4"].rstrip().endswith("default")
    assert lines["tiny-rrdbnet"].rstrip().endswith("test")
    assert lines["tiny-srvgg"].rstrip().endswith("test")
    help_result = CliRunner().invoke(app, ["models", "--help"])
    assert "List the registered models" in help_result.output


def test_bundle_weights_script_writes_the_shipped_layout(tmp_path: Path) -> None:
    import hashlib
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "bundle_weights.py"
    spec = importlib.util.spec_from_file_location("bundle_weights", script)
    assert spec is not None and spec.loader is not None
    bundle_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle_weights)

    src = load_model("tiny-srvgg")
    ckpt = tmp_path / "trained.pth"
    torch.save({"params_ema": src.module.state_dict()}, ckpt)
    out = tmp_path / "bundled.pth"
    digest = bundle_weights.bundle(ckpt, out)
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()
    raw = torch.load(out, weights_only=True)
    assert set(raw) == {"params_ema"}
    for key, value in raw["params_ema"].items():
        assert value.dtype == (torch.float16 if value.dim() == 4 else torch.float32), key
    again = load_model(out)
    x = torch.rand(1, 3, 12, 12)
    torch.testing.assert_close(run(again, x), run(src, x), atol=2e-3, rtol=0)


def test_cli_default_model_is_the_registry_default() -> None:
    import inspect

    from certsr_rt.cli.upscale import upscale_command
    from certsr_rt.runtime.upscaler import Upscaler

    assert inspect.signature(upscale_command).parameters["model"].default == DEFAULT_MODEL
    assert inspect.signature(Upscaler).parameters["model"].default == DEFAULT_MODEL


@pytest.mark.skipif(not (WEIGHTS / "certsr_compact_x4.pth").is_file(), reason="bundled weights missing")
def test_certsr_compact_is_registered_with_its_sigma_and_loads() -> None:
    spec = get_spec("certsr-compact-x4")
    assert spec.is_default and spec.default_sigma == 0.06 and spec.architecture == "SRVGGNetCompact"
    model = load_model("certsr-compact-x4")
    base = load_model("realesr-animevideov3-x4")
    assert model.default_sigma == 0.06 and model.sha256 == spec.sha256
    coarse = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    x = torch.nn.functional.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
    out, ref = run(model, x), run(base, x)
    assert out.shape == (1, 3, 64, 64)
    # a smooth image keeps its brightness; the fine-tuned weights are not the base model's
    assert abs(float(out.mean() - x.mean())) < 0.05
    assert float((out - ref).abs().mean()) > 1e-3
