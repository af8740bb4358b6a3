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
