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
