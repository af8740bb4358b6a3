"""Training: config, data stream, MRS/adversarial steps, checkpoints, exact resume, CLI (CPU, tiny models)."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import typer
from helpers import write_tiny_vgg16
from typer.testing import CliRunner

from certsr_rt.errors import InputError
from certsr_rt.io.pairs import downscale_bicubic
from certsr_rt.models import load_model
from certsr_rt.smoothing.aggregate import median
from certsr_rt.train import MODES, TrainConfig, Trainer, find_latest_state
from certsr_rt.train.checkpoint import atomic_save, load_state_file, trim_log
from certsr_rt.train.control import LOG_KEYS, LOSS_LOG, LossLog, StopControl
from certsr_rt.train.data import CropStream, StreamBatchSampler, read_image
from certsr_rt.train.distributed import DistInfo
from certsr_rt.train.steps import (
    GAN,
    LossWeights,
    MRSGroups,
    StepParts,
    adversarial_step,
    attack_generator,
    discriminator_update,
    mrs_predictions,
    mrs_step,
    update,
)

# --- fixtures --------------------------------------------------------------------------------------------


def write_images(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    """Smooth random colour images (blurred noise plus a gradient), as PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        noise = rng.random((h, w, 3)) * 255
        ramp = np.linspace(0, 120, w)[None, :, None]
        img = np.clip(cv2.GaussianBlur(noise, (7, 7), 2.0) * 0.6 + ramp, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), img)
    return folder


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_vgg16(tmp_path_factory.mktemp("vgg") / "vgg16_tiny.pth")


@pytest.fixture(scope="module")
def hr_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_images(tmp_path_factory.mktemp("hr_small"), [(48, 40), (40, 56), (44, 44)])


@pytest.fixture(scope="module")
def hr_single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 32x32 image: with hr_crop 32 and no augmentation every batch is the same crop (overfitting)."""
    return write_images(tmp_path_factory.mktemp("hr_single"), [(32, 32)], seed=3)


@pytest.fixture(scope="module")
def hr_gan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images large enough for the 128-pixel discriminator."""
    return write_images(tmp_path_factory.mktemp("hr_gan"), [(136, 140), (130, 132)], seed=5)


def tiny_config(vgg: Path, hr: Path, out: Path, **changes: object) -> TrainConfig:
    base: dict[str, object] = dict(
        model="tiny-srvgg",
        hr_dir=str(hr),
        hr_crop=32,
        batch_size=2,
        iterations=4,
        perceptual_weights=str(vgg),
        perceptual_layers=("conv1_2",),
        gan_weight=0.0,
        output_dir=str(out),
        log_every=1,
        save_every=1000,
        progress=False,
    )
    base.update(changes)
    return TrainConfig(**base)  # type: ignore[arg-type]


