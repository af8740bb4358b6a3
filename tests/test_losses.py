"""Perceptual / SR / RaGAN losses and the VGG-style discriminator."""

from __future__ import annotations

import math
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from certsr_rt.errors import InputError, MissingDependencyError, ModelLoadError
from certsr_rt.losses import (
    BUNDLED_VGG16_SOURCE,
    VGG_CONFIGS,
    PerceptualLoss,
    RelativisticAverageGANLoss,
    SRLoss,
    vgg_layer_names,
)
from certsr_rt.models.discriminator import VGGStyleDiscriminator

VGG16_FILE = Path(__file__).resolve().parents[1] / "../shared/assets/weights/vgg16_features_imagenet1k_v1.pth"


def tiny_vgg_state(vgg_type: str, width: int = 4, seed: int = 0, prefix: str = "features.") -> dict:
    """A randomly initialised narrow VGG ``features`` state dict with torchvision's indices."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    in_ch = 3
    for index, name in enumerate(vgg_layer_names(vgg_type)):
        if name.startswith("conv"):
            state[f"{prefix}{index}.weight"] = torch.randn(width, in_ch, 3, 3, generator=gen) * 0.3
            state[f"{prefix}{index}.bias"] = torch.randn(width, generator=gen) * 0.1
            in_ch = width
    return state


@pytest.fixture
def tiny_vgg16_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_vgg16.pth"
    torch.save(tiny_vgg_state("vgg16"), path)
    return path


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------- PerceptualLoss
def torchvision_features(vgg_type: str) -> torch.nn.Sequential:
    """torchvision's VGG ``features`` alone (building the classifier too takes seconds)."""
    vgg = pytest.importorskip("torchvision.models.vgg")
    return vgg.make_layers(vgg.cfgs[{"vgg16": "D", "vgg19": "E"}[vgg_type]])


def test_layer_names_match_torchvision_indices() -> None:
    for vgg_type in ("vgg16", "vgg19"):
        features = torchvision_features(vgg_type)
        names = vgg_layer_names(vgg_type)
        assert len(names) == len(features)
        for name, module in zip(names, features, strict=True):
            kind = {"conv": torch.nn.Conv2d, "relu": torch.nn.ReLU, "pool": torch.nn.MaxPool2d}[name[:4]]
            assert isinstance(module, kind), (vgg_type, name, module)
    assert vgg_layer_names("vgg16")[28] == "conv5_3"
    assert vgg_layer_names("vgg19")[34] == "conv5_4"


@pytest.mark.parametrize("vgg_type", ["vgg16", "vgg19"])
def test_detects_vgg_type_and_default_layer(tmp_path: Path, vgg_type: str) -> None:
    path = tmp_path / f"{vgg_type}.pth"
    torch.save(tiny_vgg_state(vgg_type), path)
    loss = PerceptualLoss(path)
    assert loss.vgg_type == vgg_type
    assert loss.layer_weights == {"vgg16": {"conv5_3": 1.0}, "vgg19": {"conv5_4": 1.0}}[vgg_type]
    # Only as deep as the deepest selected layer: conv5_3 is features[28], conv5_4 features[34].
    assert len(loss.features) == {"vgg16": 29, "vgg19": 35}[vgg_type]


