"""Checkpoint loading: key layouts, wrappers, formats, metadata, integrity and refusal of bad files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from certsr_rt.errors import InputError, ModelLoadError
from certsr_rt.models import RRDBNet, SRVGGNetCompact, load_model
from certsr_rt.models import loader as loader_mod
from certsr_rt.models.loader import detect_architecture, load_state_dict_file

TINY_RRDB = dict(num_in_ch=3, num_out_ch=3, scale=4, num_feat=8, num_block=2, num_grow_ch=4)
TINY_VGG = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=3, upscale=4, act_type="prelu")
GENERAL_X4V3 = Path(__file__).parents[1] / "../shared/assets/weights/realesr_general_x4v3.pth"


# ----------------------------------------------------------------------------------------------- helpers


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter distinct random values from a local generator (biases too)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * 0.2)
    return module.eval()


def to_esrgan_repo(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BasicSR new-arch names -> the ESRGAN repository's RRDBNet_arch names."""
    ren = {
        "conv_body.": "trunk_conv.",
        "conv_up1.": "upconv1.",
        "conv_up2.": "upconv2.",
        "conv_hr.": "HRconv.",
    }
    out = {}
    for k, v in sd.items():
        k2 = re.sub(r"^body\.(\d+)\.rdb(\d)\.", r"RRDB_trunk.\1.RDB\2.", k)
        for a, b in ren.items():
            if k2.startswith(a):
                k2 = b + k2[len(a) :]
        out[k2] = v
    return out


def to_old_arch(sd: dict[str, torch.Tensor], num_block: int) -> dict[str, torch.Tensor]:
    """BasicSR new-arch names -> the 2018 ESRGAN old-arch (``model.N``) names."""
    ren = {
        "conv_first.": "model.0.",
        "conv_body.": f"model.1.sub.{num_block}.",
        "conv_up1.": "model.3.",
        "conv_up2.": "model.6.",
        "conv_hr.": "model.8.",
        "conv_last.": "model.10.",
    }
    out = {}
    for k, v in sd.items():
        k2 = re.sub(r"^body\.(\d+)\.rdb(\d)\.conv(\d)\.", r"model.1.sub.\1.RDB\2.conv\3.0.", k)
        for a, b in ren.items():
            if k2.startswith(a):
                k2 = b + k2[len(a) :]
        out[k2] = v
    return out


def run(module_or_model, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return module_or_model(x)


@pytest.fixture(scope="module")
def tiny_rrdb() -> RRDBNet:
    return randomized(RRDBNet(**TINY_RRDB), seed=1)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(2, 3, 6, 5, generator=torch.Generator().manual_seed(7))


# ------------------------------------------------------------------------------------ layouts + wrappers


@pytest.mark.parametrize("layout", ["new", "esrgan", "old"])
@pytest.mark.parametrize("wrapper", [None, "params_ema", "params", "state_dict", "model"])
def test_rrdbnet_layouts_and_wrappers_round_trip_exactly(tmp_path, tiny_rrdb, x, layout, wrapper):
    sd = {k: v.clone() for k, v in tiny_rrdb.state_dict().items()}
    if layout == "esrgan":
        sd = to_esrgan_repo(sd)
        assert "RRDB_trunk.0.RDB1.conv1.weight" in sd
    elif layout == "old":
        sd = to_old_arch(sd, TINY_RRDB["num_block"])
        assert "model.1.sub.2.weight" in sd and "model.1.sub.0.RDB3.conv5.0.bias" in sd
    obj = sd if wrapper is None else {wrapper: sd}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)

    model = load_model(path)

    assert model.architecture == "RRDBNet"
    assert model.hyperparameters == TINY_RRDB
    assert (model.scale, model.in_channels, model.out_channels) == (4, 3, 3)
    assert model.name == "ckpt" and model.default_sigma is None
    assert torch.equal(run(model, x), run(tiny_rrdb, x))


