"""Issue 12, "nothing lost, nothing silent": the CLI never destroys an input, fails loudly on a broken
model, is safe to re-run, and says what it does (stderr), with one exit code per outcome."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from certsr_rt.cli.app import app


def _cli(*args: str | Path) -> object:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


# ------------------------------------------------------------------------------- --version, models


def test_version_prints_and_exits_0() -> None:
    from certsr_rt import __version__

    result = _cli("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"certsr-rt {__version__}"


def test_models_hides_the_test_models_unless_all() -> None:
    listed = _cli("models")
    assert listed.exit_code == 0
    assert "realesrgan-x4plus" in listed.stdout
    assert "tiny-" not in listed.stdout
    everything = _cli("models", "--all")
    assert everything.exit_code == 0
    assert "tiny-rrdbnet" in everything.stdout and "tiny-srvgg" in everything.stdout


def test_unknown_model_message_lists_user_models_only(tmp_path: Path) -> None:
    from certsr_rt.errors import ModelLoadError
    from certsr_rt.models import get_spec, load_model

    for call in (lambda: load_model("no-such-model"), lambda: get_spec("no-such-model")):
        with pytest.raises(ModelLoadError) as info:
            call()
        assert "realesrgan-x4plus" in str(info.value)
        assert "tiny-" not in str(info.value)
    # the test models stay loadable by name
    assert load_model("tiny-srvgg").name == "tiny-srvgg"


# ------------------------------------------------------------------------------------------- export


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    import torch

    from certsr_rt.models import load_model

    path = tmp_path / "ck.pth"
    torch.save(load_model("tiny-srvgg").module.state_dict(), path)
    return path


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_export_never_replaces_its_input(checkpoint: Path, how: str) -> None:
    before = checkpoint.read_bytes()
    target = checkpoint
    if how == "symlink":
        target = checkpoint.with_name("link.onnx")
        target.symlink_to(checkpoint.name)
    elif how == "hardlink":
        target = checkpoint.with_name("hard.onnx")
        target.hardlink_to(checkpoint)
    result = _cli("export", checkpoint, "-o", target)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: refusing to overwrite the input {checkpoint} (choose another -o)"
    ]
    assert checkpoint.read_bytes() == before


@pytest.mark.parametrize("name", ["ck.txt", "m.engine", "m.ONNX.bak"])
def test_export_refuses_an_output_that_is_not_onnx(checkpoint: Path, name: str) -> None:
    result = _cli("export", checkpoint, "-o", checkpoint.parent / name)
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: -o ") and ".onnx" in line
    assert not (checkpoint.parent / name).exists()


@pytest.mark.parametrize("form", ["existing", "trailing-slash", "no-extension"])
def test_export_into_a_folder_writes_name_onnx_inside(checkpoint: Path, form: str) -> None:
    folder = checkpoint.parent / "out"
    if form == "existing":
        folder.mkdir()
    option = f"{folder}/" if form == "trailing-slash" else str(folder)
    result = _cli("export", checkpoint, "-o", option)
    assert result.exit_code == 0, result.output
    assert folder.is_dir() and sorted(p.name for p in folder.iterdir()) == ["ck.onnx"]
    # progress and results on stderr; stdout stays empty
    assert result.stdout == "" and f"wrote {folder / 'ck.onnx'}" in result.stderr


def test_export_checks_the_folder_is_writable_before_exporting(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from certsr_rt.export import onnx as onnx_export

    exports: list[object] = []
    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a, **k: exports.append(a))
    blocker = checkpoint.parent / "afile"
    blocker.write_text("not a folder")
    result = _cli("export", checkpoint, "-o", blocker / "sub" / "m.onnx")
    assert result.exit_code == 1, result.output
    assert (
        result.stderr.strip()
        == f"error: cannot write into {blocker / 'sub'}: {blocker} is a file, not a folder"
    )
    assert exports == []


# ---------------------------------------------------------------------------------------- NaN model


def test_a_model_that_outputs_nan_is_an_error_and_nothing_is_written(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.torch import save_file

    from certsr_rt.io.images import write_image
    from certsr_rt.models import load_model

    weights = {k: v.clone() for k, v in load_model("tiny-srvgg").module.state_dict().items()}
    next(iter(weights.values())).fill_(float("nan"))
    checkpoint = tmp_path / "broken.safetensors"
    save_file(weights, str(checkpoint))
    source = write_image(tmp_path / "in.png", np.full((8, 8, 3), 128, np.uint8))
    result = _cli("upscale", source, "--model", checkpoint, "--device", "cpu", "--samples", "3", "-q")
    assert result.exit_code == 1, result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: {source}: the model broken from ") and "produced NaN or inf" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.safetensors", "in.png"]
    assert "invalid value" not in result.output


# ------------------------------------------------------------------------------ upscale: re-runs, folders

FAST = ["--model", "tiny-srvgg", "--device", "cpu", "--samples", "3", "--seed", "1"]


def _png(path: Path, seed: int = 0) -> Path:
    import numpy as np

    from certsr_rt.io.images import write_image

    rng = np.random.default_rng(seed)
    return write_image(path, rng.integers(0, 256, (8, 10, 3), dtype=np.uint8))


def test_rerunning_upscale_on_a_folder_skips_its_own_outputs(tmp_path: Path) -> None:
    _png(tmp_path / "chip.png")
    first = _cli("upscale", tmp_path, *FAST, "--bounds", "0.001", "--alpha", "0.5", "--samples", "9")
    assert first.exit_code == 0, first.output
    outputs = ["chip.png", "chip_x4.png", "chip_x4_lower.png", "chip_x4_upper.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == outputs
    again = _cli("upscale", tmp_path, *FAST)
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in tmp_path.iterdir()) == outputs  # no chip_x4_x4.png
    skipped = [line for line in again.stderr.splitlines() if line.startswith("skipping ")]
    assert len(skipped) == 1 and skipped[0].startswith("skipping 3 file(s) that are certsr-rt outputs")
    assert "error" not in again.stderr and f"wrote {tmp_path / 'chip_x4.png'}" in again.stderr
    # a folder holding only outputs: nothing to do, said once, exit 0
    (tmp_path / "chip.png").unlink()
    only = _cli("upscale", tmp_path, *FAST)
    assert only.exit_code == 0, only.output
    assert "nothing to upscale" in only.stderr and "wrote" not in only.stderr


def test_an_output_renamed_is_still_recognised_by_its_metadata(tmp_path: Path) -> None:
    from certsr_rt.io.images import read_provenance

    _png(tmp_path / "chip.png")
    assert _cli("upscale", tmp_path / "chip.png", *FAST).exit_code == 0
    (tmp_path / "chip_x4.png").rename(tmp_path / "big.png")
    assert read_provenance(tmp_path / "big.png") is not None
    again = _cli("upscale", tmp_path, *FAST)
    assert again.exit_code == 0, again.output
    assert "skipping 1 file(s)" in again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png", "chip.png", "chip_x4.png"]
    # named explicitly, an output is upscaled
    explicit = _cli("upscale", tmp_path / "big.png", *FAST)
    assert explicit.exit_code == 0 and (tmp_path / "big_x4.png").is_file()


def test_an_unwritable_output_folder_is_found_before_the_model_is_loaded(tmp_path: Path) -> None:
    source = _png(tmp_path / "chip.png")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    # a model name that does not exist: its error would come first if the folder were checked later
    result = _cli("upscale", source, "-o", f"{blocker}/sub/", "--model", "no-such-model")
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write into {blocker / 'sub'}: {blocker} is a file, not a folder "
        "(1 input(s) not upscaled)"
    ]


def test_a_read_only_or_full_folder_is_refused_before_any_compute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from certsr_rt.io import images

    real_open = os.open

    def read_only(path: object, *args: object, **kwargs: object) -> int:
        if ".certsr-rt-write-test." in str(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    source = _png(tmp_path / "chip.png")
    monkeypatch.setattr(images.os, "open", read_only)
    result = _cli("upscale", source, "-o", tmp_path / "out/", "--model", "no-such-model")
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"error: cannot write into {tmp_path / 'out'}: Read-only file system (1 input(s) not upscaled)"
    )
    monkeypatch.setattr(images.os, "open", real_open)

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(images.os, "write", full)
    with pytest.raises(images.InputError, match="No space left on device"):
        images.check_writable(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chip.png"]  # the probe is removed


def test_stale_partial_files_of_a_killed_run_are_removed_and_said(tmp_path: Path) -> None:
    import os
    import time

    source = _png(tmp_path / "chip.png")
    old = time.time() - 3600
    stale = [tmp_path / ".chip_x4.png.0123abcd.tmp", tmp_path / ".chip_x4.partial-89abcdef.png"]
    unrelated = [tmp_path / ".other_x4.png.0123abcd.tmp", tmp_path / ".chip_x4.png.notours.tmp"]
    for p in stale + unrelated:
        p.write_bytes(b"partial")
        os.utime(p, (old, old))
    result = _cli("upscale", source, *FAST)
    assert result.exit_code == 0, result.output
    for p in stale:
        assert not p.exists()
        assert f"removed {p}, a partial file left by an interrupted run" in result.stderr
    assert all(p.exists() for p in unrelated)


def test_stale_partial_files_lists_only_old_files_of_our_naming(tmp_path: Path) -> None:
    import os
    import time

    from certsr_rt.io.atomic import stale_partial_files

    target = tmp_path / "clip_x4.mp4"
    start = time.time()
    old, new = tmp_path / ".clip_x4.partial-00112233.mp4", tmp_path / ".clip_x4.partial-44556677.mp4"
    for p in (old, new, tmp_path / ".clip_x4.partial-00112233.mkv", tmp_path / ".clip.partial-00112233.mp4"):
        p.write_bytes(b"x")
    os.utime(old, (start - 10, start - 10))
    os.utime(new, (start + 10, start + 10))  # a write that began after this run started
    assert stale_partial_files(target, older_than=start) == [old]


# -------------------------------------------------------------------------------------- train signals


@pytest.mark.parametrize(
    ("sig", "code", "word"), [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")]
)
def test_train_stopped_by_a_signal_writes_a_checkpoint_and_exits_128_plus_the_signal(
    tmp_path: Path, sig: str, code: int, word: str
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    hr = tmp_path / "hr"
    for i in range(2):
        _png(hr / f"{i}.png", seed=i)
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "certsr_rt.cli.app", "train", "--model", "tiny-srvgg", "--hr-dir", str(hr),
        "--hr-crop", "8", "--batch-size", "1", "--iterations", "100000", "--perceptual-weight", "0",
        "--gan-weight", "0", "--output-dir", str(out), "--log-every", "1", "--no-progress", "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        log = out / "loss_log.jsonl"
        deadline = time.monotonic() + 60
        while not (log.is_file() and log.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(getattr(signal, sig))
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    checkpoint = Path(stdout.strip().splitlines()[-1])
    assert checkpoint.is_file() and checkpoint.parent == out / "checkpoints"
    assert f"{word} (" in stderr and "Traceback" not in stderr


# ---------------------------------------------------------------------------------- words and messages


def test_sigterm_during_a_video_says_terminated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("av")
    from test_video import NearestX4, leftovers, make_clip

    from certsr_rt.cli.upscale_video import run_video
    from certsr_rt.errors import Terminated

    clip = make_clip(tmp_path / "clip.mp4", frames=6)

    def terminate(done: int, total: int | None) -> None:
        if done == 2:
            raise Terminated

    with pytest.raises(Terminated):
        run_video(clip, tmp_path / "out.mp4", NearestX4(), progress=terminate)
    err = capsys.readouterr().err
    assert "terminated after 2 of 6 frames" in err and "interrupted" not in err
    assert leftovers(tmp_path) == []


def test_the_offline_vgg_message_names_a_user_remedy(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from certsr_rt import losses
    from certsr_rt.errors import ModelLoadError

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ModelLoadError) as info:
        losses._features_from_torchvision()
    message = str(info.value)
    assert "--perceptual-weights FILE" in message and "vgg19-dcbb9e9d.pth" in message
    assert "shared" not in message and "weights_path" not in message


# ------------------------------------------------------------------------------------------------ tiles


@pytest.mark.parametrize(
    ("model", "tile", "minimum"), [("realesrgan-x4plus", 32, 96), ("realesr-animevideov3-x4", 4, 24)]
)
def test_tiles_under_the_bundled_models_minimum_are_refused_before_any_work(
    tmp_path: Path, model: str, tile: int, minimum: int
) -> None:
    source = _png(tmp_path / "chip.png")
    result = _cli("upscale", source, "--model", model, "--device", "cpu", "--tile", str(tile), "--seed", "1")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: tile {tile} px is too small for this {'RRDBNet' if minimum == 96 else 'SRVGGNetCompact'} "
        f"model: tiles under {minimum} px give visibly different output (seams, blocks: the network sees "
        f"too little context); use --tile {minimum} or more, or --tile 0 for the whole image"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chip.png"]


def test_the_overlap_has_the_architectures_floor() -> None:
    from certsr_rt.runtime.tiling import resolve_overlap, tile_limits

    deep = {"num_block": 23}
    assert resolve_overlap("RRDBNet", deep, 192, None) == 32  # was 16: seams up to 96 levels
    assert resolve_overlap("SRVGGNetCompact", {"num_conv": 16}, 192, None) == 16
    assert resolve_overlap("SRVGGNetCompact", {"num_conv": 16}, 24, None) == 8  # a quarter would be 6
    # a depth between two measured models takes the deeper one's limits; unknown depth: the strictest
    assert tile_limits("RRDBNet", {"num_block": 6}).measured_on == "realesrgan-x4plus"
    assert tile_limits("RRDBNet", {"num_block": 1}).measured_on == "tiny-rrdbnet"
    assert tile_limits("SRVGGNetCompact", None).min_tile == 24
    assert tile_limits("SomethingElse").min_tile == 96


# ------------------------------------------------------------------------------- a newcomer's first run


def test_a_run_without_a_terminal_says_what_it_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from certsr_rt.cli import upscale

    monkeypatch.setattr(upscale, "_LINE_SECONDS", 0.0)  # a progress line at every step (normally 30 s)
    source = _png(tmp_path / "chip.png")
    result = _cli(
        "upscale", source, "--model", "tiny-srvgg", "--device", "cpu", "--seed", "5", "--backend", "torch"
    )
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    start = [line for line in lines if line.startswith("upscaling with ")]
    assert start == [
        "upscaling with tiny-srvgg (SRVGGNetCompact x4) on cpu, torch fp32: n=21, sigma 0.06, seed 5, "
        "tiles 192 px (overlap 16)"
    ]
    assert "1/1 chip.png: 10x8 -> 0.00 MP: 1 tile x 21 samples = 21 forward passes in 7 steps" in lines
    progress = [line.strip() for line in lines if line.startswith("  1/1 chip.png: ")]
    assert progress == [f"1/1 chip.png: {round(100 * i / 7)}%" for i in range(1, 8)]  # 7 chunks of 3


def test_cpu_progress_moves_in_at_least_seven_steps_per_tile() -> None:
    import numpy as np

    from certsr_rt import SmoothingConfig, Upscaler

    calls: list[tuple[int, int]] = []
    up = Upscaler(
        "tiny-srvgg", SmoothingConfig(sigma=0.05, samples=21, seed=0), device="cpu", backend="torch"
    )
    up(np.zeros((16, 16, 3), np.uint8), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 7) for i in range(1, 8)]  # 7 chunks of 3 samples, not one chunk of 21


def test_memory_advice_never_suggests_a_tile_under_the_models_minimum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import numpy as np

    import certsr_rt.runtime.upscaler as upscaler_module
    from certsr_rt import InputError, SmoothingConfig, Upscaler

    up = Upscaler(
        "realesr-animevideov3-x4", SmoothingConfig(samples=21, seed=0), device="cpu", backend="torch"
    )
    # room for tiles of about 20 px only: under the compact model's minimum of 24
    monkeypatch.setattr(upscaler_module, "_available_memory", lambda device: 2 * 8064 * 20 * 20)
    with pytest.raises(InputError, match="too large") as info:
        up(np.zeros((200, 200, 3), np.uint8))
    assert "--tile" not in str(info.value) and "fewer samples" in str(info.value)
