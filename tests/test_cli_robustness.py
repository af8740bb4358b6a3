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
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {source}: the model broken from ") and "produced NaN or inf" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.safetensors", "in.png"]
    assert "invalid value" not in result.output