def test_params_ema_is_preferred_over_params(tmp_path, tiny_rrdb, x):
    other = randomized(RRDBNet(**TINY_RRDB), seed=99)
    torch.save({"params": other.state_dict(), "params_ema": tiny_rrdb.state_dict()}, tmp_path / "c.pth")
    assert torch.equal(run(load_model(tmp_path / "c.pth"), x), run(tiny_rrdb, x))


def test_ddp_module_prefix_is_stripped(tmp_path, tiny_rrdb, x):
    sd = {"module." + k: v for k, v in tiny_rrdb.state_dict().items()}
    torch.save({"state_dict": sd}, tmp_path / "ddp.pth")
    assert torch.equal(run(load_model(tmp_path / "ddp.pth"), x), run(tiny_rrdb, x))


@pytest.mark.parametrize("scale,first_in", [(2, 12), (1, 48)])
def test_rrdbnet_x2_x1_detected_from_pixel_unshuffle_first_conv(tmp_path, scale, first_in):
    ref = randomized(RRDBNet(**{**TINY_RRDB, "scale": scale}), seed=3)
    assert ref.conv_first.weight.shape[1] == first_in
    torch.save({"params_ema": ref.state_dict()}, tmp_path / "x.pth")
    model = load_model(tmp_path / "x.pth")
    assert (model.scale, model.in_channels, model.out_channels) == (scale, 3, 3)
    xin = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(run(model, xin), run(ref, xin))
    # Sizes that are not a multiple of the unshuffle factor are padded and cropped by the descriptor.
    assert run(model, torch.rand(1, 3, 5, 7)).shape == (1, 3, 5 * scale, 7 * scale)