def read_log(out: Path) -> list[dict[str, float]]:
    lines = (out / "loss_log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def quiet(_: str) -> None:
    return None


# --- config ----------------------------------------------------------------------------------------------


def test_defaults_are_the_papers() -> None:
    cfg = TrainConfig()
    assert cfg.mode == "mrs" and cfg.lr == 1e-4 and cfg.betas == (0.9, 0.99)
    assert cfg.mrs_sigmas == (0.03, 0.2) and cfg.mrs_draws == 2 and cfg.mrs_clean
    assert cfg.mrs_copies == 5 and cfg.mrs_group_sigmas == (0.03, 0.2, 0.0)
    assert cfg.batch_size == 5 and cfg.hr_crop == 480 and cfg.iterations == 59_000
    assert cfg.ema_decay == 0.999


def test_config_file_then_overrides(tmp_path: Path) -> None:
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("mode: ad-bim\nhr-crop: 128\nmrs_sigmas: [0.05, 0.1]\nlr: 2.0e-4\nbatch_size: 4\n")
    cfg = TrainConfig.load(yaml_file, {"batch_size": 8, "lr": None, "augment": False})
    assert cfg.mode == "ad-bim" and cfg.hr_crop == 128 and cfg.mrs_sigmas == (0.05, 0.1)
    assert cfg.lr == 2e-4  # None means "not given": the file's value stays
    assert cfg.batch_size == 8 and cfg.augment is False  # overrides win
    json_file = tmp_path / "run.json"
    json_file.write_text(json.dumps(cfg.to_dict()))
    assert TrainConfig.load(json_file) == cfg


def test_paper_config_loads_and_runs_one_iteration_on_the_tiny_model(
    vgg_file: Path, hr_gan: Path, tmp_path: Path
) -> None:
    paper = Path(__file__).resolve().parents[1] / "configs" / "certsr-x4-paper.yaml"
    cfg = TrainConfig.load(paper)
    assert cfg.model == "realesrgan-x4plus" and cfg.mode == "mrs" and cfg.iterations == 59_000
    assert cfg.batch_size == 5 and cfg.hr_crop == 480 and cfg.mrs_copies == 5 and cfg.use_gan
    # the same settings on the tiny RRDBNet and small crops (the 128-px discriminator stays on)
    tiny = TrainConfig.load(
        paper,
        {
            "model": "tiny-rrdbnet",
            "hr_dir": str(hr_gan),
            "hr_crop": 128,
            "iterations": 1,
            "perceptual_weights": str(vgg_file),
            "perceptual_layers": ("conv1_2",),
            "output_dir": str(tmp_path),
            "progress": False,
            "device": "cpu",
        },
    )
    result = Trainer(tiny, log=quiet).run()
    assert result.iteration == 1 and result.stop_reason == "done"
    (log,) = read_log(tmp_path)
    assert log["l_gan"] != 0.0 and log["l_d"] > 0.0 and np.isfinite(log["l_g"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("bogus_key: 1\n", "unknown key 'bogus_key'; expected one of: model, mode"),
        ("hr_crop: big\n", "hr_crop must be an integer, got 'big'"),
        ("mode: sgd\n", "mode must be one of mrs, ad-fgsm"),
        ("betas: [0.9]\n", "betas must be two numbers"),
        ("- a\n- b\n", "expected a mapping"),
        ("augment: 1\n", "augment must be true or false"),
        ("perceptual_layers: ['conv1_2=x']\n", "'name' or 'name=weight'"),
    ],
)
def test_config_errors_say_what_was_expected(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(content)
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        TrainConfig.load(f)


def test_config_file_missing_or_wrong_suffix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="config file not found"):
        TrainConfig.load(tmp_path / "nope.yaml")
    f = tmp_path / "x.toml"
    f.write_text("a = 1")
    with pytest.raises(InputError, match=r"must end in \.yaml, \.yml or \.json, got x\.toml"):
        TrainConfig.load(f)


# --- data ------------------------------------------------------------------------------------------------


def test_stream_is_a_pure_function_of_seed_and_index(hr_small: Path) -> None:
    a = CropStream(hr_small, scale=4, hr_crop=32, seed=1)
    b = CropStream(hr_small, scale=4, hr_crop=32, seed=1)
    for k in (7, 0, 3, 7):  # any order, fresh instance: same sample
        lr_a, hr_a = a[k]
        lr_b, hr_b = b[k]
        assert torch.equal(lr_a, lr_b) and torch.equal(hr_a, hr_b)
    assert lr_a.shape == (3, 8, 8) and hr_a.shape == (3, 32, 32)
    assert not torch.equal(a[0][1], a[1][1])
    c = CropStream(hr_small, scale=4, hr_crop=32, seed=2)
    assert any(not torch.equal(a[k][1], c[k][1]) for k in range(3))
    # each epoch visits every image once
    assert sorted(a.image_index(k) for k in range(3)) == [0, 1, 2]
    assert sorted(a.image_index(k) for k in range(3, 6)) == [0, 1, 2]


def test_synthesized_lr_is_bicubic_of_the_hr_crop(hr_small: Path) -> None:
    stream = CropStream(hr_small, scale=4, hr_crop=32, seed=0, quantize_lr=True)
    lr, hr = stream[5]
    assert torch.equal(lr, downscale_bicubic(hr, 4, quantize=True))
    assert torch.equal(lr * 255, torch.round(lr * 255))  # 8-bit values


def test_batch_sampler_slices_the_global_batch() -> None:
    single = list(StreamBatchSampler(4, start=3, stop=5))
    r0 = list(StreamBatchSampler(4, start=3, stop=5, rank=0, world_size=2))
    r1 = list(StreamBatchSampler(4, start=3, stop=5, rank=1, world_size=2))
    assert single == [[12, 13, 14, 15], [16, 17, 18, 19]]
    assert [a + b for a, b in zip(r0, r1, strict=True)] == single
    with pytest.raises(InputError, match="divisible by the number of processes"):
        StreamBatchSampler(5, 0, 1, rank=0, world_size=2)


@pytest.mark.parametrize("lr_suffix", ["x4", "_LR", "_LRx4"])  # DIV2K and BasicSR LR names
def test_paired_folders_crop_matching_regions(tmp_path: Path, lr_suffix: str) -> None:
    lr_dir = write_images(tmp_path / "lr", [(12, 14), (10, 10)], seed=9)
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    for f in sorted(lr_dir.iterdir()):
        img = cv2.imread(str(f))
        # HR = nearest x4 of LR, so an aligned HR crop is exactly the nearest x4 of the LR crop.
        cv2.imwrite(str(hr_dir / f.name), np.repeat(np.repeat(img, 4, axis=0), 4, axis=1))
        f.rename(lr_dir / f"{f.stem}{lr_suffix}.png")
    stream = CropStream(hr_dir, lr_dir=lr_dir, scale=4, hr_crop=32, seed=0)
    for k in range(6):
        lr, hr = stream[k]
        assert lr.shape == (3, 8, 8) and hr.shape == (3, 32, 32)
        assert torch.equal(hr, lr.repeat_interleave(4, 1).repeat_interleave(4, 2))


def test_data_errors(tmp_path: Path, hr_small: Path) -> None:
    with pytest.raises(InputError, match="not a directory"):
        CropStream(tmp_path / "missing", scale=4, hr_crop=32)
    with pytest.raises(InputError, match="multiple of the model scale 4, got 30"):
        CropStream(hr_small, scale=4, hr_crop=30)
    with pytest.raises(
        InputError, match=r"3 of 3 HR images .* is \d+x\d+, expected at least 64x64 for hr_crop=64"
    ):
        CropStream(hr_small, scale=4, hr_crop=64)
    lr_dir = write_images(tmp_path / "lr", [(10, 10)])
    with pytest.raises(
        InputError, match=r"no LR image in .* for 2 of 3 HR images .*: img_001\.png, img_002\.png$"
    ):
        CropStream(hr_small, lr_dir=lr_dir, scale=4, hr_crop=32)
    gray = tmp_path / "gray"
    gray.mkdir()
    cv2.imwrite(str(gray / "g.png"), np.full((8, 8), 128, np.uint8))
    assert read_image(gray / "g.png").shape == (3, 8, 8)


def bad_folder(tmp_path: Path) -> Path:
    """Two good HR images and four that cannot be used, named to sort after the good ones."""
    folder = write_images(tmp_path / "bad", [(40, 40), (36, 44), (24, 40)])
    (folder / "img_002.png").rename(folder / "x_small.png")
    data = (folder / "img_000.png").read_bytes()
    (folder / "x_truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "x_junk.png").write_bytes(b"junk\n")
    (folder / "x_empty.jpg").write_bytes(b"")
    return folder


def test_every_file_is_checked_when_the_stream_is_built(tmp_path: Path) -> None:
    # A bad file used to pass the constructor and stop the run (and every resume) at its first sample.
    with pytest.raises(InputError) as info:
        CropStream(bad_folder(tmp_path), scale=4, hr_crop=32)
    message = str(info.value)
    assert message.startswith("training data: 4 of 6 HR images in ")
    assert "x_small.png is 40x24, expected at least 32x32 for hr_crop=32" in message
    assert "x_truncated.png cannot be read: truncated PNG" in message
    assert "x_junk.png cannot be read: not an image" in message
    assert "x_empty.jpg cannot be read: empty file" in message
    assert "img_00" not in message and "\n" not in message


def test_paired_files_are_checked_and_only_five_are_shown(tmp_path: Path) -> None:
    hr_dir = write_images(tmp_path / "hr", [(32, 32)] * 8)
    lr_dir = write_images(tmp_path / "lr", [(8, 8)] * 6 + [(7, 8), (8, 8)])
    (lr_dir / "img_007.png").write_bytes((lr_dir / "img_007.png").read_bytes()[:-12])  # cut the IEND chunk
    with pytest.raises(InputError) as info:
        CropStream(hr_dir, lr_dir=lr_dir, scale=4, hr_crop=36)
    message = str(info.value)
    assert message.startswith(
        f"training data: 8 of 8 HR images in {hr_dir} and their LR partners in {lr_dir}"
    )
    assert "LR img_000.png is 8x8, expected at least 9x9 for hr_crop=36" in message
    assert message.endswith("; and 3 more")
    with pytest.raises(InputError) as info:
        CropStream(hr_dir, lr_dir=lr_dir, scale=4, hr_crop=32)
    message = str(info.value)
    assert "2 of 8" in message
    assert "img_006.png is 32x32, expected 32x28 (scale 4 x LR img_006.png 8x7)" in message
    assert "LR img_007.png cannot be read: truncated PNG" in message


def test_a_long_check_reports_progress(hr_small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import certsr_rt.train.data as data_module

    clock = iter(range(0, 1000, 3))  # every call: 3 s later
    monkeypatch.setattr(data_module, "monotonic", lambda: float(next(clock)))
    lines: list[str] = []
    CropStream(hr_small, scale=4, hr_crop=32, log=lines.append)
    assert lines[0] == "checking training images: 1/3 (0 unusable so far)"
    assert lines[-1].startswith(f"checked 3 HR images in {hr_small} in ")


def test_cli_refuses_bad_files_before_training(vgg_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--model", "tiny-srvgg", "--hr-dir", str(bad_folder(tmp_path)), "--hr-crop", "32"]
    args += ["--perceptual-weights", str(vgg_file), "--gan-weight", "0", "--iterations", "1", "-o", str(out)]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 1
    assert result.output.startswith("error: training data: 4 of 6 HR images")
    assert len(result.output.strip().splitlines()) == 1  # no training banner, no traceback
    assert not (out / "checkpoints").exists()


# --- the training step -----------------------------------------------------------------------------------


def test_mrs_groups_are_medians_of_noisy_copies(vgg_file: Path, hr_small: Path, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(vgg_file, hr_small, tmp_path, mrs_draws=3), log=quiet)
    lr, _ = trainer.batch(0)
    state = trainer.noise_generator.get_state()
    preds = mrs_predictions(
        trainer.net_g, lr, trainer.mrs_groups, trainer.noise_generator, global_batch=lr.shape[0]
    )
    assert len(preds) == 3  # sigma 0.03, sigma 0.2, clean
    gen = torch.Generator().manual_seed(0)
    gen.set_state(state)
    noise = torch.randn((2 * 3, *lr.shape), generator=gen)
    net = trainer.net_g
    with torch.no_grad():
        for k, sigma in enumerate((0.03, 0.2)):
            outs = torch.stack([net(lr + sigma * noise[k * 3 + d]) for d in range(3)])
            torch.testing.assert_close(preds[k], median(outs, dim=0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(preds[2], net(lr), rtol=1e-5, atol=1e-6)
    # with 2 draws the group reduction is the mean of the two predictions
    two = torch.stack([torch.zeros(1), torch.ones(1)])
    assert float(median(two, dim=0)) == 0.5


@pytest.mark.parametrize("mode", MODES)
def test_losses_decrease_for_each_mode(mode: str, vgg_file: Path, hr_single: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        vgg_file, hr_single, tmp_path, mode=mode, augment=False, iterations=8, lr=3e-3, pixel_weight=1.0
    )
    result = Trainer(cfg, log=quiet).run()
    assert result.iteration == 8 and result.stop_reason == "done"
    losses = [r["l_g"] for r in read_log(tmp_path)]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.9 * np.mean(losses[:2]), losses
    # the checkpoint is a model the loader reads, and it changed
    tuned = load_model(result.generator_file)
    start = load_model("tiny-srvgg")
    assert tuned.architecture == start.architecture and tuned.scale == 4
    x = torch.rand(1, 3, 8, 8)
    assert not torch.allclose(tuned(x), start(x))


def test_cpu_bf16_autocast_is_opt_in_and_trains(vgg_file: Path, hr_single: Path, tmp_path: Path) -> None:
    assert Trainer(tiny_config(vgg_file, hr_single, tmp_path / "auto"), log=quiet).amp_dtype is None
    with pytest.raises(InputError, match="fp16' is for CUDA"):
        Trainer(tiny_config(vgg_file, hr_single, tmp_path / "fp16", amp="fp16"), log=quiet)
    cfg = tiny_config(
        vgg_file,
        hr_single,
        tmp_path / "bf16",
        amp="bf16",
        augment=False,
        iterations=8,
        lr=3e-3,
        pixel_weight=1.0,
    )
    trainer = Trainer(cfg, log=quiet)
    assert trainer.amp_dtype == torch.bfloat16
    trainer.run()
    losses = [r["l_g"] for r in read_log(tmp_path / "bf16")]
    assert all(np.isfinite(losses)) and np.mean(losses[-2:]) < 0.9 * np.mean(losses[:2]), losses
    # the weights and the optimiser stay fp32 under autocast
    assert all(p.dtype == torch.float32 for p in trainer.net_g.parameters())


def test_gan_losses_are_logged_and_generator_improves(vgg_file: Path, hr_gan: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        vgg_file,
        hr_gan,
        tmp_path,
        hr_crop=128,
        augment=False,
        iterations=6,
        lr=3e-3,
        pixel_weight=1.0,
        gan_weight=0.01,
        disc_num_feat=4,
        batch_size=1,
        mrs_sigmas=(0.03,),
        perceptual_weight=0.0,  # VGG at 128 px is the slow part; the GAN is what this test is about
    )
    Trainer(cfg, log=quiet).run()
    log = read_log(tmp_path)
    assert all(r["l_d"] > 0 and r["l_gan"] > 0 for r in log)
    assert log[-1]["l_pix"] < log[0]["l_pix"]


def test_discriminator_needs_large_enough_crops(vgg_file: Path, hr_small: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="at least 128 pixels, got hr_crop=32"):
        Trainer(tiny_config(vgg_file, hr_small, tmp_path, gan_weight=0.005), log=quiet)


def test_ema_follows_decay(vgg_file: Path, hr_small: Path, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(vgg_file, hr_small, tmp_path / "a", ema_decay=0.75), log=quiet)
    before = {k: v.clone() for k, v in trainer.net_g.state_dict().items()}
    trainer.train_step(*trainer.batch(0))
    after = trainer.net_g.state_dict()
    for k, v in trainer.net_g_ema.state_dict().items():
        torch.testing.assert_close(v, 0.75 * before[k] + 0.25 * after[k])
    plain = Trainer(tiny_config(vgg_file, hr_small, tmp_path / "b", ema_decay=0.0), log=quiet)
    plain.train_step(*plain.batch(0))
    for k, v in plain.net_g_ema.state_dict().items():
        assert torch.equal(v, plain.net_g.state_dict()[k])


def test_learning_rate_milestones(vgg_file: Path, hr_small: Path, tmp_path: Path) -> None:
    trainer = Trainer(
        tiny_config(vgg_file, hr_small, tmp_path, lr_milestones=(2, 3), lr_gamma=0.5), log=quiet
    )
    assert [trainer.lr_factor(i) for i in range(5)] == [1.0, 1.0, 0.5, 0.25, 0.25]
    trainer.run()
    assert [r["lr"] for r in read_log(tmp_path)] == [1e-4, 1e-4, 5e-5, 2.5e-5]


# --- the step functions, without a Trainer ---------------------------------------------------------------


def tiny_parts(vgg: Path, *, gan: bool = False, lr: float = 1e-2) -> StepParts:
    """The step's modules built by hand around the tiny compact model (fp32, one process)."""
    from certsr_rt.losses import PerceptualLoss, RelativisticAverageGANLoss
    from certsr_rt.models.discriminator import VGGStyleDiscriminator

    net = load_model("tiny-srvgg", device="cpu").module.float().train().requires_grad_(True)
    gan_part = None
    if gan:
        torch.manual_seed(0)
        net_d = VGGStyleDiscriminator(3, 4, 128).train()
        opt_d = torch.optim.Adam(net_d.parameters(), lr=lr)
        gan_part = GAN(net_d, opt_d, RelativisticAverageGANLoss(0.5), 128, 128)
    return StepParts(
        generator=net,
        module=net,
        ema=copy.deepcopy(net).eval().requires_grad_(False),
        optimizer=torch.optim.Adam(net.parameters(), lr=lr),
        scaler=torch.amp.GradScaler("cuda", enabled=False),
        weights=LossWeights(pixel=1.0, perceptual=0.5),
        perceptual=PerceptualLoss(vgg, ("conv1_2",)),
        gan=gan_part,
        noise_generator=torch.Generator().manual_seed(7),
        amp_dtype=None,
        device=torch.device("cpu"),
        dist=DistInfo(),
        ema_decay=0.5,
    )


def _generator_loss(parts: StepParts, preds: list[torch.Tensor], hr: torch.Tensor) -> torch.Tensor:
    """The generator loss written out by hand (no GAN): group losses averaged."""
    assert parts.perceptual is not None
    w = parts.weights
    per_group = [w.pixel * F.l1_loss(p, hr) + w.perceptual * parts.perceptual(p, hr) for p in preds]
    return torch.stack(per_group).mean()


def _assert_optimised(parts: StepParts, before: torch.nn.Module, loss: torch.Tensor, logs: dict) -> None:
    """The step returned ``loss``, left its gradient, and Adam's first step moved every weight against it."""
    assert logs["l_g"] == pytest.approx(loss.item(), rel=1e-5)
    grads = torch.autograd.grad(loss, list(before.parameters()))
    lr = parts.optimizer.param_groups[0]["lr"]
    for g, p, p0 in zip(grads, parts.module.parameters(), before.parameters(), strict=True):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-8)
        big = g.abs() > 1e-5  # Adam's first update is lr * g / (|g| + eps): about -lr * sign(g)
        assert big.any()
        torch.testing.assert_close((p - p0).detach()[big], -lr * g.sign()[big], rtol=0.02, atol=lr * 0.02)


def test_mrs_step_optimises_the_loss_it_returns(vgg_file: Path) -> None:
    parts = tiny_parts(vgg_file)
    before = copy.deepcopy(parts.module)
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    groups = MRSGroups(sigmas=(0.05, 0.2), draws=3, clean=True)
    noise_state = parts.noise_generator.get_state()
    logs = mrs_step(parts, lr, hr, 0, groups, global_batch=2)
    assert set(logs) == set(LOG_KEYS) and logs["l_gan"] == 0.0 and logs["l_d"] == 0.0
    # the same noise through the weights before the step
    rng = torch.Generator()
    rng.set_state(noise_state)
    preds = mrs_predictions(before, lr, groups, rng, global_batch=2)
    assert len(preds) == 3
    _assert_optimised(parts, before, _generator_loss(parts, preds, hr), logs)
    # and the EMA moved half way (decay 0.5)
    for e, p, p0 in zip(parts.ema.parameters(), parts.module.parameters(), before.parameters(), strict=True):
        torch.testing.assert_close(e, 0.5 * p0 + 0.5 * p.detach())


def test_adversarial_step_trains_on_the_attacked_crops(vgg_file: Path) -> None:
    from certsr_rt.attacks import attack_preset, run_attack
    from certsr_rt.losses import SRLoss

    parts = tiny_parts(vgg_file)
    before = copy.deepcopy(parts.module)
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    attack, attack_loss = attack_preset("pgd", "train"), SRLoss(parts.perceptual)
    logs = adversarial_step(parts, lr, hr, 3, attack, attack_loss, seed=11)
    x_adv = run_attack(attack, before, lr, hr, attack_loss, generator=attack_generator(11, 3, 0))
    assert not torch.equal(x_adv, lr)
    _assert_optimised(parts, before, _generator_loss(parts, [before(x_adv)], hr), logs)


def test_gan_update_is_the_relativistic_loss_on_every_group(vgg_file: Path) -> None:
    parts = tiny_parts(vgg_file, gan=True)
    assert parts.gan is not None
    d_before = copy.deepcopy(parts.gan.net)
    hr = torch.rand(1, 3, 128, 128)
    preds = [torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128)]
    l_d = discriminator_update(parts, hr, preds, (0, 0))
    real = d_before(hr)
    want = sum(parts.gan.loss.discriminator_loss(real, d_before(p)) for p in preds) / 2
    assert l_d == pytest.approx(want.item(), rel=1e-5)
    grads = torch.autograd.grad(want, list(d_before.parameters()), allow_unused=True)
    moved = 0
    for g, q, q0 in zip(grads, parts.gan.net.parameters(), d_before.parameters(), strict=True):
        torch.testing.assert_close(q.grad, g if g is not None else torch.zeros_like(q), rtol=1e-4, atol=1e-7)
        moved += int(not torch.equal(q, q0))
    assert moved > len(grads) // 2  # the optimiser stepped (biases before a BatchNorm get no gradient)
    # the full update with a GAN: the generator's loss has the GAN term, the discriminator is updated
    logs = update(parts, lambda: [parts.generator(torch.rand(1, 3, 32, 32))], hr, 0)
    assert logs["l_gan"] > 0 and logs["l_d"] > 0
    assert logs["l_g"] == pytest.approx(logs["l_pix"] + logs["l_percep"] + logs["l_gan"], rel=1e-6)


# --- run control -----------------------------------------------------------------------------------------


def test_signals_ask_for_a_stop_then_a_second_ctrl_c_aborts() -> None:
    messages: list[str] = []
    control = StopControl(None, messages.append)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with control.signals():
        assert not control.halt(time.monotonic(), DistInfo(), torch.device("cpu"))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler runs between bytecodes of the main thread
        assert control.stop_signal == signal.SIGTERM and control.reason == "signal"
        assert control.halt(time.monotonic(), DistInfo(), torch.device("cpu"))
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert messages == ["terminated (SIGTERM): stopping after this iteration with a checkpoint"]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_time_limit_counts_from_the_start() -> None:
    control = StopControl(0.5, lambda _: None)
    cpu = torch.device("cpu")
    assert not control.halt(control.started + 29, DistInfo(), cpu)
    assert control.halt(control.started + 31, DistInfo(), cpu) and control.reason == "time limit"


def test_loss_log_averages_its_window_and_survives_a_checkpoint(tmp_path: Path) -> None:
    log = LossLog(tmp_path / LOSS_LOG, 2, DistInfo(), torch.device("cpu"))
    for v in (1.0, 3.0):
        log.add(dict.fromkeys(LOG_KEYS, v))
    assert log.due(2) and not log.due(3)
    log.write(2, 1e-4, 12.34567)
    log.add(dict.fromkeys(LOG_KEYS, 5.0))
    saved = log.state()
    again = LossLog(tmp_path / LOSS_LOG, 2, DistInfo(), torch.device("cpu"))
    again.load(saved)
    again.add(dict.fromkeys(LOG_KEYS, 7.0))
    again.write(4, 5e-5, 20.0)
    rows = read_log(tmp_path)
    assert rows[0] == {"iteration": 2, "lr": 1e-4, **dict.fromkeys(LOG_KEYS, 2.0), "elapsed_s": 12.346}
    assert rows[1]["iteration"] == 4 and rows[1]["l_g"] == 6.0 and len(rows) == 2
    assert again.count == 0


def test_trim_log_drops_lines_past_the_resume_point(tmp_path: Path) -> None:
    log = tmp_path / LOSS_LOG
    log.write_text('{"iteration": 1}\n{"iteration": 2}\nnot json\n{"no": 1}\n{"iteration": 3}\n')
    trim_log(log, 2)
    assert log.read_text() == '{"iteration": 1}\n{"iteration": 2}\n'
    trim_log(tmp_path / "missing.jsonl", 2)  # nothing to trim
    assert not (tmp_path / "missing.jsonl").exists()


def test_progress_callback_sees_the_start_then_every_iteration(
    vgg_file: Path, hr_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[int, int, dict[str, float]]] = []
    cfg = tiny_config(vgg_file, hr_small, tmp_path, iterations=3, progress=True)

    def record(done: int, total: int, losses: Mapping[str, float]) -> None:
        calls.append((done, total, dict(losses)))

    Trainer(cfg, log=quiet).run(stop_after=2, progress=record)
    assert [(d, t) for d, t, _ in calls] == [(0, 3), (1, 3), (2, 3)]
    assert calls[0][2] == {} and set(calls[1][2]) == set(LOG_KEYS)
    # progress off: the callback is not called; the default display writes nothing either
    calls.clear()
    Trainer(cfg.replace(progress=False, resume="auto"), log=quiet).run(progress=lambda *a: calls.append(a))
    assert calls == [] and capsys.readouterr().err == ""
    # the train command's display of these calls: tests/test_progress.py


# --- checkpoints and resume ------------------------------------------------------------------------------


def test_checkpoint_files_follow_the_loader_format(vgg_file: Path, hr_small: Path, tmp_path: Path) -> None:
    cfg = tiny_config(vgg_file, hr_small, tmp_path, iterations=5, save_every=2, keep_checkpoints=2)
    result = Trainer(cfg, log=quiet).run()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["net_g_00000004.pth", "net_g_00000005.pth", "state_00000004.pth", "state_00000005.pth"]
    assert not list(tmp_path.rglob("*.tmp"))
    gen = torch.load(result.generator_file, weights_only=True)
    assert set(gen) == {"params", "params_ema", "certsr_meta"}
    meta = gen["certsr_meta"]
    assert meta == {
        "architecture": "SRVGGNetCompact",
        "hyperparameters": dict(load_model("tiny-srvgg").hyperparameters),
        "scale": 4,
        "default_sigma": 0.03,
        "name": "tiny-srvgg-mrs",
    }
    state = load_state_file(result.state_file)  # weights_only inside
    assert state["iteration"] == 5 and state["generator_file"] == "net_g_00000005.pth"
    assert state["noise_rng"].dtype == torch.uint8
    assert find_latest_state(tmp_path) == result.state_file
    latest = load_model(tmp_path / "net_g_latest.pth")
    assert latest.name == "tiny-srvgg-mrs" and latest.default_sigma == 0.03
    torch.testing.assert_close(latest.module.state_dict(), gen["params_ema"])


def test_atomic_save_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "x.pth"
    atomic_save({"a": torch.ones(2)}, target)

    class Unpicklable:
        def __reduce__(self) -> tuple:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"a": Unpicklable()}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pth"]


def _assert_same_state(a: Trainer, b: Trainer) -> None:
    for name, ta, tb in (("net_g", a.net_g, b.net_g), ("ema", a.net_g_ema, b.net_g_ema)):
        for (k, va), vb in zip(ta.state_dict().items(), tb.state_dict().values(), strict=True):
            assert torch.equal(va, vb), f"{name}.{k}"
    sa, sb = a.opt_g.state_dict()["state"], b.opt_g.state_dict()["state"]
    for i in sa:
        for key in sa[i]:
            assert torch.equal(sa[i][key], sb[i][key]), f"optimizer_g {i} {key}"
    if a.net_d is not None:
        assert b.net_d is not None
        for (k, va), vb in zip(a.net_d.state_dict().items(), b.net_d.state_dict().values(), strict=True):
            assert torch.equal(va, vb), f"net_d.{k}"
    assert torch.equal(a.noise_generator.get_state(), b.noise_generator.get_state())
    assert a.iteration == b.iteration


@pytest.mark.parametrize("variant", ["mrs+gan", "ad-pgd"])
def test_resume_reproduces_the_uninterrupted_run(
    variant: str, vgg_file: Path, hr_small: Path, hr_gan: Path, tmp_path: Path
) -> None:
    if variant == "mrs+gan":
        extra: dict[str, object] = dict(
            hr_crop=128,
            gan_weight=0.01,
            disc_num_feat=4,
            batch_size=1,
            perceptual_weight=0.0,
            pixel_weight=1.0,
        )
        hr = hr_gan
    else:
        extra = dict(mode="ad-pgd")
        hr = hr_small
    cfg_a = tiny_config(vgg_file, hr, tmp_path / "a", iterations=5, ema_decay=0.5, lr=1e-3, **extra)
    cfg_b = cfg_a.replace(output_dir=str(tmp_path / "b"))
    full = Trainer(cfg_a, log=quiet)
    full.run()

    first = Trainer(cfg_b, log=quiet)
    interrupted = first.run(stop_after=2)
    assert interrupted.stop_reason == "stop_after" and interrupted.iteration == 2
    # A killed run leaves log lines past its last checkpoint: the resume drops them.
    with open(tmp_path / "b" / "loss_log.jsonl", "a") as fh:
        fh.write(json.dumps({"iteration": 3, "l_g": 123.0}) + "\n")
    del first

    resumed = Trainer(cfg_b.replace(resume="auto"), log=quiet)
    assert resumed.iteration == 2
    for got, want in zip(resumed.batch(2), full.batch(2), strict=True):  # the same next batch
        assert torch.equal(got, want)
    resumed.run()
    _assert_same_state(full, resumed)

    def strip(rows: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]

    assert strip(read_log(tmp_path / "b")) == strip(read_log(tmp_path / "a"))


def test_resume_refuses_a_different_trajectory(vgg_file: Path, hr_small: Path, tmp_path: Path) -> None:
    cfg = tiny_config(vgg_file, hr_small, tmp_path, iterations=2)
    Trainer(cfg, log=quiet).run()
    with pytest.raises(InputError, match="batch_size: checkpoint 2, now 4"):
        Trainer(cfg.replace(batch_size=4, resume="auto", iterations=3), log=quiet)
    with pytest.raises(InputError, match="expected a training-state file"):
        Trainer(cfg.replace(resume=str(tmp_path / "nope.pth")), log=quiet)
    # nothing left to do: returns at once
    again = Trainer(cfg.replace(resume="auto"), log=quiet).run()
    assert again.iterations_run == 0 and again.iteration == 2


def test_time_limit_stops_with_a_checkpoint(vgg_file: Path, hr_small: Path, tmp_path: Path) -> None:
    cfg = tiny_config(vgg_file, hr_small, tmp_path, iterations=50, max_minutes=1e-9)
    result = Trainer(cfg, log=quiet).run()
    assert result.stop_reason == "time limit" and result.iteration == 1
    assert result.state_file is not None and result.state_file.is_file()


# --- CLI -------------------------------------------------------------------------------------------------


def _cli() -> typer.Typer:
    from certsr_rt.cli.app import guarded
    from certsr_rt.cli.train import train_command

    app = typer.Typer()
    app.command("train")(guarded(train_command))
    app.command("other")(lambda: None)  # two commands, so "train" stays a sub-command
    return app


def test_cli_config_file_and_overrides(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("mode: ad-cw\nbatch_size: 3\ngan_weight: 0\n")
    args = [
        "train",
        "-c",
        str(cfg_file),
        "--batch-size",
        "6",
        "--mrs-sigma",
        "0.05",
        "--no-augment",
        "--print-config",
    ]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    values = json.loads(result.output)
    assert values["mode"] == "ad-cw" and values["batch_size"] == 6 and values["gan_weight"] == 0
    assert values["mrs_sigmas"] == [0.05] and values["augment"] is False


def test_cli_trains_and_prints_the_checkpoint(vgg_file: Path, hr_small: Path, tmp_path: Path) -> None:
    args = [
        "train",
        "--model",
        "tiny-rrdbnet",
        "--hr-dir",
        str(hr_small),
        "--hr-crop",
        "32",
        "--batch-size",
        "1",
        "--iterations",
        "2",
        "--perceptual-weights",
        str(vgg_file),
        "--perceptual-layer",
        "conv1_2",
        "--gan-weight",
        "0",
        "-o",
        str(tmp_path),
        "--no-progress",
        "--mode",
        "ad-fgsm",
    ]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip().splitlines()[-1])
    assert path == tmp_path / "checkpoints" / "net_g_00000002.pth"
    model = load_model(path)
    assert model.architecture == "RRDBNet" and model.name == "tiny-rrdbnet-ad-fgsm"


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _cli(), ["train", "--model", "tiny-srvgg", "--hr-dir", str(tmp_path / "none")]
    )
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: --hr-dir must be a folder of images")
    result = CliRunner().invoke(_cli(), ["train", "--model", "tiny-srvgg"])
    assert result.exit_code == 1 and "--hr-dir" in result.output


def test_sigterm_stops_after_the_iteration_with_a_checkpoint(
    vgg_file: Path, hr_small: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(vgg_file, hr_small, tmp_path / "run", iterations=100_000)
    code = (
        "import json, sys; from certsr_rt.train import TrainConfig, Trainer; "
        "r = Trainer(TrainConfig.from_mapping(json.loads(sys.argv[1])), log=lambda m: None).run(); "
        "print(r.stop_reason, r.iteration)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(cfg.to_dict())], stdout=subprocess.PIPE, text=True, env=env
    )
    log = tmp_path / "run" / "loss_log.jsonl"
    deadline = time.monotonic() + 60
    while not (log.is_file() and log.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    reason, iteration = out.split()
    assert reason == "signal" and int(iteration) >= 1
    state = find_latest_state(tmp_path / "run")
    assert state is not None and load_state_file(state)["iteration"] == int(iteration)
    resumed = Trainer(cfg.replace(resume="auto", iterations=int(iteration) + 1), log=quiet).run()
    assert resumed.iterations_run == 1 and resumed.stop_reason == "done"
