"""``certsr-rt upscale`` end to end on CPU with the tiny registered model and tiny generated images."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import signal_after_first_line
from typer.testing import CliRunner

from certsr_rt.cli.app import app
from certsr_rt.cli.upscale import _BatchProgress
from certsr_rt.io import atomic
from certsr_rt.io.images import read_image, write_image

ASSETS = Path(__file__).parents[1] / "../shared/assets/data"
FAST = ["--model", "tiny-rrdbnet", "--device", "cpu", "--samples", "5"]
H, W = 10, 12


def _image(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype is np.float32:
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def _invoke(*args: str | Path, env: dict[str, str] | None = None) -> object:
    result = CliRunner().invoke(app, ["upscale", *map(str, args)], env=env)
    assert "Traceback" not in result.output
    # Any exception other than SystemExit is a bug the CLI let through.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _error_lines(result: object) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]  # type: ignore[attr-defined]


def _files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------------------------------------ kinds

KINDS = {
    "rgb8.png": ((H, W, 3), np.uint8),
    "rgb16.png": ((H, W, 3), np.uint16),
    "gray8.png": ((H, W), np.uint8),
    "gray16.png": ((H, W), np.uint16),
    "rgba8.png": ((H, W, 4), np.uint8),
    "rgba16.png": ((H, W, 4), np.uint16),
    "gray_alpha8.png": ((H, W, 2), np.uint8),
    "rgb8.jpg": ((H, W, 3), np.uint8),
    "rgbf.tif": ((H, W, 3), np.float32),
}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_upscale_keeps_the_kind(tmp_path: Path, name: str) -> None:
    shape, dtype = KINDS[name]
    source = write_image(tmp_path / name, _image(shape, dtype))
    result = _invoke(source, *FAST)
    assert result.exit_code == 0, result.output
    stem, ext = name.rsplit(".", 1)
    out = read_image(tmp_path / f"{stem}_x4.{ext}")
    assert out.shape == (4 * H, 4 * W, *shape[2:])
    assert out.dtype == dtype


def test_output_alpha_is_the_upscaled_alpha(tmp_path: Path) -> None:
    image = _image((H, W, 4), np.uint8)
    image[..., 3] = 255
    image[:, : W // 2, 3] = 0
    source = write_image(tmp_path / "a.png", image)
    assert _invoke(source, *FAST).exit_code == 0
    alpha = read_image(tmp_path / "a_x4.png")[..., 3]
    assert alpha[:, :8].max() <= 5 and alpha[:, -8:].min() >= 250


# ----------------------------------------------------------------------------------------- outputs, -o


def test_sigma_line_printed_once_when_not_given(tmp_path: Path) -> None:
    a = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    b = write_image(tmp_path / "b.png", _image((H, W, 3), np.uint8, seed=1))
    result = _invoke(a, b, *FAST)
    assert result.exit_code == 0
    sigma_lines = [line for line in result.stderr.splitlines() if line.startswith("sigma ")]
    assert sigma_lines == ["sigma 0.06 (model default; override with --sigma)"]
    result = _invoke(a, *FAST, "--sigma", "0.02")
    assert "model default" not in result.output
    result = _invoke(a, "--model", "tiny-rrdbnet", "--device", "cpu", "--samples", "1")
    assert result.exit_code == 0 and "plain model: no smoothing noise" in result.stderr


def test_quiet_prints_nothing_on_success(tmp_path: Path) -> None:
    a = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    result = _invoke(a, *FAST, "--quiet")
    assert result.exit_code == 0
    assert result.output == ""
    assert (tmp_path / "a_x4.png").is_file()


def test_output_file_picks_the_format(tmp_path: Path) -> None:
    source = write_image(tmp_path / "deep.png", _image((H, W, 3), np.uint16))
    assert _invoke(source, *FAST, "-o", tmp_path / "out.tiff").exit_code == 0
    assert read_image(tmp_path / "out.tiff").dtype == np.uint16
    result = _invoke(source, *FAST, "-o", tmp_path / "out.jpg")
    assert result.exit_code == 0
    assert read_image(tmp_path / "out.jpg").dtype == np.uint8
    assert "warning:" in result.stderr and "rounded to 8 bits" in result.stderr


def test_output_folder_for_several_inputs(tmp_path: Path) -> None:
    a = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    b = write_image(tmp_path / "b.jpg", _image((H, W, 3), np.uint8))
    result = _invoke(a, b, *FAST, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert _files(tmp_path / "out") == ["a_x4.png", "b_x4.jpg"]


def test_folder_input(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for i in range(2):
        write_image(tmp_path / "in" / f"f{i}.png", _image((H, W), np.uint8, seed=i))
    result = _invoke(tmp_path / "in", *FAST, "-o", f"{tmp_path}/out/")
    assert result.exit_code == 0, result.output
    assert _files(tmp_path / "out") == ["f0_x4.png", "f1_x4.png"]


def test_output_file_with_several_inputs_is_a_usage_error(tmp_path: Path) -> None:
    a = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    b = write_image(tmp_path / "b.png", _image((H, W, 3), np.uint8))
    result = _invoke(a, b, *FAST, "-o", tmp_path / "x.png")
    assert result.exit_code == 2
    assert len(_error_lines(result)) == 1 and "give a folder" in result.stderr
    assert _files(tmp_path) == ["a.png", "b.png"]


def test_refuses_to_overwrite_the_input(tmp_path: Path) -> None:
    a = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    before = a.read_bytes()
    result = _invoke(a, *FAST, "-o", a)
    assert result.exit_code == 1
    assert _error_lines(result) == [f"error: refusing to overwrite the input {a} (choose another -o)"]
    assert a.read_bytes() == before


# --------------------------------------------------------------------------------------------- bad inputs


def test_bad_inputs_one_line_each_and_the_batch_goes_on(tmp_path: Path) -> None:
    good = write_image(tmp_path / "good.png", _image((H, W, 3), np.uint8))
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.png").touch()
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    missing = tmp_path / "missing.png"
    result = _invoke(
        tmp_path / "text.png", missing, tmp_path / "empty.png", good, tmp_path / "cut.png", *FAST
    )
    assert result.exit_code == 1
    errors = _error_lines(result)
    assert len(errors) == 4, result.stderr
    assert any("text.png: not an image" in e for e in errors)
    assert any("missing.png: no such file" in e for e in errors)
    assert any("empty.png: empty file" in e for e in errors)
    assert any("cut.png: truncated PNG" in e for e in errors)
    assert "4 of 5 inputs failed" in result.stderr
    assert read_image(tmp_path / "good_x4.png").shape == (4 * H, 4 * W, 3)
    assert not (tmp_path / "text_x4.png").exists() and not (tmp_path / "cut_x4.png").exists()


def test_unknown_model_is_one_line(tmp_path: Path) -> None:
    a = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    result = _invoke(a, "--model", "no-such-model", "--device", "cpu")
    assert result.exit_code == 1
    assert len(_error_lines(result)) == 1 and "no-such-model" in result.stderr


def test_bad_option_values_are_one_line(tmp_path: Path) -> None:
    a = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    result = _invoke(a, *FAST, "--sigma", "0", "--bounds", "0.01")
    assert result.exit_code == 1 and len(_error_lines(result)) == 1 and "sigma > 0" in result.stderr
    result = _invoke(a, *FAST, "--alpha", "1")
    assert result.exit_code == 2


def test_small_tiles_work_down_to_the_models_minimum(tmp_path: Path) -> None:
    # Tiles of 16 pixels or less used to be refused for not exceeding the fixed 16-pixel overlap; now the
    # floor is the model's measured minimum (tiny-rrdbnet: 12 px, models/arch/rrdbnet.py tile_limits).
    a = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    result = _invoke(a, *FAST, "--tile", "12")
    assert result.exit_code == 0, result.stderr
    assert read_image(tmp_path / "a_x4.png").shape == (4 * H, 4 * W, 3)
    refused = _invoke(tmp_path / "a.png", *FAST, "--tile", "8", "-o", tmp_path / "b.png")
    assert refused.exit_code == 1 and not (tmp_path / "b.png").exists()
    assert _error_lines(refused) == [
        "error: tile 8 px is too small for this RRDBNet model: tiles under 12 px give visibly different "
        "output (seams, blocks: the network sees too little context); use --tile 12 or more, or --tile 0 "
        "for the whole image"
    ]


def test_two_inputs_one_output_is_refused(tmp_path: Path) -> None:
    for sub in ("d1", "d2"):
        (tmp_path / sub).mkdir()
        write_image(tmp_path / sub / "a.png", _image((H, W, 3), np.uint8))
    result = _invoke(tmp_path / "d1" / "a.png", tmp_path / "d2" / "a.png", *FAST, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert len(_error_lines(result)) == 1 and "is also the output of" in result.stderr
    assert _files(tmp_path / "out") == ["a_x4.png"]


# ------------------------------------------------------------------------------------------------ bounds


def test_bounds_files_and_summary(tmp_path: Path) -> None:
    source = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    result = _invoke(
        source, "--model", "tiny-rrdbnet", "--device", "cpu", "--samples", "9", "--bounds", "0.001"
    )
    assert result.exit_code == 0, result.output
    assert _files(tmp_path) == ["a.png", "a_x4.png", "a_x4_lower.png", "a_x4_upper.png"]
    lower = read_image(tmp_path / "a_x4_lower.png").astype(int)
    upper = read_image(tmp_path / "a_x4_upper.png").astype(int)
    median = read_image(tmp_path / "a_x4.png").astype(int)
    assert lower.shape == upper.shape == median.shape == (4 * H, 4 * W, 3)
    assert (lower <= median + 1).all() and (median <= upper + 1).all()
    assert "Certified bounds" in result.stdout


def test_vacuous_bounds_are_refused_with_the_samples_needed(tmp_path: Path) -> None:
    source = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    result = _invoke(source, *FAST, "--bounds", "0.05")
    assert result.exit_code == 1
    errors = _error_lines(result)
    assert len(errors) == 1 and "vacuous at n=5" in errors[0]
    assert "at least n=17 samples are needed" in errors[0]
    assert _files(tmp_path) == ["a.png"]


# ---------------------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_between_images_exits_130_and_keeps_finished_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from certsr_rt.runtime.upscaler import Upscaler

    a = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    b = write_image(tmp_path / "b.png", _image((H, W, 3), np.uint8, seed=1))
    real = Upscaler.upscale
    calls = []

    def interrupt_second(self: Upscaler, image: np.ndarray, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, image, **kwargs)

    monkeypatch.setattr(Upscaler, "upscale", interrupt_second)
    result = _invoke(a, b, *FAST)
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines()[-1].startswith("interrupted after 1 of 2 inputs")
    assert _files(tmp_path) == ["a.png", "a_x4.png", "b.png"]


def test_ctrl_c_mid_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))

    def half_then_interrupt(f: object, data: bytes) -> None:
        f.write(data[: len(data) // 2])  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "_write_chunks", half_then_interrupt)
    result = _invoke(a, *FAST)
    assert result.exit_code == 130
    assert _files(tmp_path) == ["a.png"]


def test_an_exported_onnx_file_runs_as_the_model(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from certsr_rt.export.onnx import export_onnx
    from certsr_rt.models import load_model

    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(load_model("tiny-srvgg"), onnx_path)
    a = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    common = ["--device", "cpu", "--samples", "5", "--sigma", "0.05", "--seed", "0"]
    by_file = _invoke(a, "--model", onnx_path, *common, "-o", tmp_path / "file.png")  # onnxruntime by default
    assert by_file.exit_code == 0, by_file.stderr
    by_name = _invoke(a, "--model", "tiny-srvgg", *common, "-o", tmp_path / "name.png")
    assert by_name.exit_code == 0, by_name.stderr
    by_file_img, by_name_img = (read_image(tmp_path / f).astype(int) for f in ("file.png", "name.png"))
    assert np.abs(by_file_img - by_name_img).max() <= 1
    # A file is not a torch model; a foreign or missing file is one line.
    result = _invoke(a, "--model", onnx_path, "--backend", "torch", "-o", tmp_path / "t.png")
    assert result.exit_code == 1 and "torch backend needs a loaded model" in result.stderr
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    result = _invoke(a, "--model", tmp_path / "junk.onnx", "-o", tmp_path / "j.png")
    assert result.exit_code == 1 and len(_error_lines(result)) == 1 and "junk.onnx" in result.stderr


def test_the_one_time_onnx_export_is_announced_unless_quiet(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    a = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    args = [a, "--model", "tiny-srvgg", "--device", "cpu", "--samples", "3", "--backend", "onnxruntime"]
    quiet = _invoke(*args, "-q", "-o", tmp_path / "q.png", env={"CERTSR_RT_CACHE": str(tmp_path / "c1")})
    assert quiet.exit_code == 0 and quiet.stderr == ""
    loud = _invoke(*args, "-o", tmp_path / "l.png", env={"CERTSR_RT_CACHE": str(tmp_path / "c2")})
    assert loud.exit_code == 0
    assert "exporting tiny-srvgg to ONNX (fp32) for this backend" in loud.stderr
    assert "warning" not in loud.stderr


def test_onnxruntime_is_the_default_on_cpu_and_torch_stays_available(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    a = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    args = [a, "--model", "tiny-srvgg", "--device", "cpu", "--samples", "3", "--seed", "1"]
    default = _invoke(*args, "-o", tmp_path / "d.png", env={"CERTSR_RT_CACHE": str(tmp_path / "c")})
    assert default.exit_code == 0 and "auto backend: using onnxruntime on cpu" in default.stderr
    assert "exporting tiny-srvgg to ONNX (fp32)" in default.stderr  # the one-time export, announced
    again = _invoke(*args, "-o", tmp_path / "e.png", env={"CERTSR_RT_CACHE": str(tmp_path / "c")})
    assert again.exit_code == 0 and "exporting" not in again.stderr  # cached
    plain = _invoke(*args, "--backend", "torch", "-o", tmp_path / "t.png")
    assert plain.exit_code == 0 and "backend" not in plain.stderr
    d, t = read_image(tmp_path / "d.png").astype(int), read_image(tmp_path / "t.png").astype(int)
    assert np.abs(d - t).max() <= 1  # same noise on both backends; uint8 rounding at most


def test_sigterm_in_a_real_process_exits_143_and_leaves_no_partial_file(tmp_path: Path) -> None:
    a = write_image(tmp_path / "a.png", _image((32, 32, 3), np.uint8))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "certsr_rt.cli.app", "upscale", str(a), "-o", f"{out}/"]
    # The torch backend: with the default (onnxruntime on CPU) a cold model cache would first export the
    # model, and the signal would land in the export (the test then failed when run on its own).
    cmd += [
        "--model",
        "tiny-rrdbnet",
        "--device",
        "cpu",
        "--samples",
        "5000",
        "--tile",
        "0",
        "--backend",
        "torch",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # The first stderr line means the model is loaded and work starts: "sigma 0.06 (model default ...)".
    code, line, err = signal_after_first_line(cmd, signal.SIGTERM, env=env, stream="stderr", delay=1.0)
    assert line.startswith("sigma"), line + err
    assert code == 143, err
    assert "terminated after 0 of 1 inputs" in err and "Traceback" not in err
    assert not out.exists() or _files(out) == []


def test_too_large_input_is_one_line_and_the_batch_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import certsr_rt.runtime.upscaler as upscaler_module

    big = write_image(tmp_path / "big.png", _image((120, 120, 3), np.uint8))
    small = write_image(tmp_path / "small.png", _image((H, W, 3), np.uint8))
    monkeypatch.setattr(upscaler_module, "_available_memory", lambda device: 8 * 2**20)
    result = _invoke(big, small, *FAST, "-o", tmp_path / "out")
    assert result.exit_code == 1
    lines = _error_lines(result)
    assert len(lines) == 1 and "big.png" in lines[0] and "too large for these options" in lines[0]
    assert _files(tmp_path / "out") == ["small_x4.png"]


# ----------------------------------------------------------------------------------------------- video


def test_video_without_support_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "certsr_rt.cli.upscale_video", None)  # import fails
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 64)
    good = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    result = _invoke(clip, good, *FAST)
    assert result.exit_code == 1
    assert _error_lines(result) == [
        f"error: cannot upscale {clip}: video support is not installed: pip install 'certsr-rt[video]'"
    ]
    assert (tmp_path / "a_x4.png").is_file()


def test_video_is_routed_to_the_video_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, ...]] = []

    def run_video(
        source: Path, target: Path, upscaler: object, *, progress: object, fresh_noise: bool, **_: object
    ) -> None:
        calls.append((source, target, upscaler, progress, fresh_noise))
        progress(1, 2)  # type: ignore[operator]
        progress(2, 2)  # type: ignore[operator]
        target.write_bytes(b"video")

    fake = types.ModuleType("certsr_rt.cli.upscale_video")
    fake.run_video = run_video  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "certsr_rt.cli.upscale_video", fake)
    clip = tmp_path / "clip.mkv"
    clip.write_bytes(b"\x00")
    result = _invoke(clip, *FAST)
    assert result.exit_code == 0, result.output
    ((source, target, upscaler, progress, fresh_noise),) = calls
    assert source == clip and target == tmp_path / "clip_x4.mkv"
    assert type(upscaler).__name__ == "Upscaler" and callable(progress)
    assert target.read_bytes() == b"video"
    assert fresh_noise is False
    target.unlink()
    assert _invoke(clip, *FAST, "--fresh-noise").exit_code == 0
    assert calls[-1][4] is True


def test_real_video(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 16, 12, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(_image((12, 16, 3), np.uint8, seed=i), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    result = _invoke(clip, *FAST)
    assert result.exit_code == 0, result.output
    with av.open(str(tmp_path / "clip_x4.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (48, 64, 3)


# -------------------------------------------------------------------------------------------- progress


class _FakeProgress:
    """Records what the batch tracker asks a ProgressDisplay to show (the bar's numbers)."""

    plain = False

    def __init__(self) -> None:
        self.updates: list[dict[str, object]] = []

    def update(
        self, completed: float, total: float | None = None, *, description: str | None = None, **_: object
    ) -> None:
        shown: dict[str, object] = {"total": total, "completed": completed}
        if description is not None:
            shown["description"] = description
        self.updates.append(shown)


def test_batch_progress_spans_images_and_samples() -> None:
    fake = _FakeProgress()
    tracker = _BatchProgress(fake, 3)  # type: ignore[arg-type]
    tracker.start(1, 3, "a.png", 4)
    assert fake.updates[-1] == {"total": 12.0, "completed": 0, "description": "1/3 a.png"}
    tracker.on_tile(2, 4)
    assert fake.updates[-1]["completed"] == 2.0
    tracker.finish()
    tracker.skip()  # the second input failed to read
    tracker.start(3, 3, "c.png", 8)
    assert fake.updates[-1]["total"] == 12.0 and fake.updates[-1]["completed"] == 4
    tracker.on_tile(8, 8)
    assert fake.updates[-1]["completed"] == 12.0


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    a = write_image(tmp_path / "a.png", _image((H, W, 3), np.uint8))
    b = write_image(tmp_path / "b.png", _image((H, W, 3), np.uint8, seed=1))
    result = _invoke(a, b, *FAST, "--tile", "32", env={"FORCE_COLOR": "1", "TTY_INTERACTIVE": "1"})
    assert result.exit_code == 0, result.output
    assert "2/2 b.png" in result.stderr


# ---------------------------------------------------------------------------------------------- --help


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(app, ["upscale", "--help"])
    assert result.exit_code == 0
    options = (
        "--output --sigma --samples --seed --model --device --tile --bounds --alpha --backend --precision"
    )
    for option in [*options.split(), "--quiet"]:
        assert option in result.output


def test_command_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, certsr_rt.cli.upscale\n"
        "heavy = [m for m in ('torch', 'numpy', 'cv2', 'certsr_rt.runtime') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_real_model_on_a_real_image(tmp_path: Path) -> None:
    source = ASSETS / "Set5" / "LR_x4" / "img_001.png"
    if not source.is_file():
        pytest.skip(f"real assets not present ({source})")
    crop = read_image(source)[:32, :32]
    cropped = write_image(tmp_path / "crop.png", crop)
    # the default model (certsr-compact-x4), and RRDBNet at its smallest tile (96)
    result = _invoke(cropped, "--samples", "3", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "certsr-compact-x4" in result.stderr and "sigma 0.06 (model default" in result.stderr
    rrdb_args = ["--model", "realesrgan-x4plus", "--samples", "3", "--tile", "96", "--device", "cpu"]
    rrdb = _invoke(cropped, *rrdb_args, "-o", str(tmp_path / "rrdb.png"))
    assert rrdb.exit_code == 0, rrdb.output
    assert "sigma 0.01 (model default" in rrdb.stderr
    assert read_image(tmp_path / "rrdb.png").shape == (128, 128, 3)
    out = read_image(tmp_path / "crop_x4.png")
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    import cv2

    bicubic = cv2.resize(crop, (128, 128), interpolation=cv2.INTER_CUBIC)
    # A real super-resolved image, not a black or garbage one: close to bicubic on average.
    assert np.abs(out.astype(float) - bicubic.astype(float)).mean() < 20