@pytest.mark.parametrize("act_type", ["prelu", "relu"])
def test_srvgg_detection_round_trip(tmp_path, act_type):
    hp = {**TINY_VGG, "act_type": act_type}
    ref = randomized(SRVGGNetCompact(**hp), seed=4)
    torch.save({"params_ema": ref.state_dict()}, tmp_path / "vgg.pth")
    model = load_model(tmp_path / "vgg.pth")
    assert model.architecture == "SRVGGNetCompact"
    assert model.hyperparameters == hp
    xin = torch.rand(1, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(run(model, xin), run(ref, xin))


def test_srvgg_x2_detected_from_last_conv():
    ref = SRVGGNetCompact(**{**TINY_VGG, "upscale": 2})
    arch, hp, _ = detect_architecture(ref.state_dict())
    assert arch == "SRVGGNetCompact" and hp["upscale"] == 2 and hp["num_conv"] == 3


def test_fp16_tensors_are_cast_to_fp32(tmp_path, tiny_rrdb, x):
    half = {k: v.half() for k, v in tiny_rrdb.state_dict().items()}
    torch.save({"params_ema": half}, tmp_path / "half.pth")
    model = load_model(tmp_path / "half.pth")
    assert all(p.dtype == torch.float32 for p in model.module.parameters())
    ref = RRDBNet(**TINY_RRDB).eval()
    ref.load_state_dict({k: v.float() for k, v in half.items()})
    assert torch.equal(run(model, x), run(ref, x))


def test_safetensors_with_meta(tmp_path, tiny_rrdb, x):
    import safetensors.torch as st  # a core dependency: no skip

    meta = {
        "architecture": "RRDBNet",
        "hyperparameters": TINY_RRDB,
        "scale": 4,
        "default_sigma": 0.04,
        "name": "st-model",
    }
    path = tmp_path / "m.safetensors"
    st.save_file(tiny_rrdb.state_dict(), str(path), metadata={"certsr_meta": json.dumps(meta)})
    model = load_model(path)
    assert (model.name, model.default_sigma) == ("st-model", 0.04)
    assert torch.equal(run(model, x), run(tiny_rrdb, x))
    sd, got_meta = load_state_dict_file(path)
    assert got_meta == meta and set(sd) == set(tiny_rrdb.state_dict())


def test_safetensors_without_meta_and_fp16(tmp_path, tiny_rrdb):
    import safetensors.torch as st  # a core dependency: no skip

    path = tmp_path / "plain.safetensors"
    st.save_file({k: v.half() for k, v in tiny_rrdb.state_dict().items()}, str(path))
    model = load_model(path)
    assert model.default_sigma is None and model.name == "plain"
    assert next(model.module.parameters()).dtype == torch.float32


def test_certsr_meta_training_checkpoint(tmp_path, tiny_rrdb, x):
    meta = {
        "architecture": "RRDBNet",
        "hyperparameters": TINY_RRDB,
        "scale": 4,
        "default_sigma": 0.06,
        "name": "certsr-finetuned",
    }
    other = randomized(RRDBNet(**TINY_RRDB), seed=5)
    ckpt = {"params_ema": tiny_rrdb.state_dict(), "params": other.state_dict(), "certsr_meta": meta}
    torch.save(ckpt, tmp_path / "train.pth")
    model = load_model(tmp_path / "train.pth")
    assert (model.name, model.default_sigma, model.architecture) == ("certsr-finetuned", 0.06, "RRDBNet")
    assert torch.equal(run(model, x), run(tiny_rrdb, x))
    sd, got = load_state_dict_file(tmp_path / "train.pth")
    assert got == meta and torch.equal(sd["conv_first.weight"], tiny_rrdb.conv_first.weight)


def test_certsr_meta_null_sigma_and_act_type_override(tmp_path):
    hp = {**TINY_VGG, "act_type": "leakyrelu"}
    ref = randomized(SRVGGNetCompact(**hp), seed=6)
    meta = {
        "architecture": "SRVGGNetCompact",
        "hyperparameters": hp,
        "scale": 4,
        "default_sigma": None,
        "name": "n",
    }
    torch.save({"params_ema": ref.state_dict(), "certsr_meta": meta}, tmp_path / "m.pth")
    model = load_model(tmp_path / "m.pth")
    assert model.default_sigma is None and model.hyperparameters["act_type"] == "leakyrelu"
    xin = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(run(model, xin), run(ref, xin))


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"architecture": "SRVGGNetCompact"}, "certsr_meta says architecture"),
        ({"scale": 2}, "certsr_meta says scale"),
    ],
)
def test_certsr_meta_inconsistent_with_weights(tmp_path, tiny_rrdb, bad, match):
    torch.save({"params_ema": tiny_rrdb.state_dict(), "certsr_meta": bad}, tmp_path / "m.pth")
    with pytest.raises(ModelLoadError, match=match):
        load_model(tmp_path / "m.pth")


def test_copy_of_bundled_file_keeps_registered_name_and_sigma(tmp_path):
    src = loader_mod._WEIGHTS_DIR / "realesr_animevideov3_x4.pth"
    shutil.copy(src, tmp_path / "renamed.pth")
    model = load_model(tmp_path / "renamed.pth")
    assert model.name == "realesr-animevideov3-x4" and model.default_sigma is not None


# -------------------------------------------------------------------------------------------------- errors


def one_line(exc_info: pytest.ExceptionInfo) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    return msg


def test_sha256_mismatch_of_bundled_file(tmp_path, monkeypatch):
    name = "realesr_animevideov3_x4.pth"
    shutil.copy(loader_mod._WEIGHTS_DIR / "SHA256SUMS", tmp_path / "SHA256SUMS")
    data = bytearray((loader_mod._WEIGHTS_DIR / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / name).write_bytes(bytes(data))
    monkeypatch.setattr(loader_mod, "_WEIGHTS_DIR", tmp_path)
    with pytest.raises(ModelLoadError) as info:
        load_model("realesr-animevideov3-x4")
    msg = one_line(info)
    assert "expected b0b8a8b9" in msg and "got " in msg


def test_sha256_checked_against_sha256sums(monkeypatch):
    monkeypatch.setattr(loader_mod, "_bundled_sha256", lambda filename: "0" * 64)
    with pytest.raises(ModelLoadError, match="expected 0{64}, got b0b8a8b9"):
        load_model("realesr-animevideov3-x4")


def test_unrecognised_state_dict(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2, 2), "decoder.bias": torch.zeros(2)}, tmp_path / "u.pth")
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path / "u.pth")
    msg = one_line(info)
    assert "unrecognised" in msg and "encoder.weight" in msg