def test_matches_torchvision_vgg16_computation(tmp_path: Path) -> None:
    """Same weights in torchvision's VGG16: the loss is |conv5_3(norm(sr)) - conv5_3(norm(hr))| averaged."""
    torch.manual_seed(0)
    reference = torchvision_features("vgg16").eval()
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in reference.state_dict().items()}, path)
    loss = PerceptualLoss(path)
    sr, hr = images(2, 32, 1), images(2, 32, 2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        fa = reference[:29]((sr - mean) / std)
        fb = reference[:29]((hr - mean) / std)
        expected = (fa - fb).abs().flatten(1).mean(1)
        got = loss(sr, hr, reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert bool((fa < 0).any()), "conv5_3 is taken before its ReLU, so it has negative values"


def test_accepts_full_vgg_state_dict_and_prefixless_keys(tmp_path: Path) -> None:
    state = tiny_vgg_state("vgg19")
    state["classifier.0.weight"] = torch.zeros(2, 2)
    full = tmp_path / "full.pth"
    torch.save(state, full)
    assert PerceptualLoss(full).vgg_type == "vgg19"
    bare = tmp_path / "bare.pth"
    torch.save(tiny_vgg_state("vgg16", prefix=""), bare)
    assert PerceptualLoss(bare).vgg_type == "vgg16"


def test_identical_images_zero_and_different_positive(tiny_vgg16_file: Path) -> None:
    loss = PerceptualLoss(tiny_vgg16_file, layers=["conv1_2", "conv3_3", "conv5_3"])
    a, b = images(seed=1), images(seed=2)
    assert float(loss(a, a)) == 0.0
    assert float(loss(a, b)) > 0.0
    per_image = loss(a, b, reduction="none")
    assert per_image.shape == (2,)
    torch.testing.assert_close(per_image.mean(), loss(a, b))


def test_group_losses_equal_one_call_per_group_with_gradients(tiny_vgg16_file: Path) -> None:
    loss = PerceptualLoss(tiny_vgg16_file, layers={"conv2_2": 0.5, "conv5_3": 1.0})
    hr = images(seed=9)
    preds = [images(seed=s).requires_grad_(True) for s in (1, 2, 3)]
    grouped = loss.group_losses(preds, hr)
    assert grouped.shape == (3,)
    grouped.sum().backward()
    grads = [p.grad.clone() for p in preds]
    for p in preds:
        p.grad = None
    separate = torch.stack([loss(p, hr) for p in preds])
    separate.sum().backward()
    torch.testing.assert_close(grouped, separate)
    for g, p in zip(grads, preds, strict=True):
        torch.testing.assert_close(g, p.grad)
    with pytest.raises(InputError, match="target's shape"):
        loss.group_losses([images(seed=1)[:1]], hr)
    with pytest.raises(InputError, match="at least one"):
        loss.group_losses([], hr)


def test_layer_weights_are_applied(tiny_vgg16_file: Path) -> None:
    a, b = images(seed=1), images(seed=2)
    one = PerceptualLoss(tiny_vgg16_file, layers={"relu2_2": 1.0})(a, b)
    three = PerceptualLoss(tiny_vgg16_file, layers={"relu2_2": 3.0})(a, b)
    torch.testing.assert_close(three, 3 * one)


def test_gradient_reaches_sr_not_hr_and_network_is_frozen(tiny_vgg16_file: Path) -> None:
    loss = PerceptualLoss(tiny_vgg16_file)
    sr = images(seed=1).requires_grad_(True)
    hr = images(seed=2).requires_grad_(True)
    loss(sr, hr).backward()
    assert sr.grad is not None and float(sr.grad.abs().sum()) > 0
    assert hr.grad is None
    assert all(not p.requires_grad for p in loss.parameters())
    assert all(p.grad is None for p in loss.parameters())
    parent = torch.nn.ModuleDict({"perceptual": loss}).train()
    assert parent.training and not loss.training and not loss.features.training


def test_bad_layer_and_bad_files(tmp_path: Path, tiny_vgg16_file: Path) -> None:
    with pytest.raises(InputError, match="conv5_4"):
        PerceptualLoss(tiny_vgg16_file, layers={"conv5_4": 1.0})  # a VGG19 layer
    with pytest.raises(InputError, match="weights must be >= 0"):
        PerceptualLoss(tiny_vgg16_file, layers={"conv5_3": -1.0})
    with pytest.raises(ModelLoadError, match="does not exist"):
        PerceptualLoss(tmp_path / "missing.pth")
    wrong_count = {k: v for k, v in tiny_vgg_state("vgg16").items() if not k.startswith("features.28.")}
    torch.save(wrong_count, tmp_path / "twelve.pth")
    with pytest.raises(ModelLoadError, match="found 12"):
        PerceptualLoss(tmp_path / "twelve.pth")
    (tmp_path / "garbage.pth").write_text("garbage\n")
    garbage = r"^cannot read perceptual weights: .*garbage\.pth: not a torch"
    with pytest.raises(ModelLoadError, match=garbage) as e:
        PerceptualLoss(tmp_path / "garbage.pth")
    assert "\n" not in str(e.value)  # one line, not torch's advice on weights_only
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ModelLoadError, match="features.N.weight"):
        PerceptualLoss(tmp_path / "other.pth")
    loss = PerceptualLoss(tiny_vgg16_file)
    with pytest.raises(InputError, match="same shape"):
        loss(images(size=32), images(size=16))


def test_offline_falls_back_to_the_bundled_vgg16_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("torchvision")

    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with caplog.at_level("WARNING", logger="certsr_rt.losses"):
        loss = PerceptualLoss()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert "Name or service not known" in warnings[0].getMessage()
    assert "bundled VGG16" in warnings[0].getMessage()
    assert loss.vgg_type == "vgg16" and loss.layer_weights == {"conv5_3": 1.0}
    assert loss.weights_source == BUNDLED_VGG16_SOURCE
    assert all(p.dtype == torch.float32 for p in loss.parameters())
    sr, hr = images(seed=1), images(seed=2)
    assert float(loss(sr, hr)) > 0 and float(loss(hr, hr)) == 0


def test_missing_torchvision_falls_back_to_the_bundled_vgg16(monkeypatch: pytest.MonkeyPatch) -> None:
    import certsr_rt.losses as losses_mod

    def missing() -> None:
        raise MissingDependencyError("torchvision", "train", "the VGG19 perceptual loss")

    monkeypatch.setattr(losses_mod, "_features_from_torchvision", missing)
    assert PerceptualLoss().weights_source == BUNDLED_VGG16_SOURCE


def test_bundled_vgg16_is_the_fp16_rounded_shared_file() -> None:
    """The bundled copy is the ImageNet VGG16 of ../shared/assets rounded to fp16 (skip where absent)."""
    from certsr_rt.losses import _features_bundled

    vgg_type, bundled = _features_bundled()
    assert vgg_type == "vgg16" and len(bundled) == 26
    assert all(v.dtype == torch.float32 for v in bundled.values())
    if not VGG16_FILE.is_file():
        pytest.skip("../shared/assets/weights/vgg16_features_imagenet1k_v1.pth is not present")
    original = torch.load(VGG16_FILE, map_location="cpu", weights_only=True)
    for key, value in original.items():
        assert torch.equal(bundled[key.removeprefix("features.")], value.half().float()), key


@pytest.mark.slow
def test_real_vgg16_features_file() -> None:
    if not VGG16_FILE.is_file():
        pytest.skip("../shared/assets/weights/vgg16_features_imagenet1k_v1.pth is not present")
    loss = PerceptualLoss(VGG16_FILE)
    assert loss.vgg_type == "vgg16" and loss.layer_weights == {"conv5_3": 1.0}
    assert sum(VGG_CONFIGS["vgg16"]) == sum(isinstance(m, torch.nn.Conv2d) for m in loss.features)
    gen = torch.Generator().manual_seed(0)
    image = F.interpolate(torch.rand(1, 3, 16, 16, generator=gen), size=64, mode="bicubic").clamp(0, 1)
    blurred = F.avg_pool2d(F.pad(image, (1, 1, 1, 1), mode="reflect"), 3, 1)
    noisy = (image + 0.1 * torch.randn(image.shape, generator=gen)).clamp(0, 1)
    assert float(loss(image, image)) == 0.0
    assert 0.0 < float(loss(blurred, image)) < float(loss(noisy, image))


# ------------------------------------------------------------------------------------------------- SRLoss
def test_srloss_l1_only_and_weighted_sum(tiny_vgg16_file: Path) -> None:
    sr, hr = images(seed=1), images(seed=2)
    l1 = (sr - hr).abs().mean()
    torch.testing.assert_close(SRLoss(None)(sr, hr), l1)
    perceptual = PerceptualLoss(tiny_vgg16_file)
    combined = SRLoss(perceptual, l1_weight=0.5, perceptual_weight=2.0)(sr, hr)
    torch.testing.assert_close(combined, 0.5 * l1 + 2.0 * perceptual(sr, hr))


def test_srloss_per_image_is_batch_independent(tiny_vgg16_file: Path) -> None:
    loss = SRLoss(PerceptualLoss(tiny_vgg16_file))
    sr, hr = images(3, seed=1), images(3, seed=2)
    batch = loss(sr, hr, reduction="none")
    alone = torch.stack([loss(sr[i : i + 1], hr[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, alone)


def test_srloss_rejects_bad_arguments() -> None:
    with pytest.raises(InputError):
        SRLoss(None, l1_weight=-1.0)
    with pytest.raises(InputError, match="reduction"):
        SRLoss(None)(images(), images(), reduction="sum")


# ------------------------------------------------------------------------------------------------ RaGAN
def test_ragan_values() -> None:
    gan = RelativisticAverageGANLoss(loss_weight=1.0)
    equal = torch.zeros(4, 1)
    # D(x_r, x_f) = D(x_f, x_r) = 0 -> every BCE term is log 2.
    assert math.isclose(float(gan.generator_loss(equal, equal)), math.log(2), rel_tol=1e-6)
    assert math.isclose(float(gan.discriminator_loss(equal, equal)), math.log(2), rel_tol=1e-6)
    real, fake = torch.full((4, 1), 20.0), torch.full((4, 1), -20.0)
    assert float(gan.discriminator_loss(real, fake)) < 1e-6  # a perfect discriminator
    assert float(gan.generator_loss(real, fake)) > 19.0  # ...fools no one
    weighted = RelativisticAverageGANLoss(loss_weight=5e-3)
    torch.testing.assert_close(weighted.generator_loss(real, fake), 5e-3 * gan.generator_loss(real, fake))


def test_ragan_gradients_follow_basicsr() -> None:
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(4, 1, generator=gen).requires_grad_(True)
    fake = torch.randn(4, 1, generator=gen).requires_grad_(True)
    gan = RelativisticAverageGANLoss(loss_weight=1.0)
    gan.generator_loss(real, fake).backward()
    assert real.grad is None and fake.grad is not None
    # BasicSR: l_d_real uses fake.detach(), l_d_fake uses real.detach(), two backward passes, each x 0.5.
    real2 = real.detach().clone().requires_grad_(True)
    fake2 = fake.detach().clone().requires_grad_(True)
    bce = F.binary_cross_entropy_with_logits
    (0.5 * bce(real2 - fake2.detach().mean(), torch.ones_like(real2))).backward()
    (0.5 * bce(fake2 - real2.detach().mean(), torch.zeros_like(fake2))).backward()
    real3 = real.detach().clone().requires_grad_(True)
    fake3 = fake.detach().clone().requires_grad_(True)
    gan.discriminator_loss(real3, fake3).backward()
    torch.testing.assert_close(real3.grad, real2.grad)
    torch.testing.assert_close(fake3.grad, fake2.grad)
    with pytest.raises(InputError, match="same shape"):
        gan.generator_loss(torch.zeros(2, 1), torch.zeros(3, 1))


# ---------------------------------------------------------------------------------------- discriminator
@pytest.mark.parametrize("size", [128, 256])
def test_discriminator_shapes_and_training_step(size: int) -> None:
    torch.manual_seed(0)
    net = VGGStyleDiscriminator(num_in_ch=3, num_feat=4, input_size=size).train()
    x = torch.rand(2, 3, size, size)
    out = net(x)
    assert out.shape == (2, 1)
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert ("conv5_0.weight" in net.state_dict()) == (size == 256)


def test_discriminator_basicsr_parameter_names() -> None:
    net = VGGStyleDiscriminator(num_feat=64)
    state = net.state_dict()
    assert state["conv0_0.weight"].shape == (64, 3, 3, 3) and "conv0_0.bias" in state
    assert "conv0_1.bias" not in state and "bn0_1.running_mean" in state
    assert state["conv4_1.weight"].shape == (512, 512, 4, 4)
    assert state["linear1.weight"].shape == (100, 512 * 4 * 4)
    assert state["linear2.weight"].shape == (1, 100)


def test_discriminator_refuses_other_sizes() -> None:
    with pytest.raises(InputError, match="128 or 256"):
        VGGStyleDiscriminator(input_size=192)
    net = VGGStyleDiscriminator(num_feat=4)
    with pytest.raises(InputError, match="N x 3 x 128 x 128"):
        net(torch.rand(1, 3, 96, 96))