def test_dict_without_tensors(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "d.pth")
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path / "d.pth")
    assert "found a dict with keys epoch, lr" in one_line(info)


def test_single_tensor_file(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "t.pth")
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path / "t.pth")
    assert "single tensor" in one_line(info)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, this is not a checkpoint\n", bytes(range(256)) * 4],
    ids=["empty", "text", "binary"],
)
def test_not_a_checkpoint(tmp_path, content):
    (tmp_path / "n.pth").write_bytes(content)
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path / "n.pth")
    assert "not a torch checkpoint" in one_line(info)


def test_broken_safetensors(tmp_path):
    header = b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}'
    (tmp_path / "b.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 3)
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path / "b.safetensors")
    assert "not a valid safetensors file" in one_line(info)


def test_missing_path_lists_registered_names():
    with pytest.raises(ModelLoadError) as info:
        load_model("no/such/model.pth")
    msg = one_line(info)
    assert msg.startswith(
        "no such model or file: no/such/model.pth (registered: certsr-compact-x4, realesrgan-x4plus"
    )
    assert "tiny-" not in msg  # the test models stay registered but are not offered to users


def test_directory_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="is a directory"):
        load_model(tmp_path)


def test_bad_device():
    with pytest.raises(InputError, match="Expected a device"):
        load_model("tiny-srvgg", device="gpu-please")


class Thing:
    """A harmless class: weights-only loading must still refuse to instantiate it."""


class Evil:
    """Unpickling this would create a file: the loader must never run it."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_object_is_refused(tmp_path):
    torch.save({"params_ema": {"w": torch.zeros(1)}, "extra": Thing()}, tmp_path / "obj.pth")
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path / "obj.pth")
    msg = one_line(info)
    assert "refusing to unpickle" in msg and "Thing" in msg


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"params_ema": Evil(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(ModelLoadError, match="refusing to unpickle"):
        load_model(tmp_path / "evil.pth")
    with pytest.raises(ModelLoadError, match="refusing to unpickle"):
        load_state_dict_file(tmp_path / "evil.pth")
    assert not marker.exists()


def test_wrong_shapes_say_which_keys(tmp_path):
    sd = randomized(RRDBNet(**TINY_RRDB)).state_dict()
    sd["conv_hr.weight"] = torch.zeros(8, 8, 1, 1)
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path / "w.pth")
    assert "conv_hr.weight (8, 8, 1, 1) != (8, 8, 3, 3)" in one_line(info)


def test_missing_keys_are_named(tmp_path):
    sd = randomized(RRDBNet(**TINY_RRDB)).state_dict()
    del sd["conv_up2.bias"]
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path / "m.pth")
    assert "1 missing (e.g. conv_up2.bias)" in one_line(info)


def test_x8_rrdbnet_is_refused_clearly(tmp_path):
    sd = randomized(RRDBNet(**TINY_RRDB)).state_dict()
    sd["conv_up3.weight"] = torch.zeros(8, 8, 3, 3)
    with pytest.raises(ModelLoadError, match="x8"):
        detect_architecture(sd)


# ------------------------------------------------------------------------------------------- real assets


def test_detects_realesr_general_x4v3_from_shared_assets():
    if not GENERAL_X4V3.is_file():
        pytest.skip(f"shared asset not present: {GENERAL_X4V3}")
    model = load_model(GENERAL_X4V3)
    assert model.architecture == "SRVGGNetCompact"
    assert model.hyperparameters["num_conv"] == 32 and model.hyperparameters["act_type"] == "prelu"
    assert model.scale == 4 and model.num_parameters == 1_213_296
    assert model.default_sigma is None and model.name == "realesr_general_x4v3"
    assert run(model, torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)
