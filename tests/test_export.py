"""ONNX export: validation against torch, metadata, dynamic shapes, the ONNX cache and the export command."""

from __future__ import annotations

import copy
import importlib.machinery
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from helpers import make_model, tiny_rrdbnet, tiny_srvgg  # noqa: E402

from certsr_rt.errors import InputError, MissingDependencyError  # noqa: E402
from certsr_rt.export import onnx as onnx_export  # noqa: E402
from certsr_rt.models.arch.rrdbnet import RRDBNet  # noqa: E402
from certsr_rt.models.arch.srvgg import SRVGGNetCompact  # noqa: E402
from certsr_rt.models.descriptor import SRModel  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rrdb_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[SRModel, onnx_export.ExportReport]:
    model = tiny_rrdbnet()
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    return model, onnx_export.export_onnx(model, path, default_samples=25)


def _run_ort(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


def test_fp32_export_validates_and_agrees_with_torch_at_other_shapes(rrdb_export) -> None:
    model, report = rrdb_export
    assert report.path.is_file()
    assert report.validation is not None and report.validation.passed
    assert report.validation.max_abs_error <= 1e-4
    assert len(report.validation.per_shape) == 2
    assert len({s for s, _ in report.validation.per_shape}) == 2
    # Independently of the built-in validation: shapes not used by it, batch 3, odd sizes.
    x = torch.rand(3, 3, 5, 11, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model.module(x).numpy()
    got = _run_ort(report.path, x)
    assert got.shape == (3, 3, 20, 44)
    assert np.abs(got - expected).max() <= 1e-4


def test_export_has_dynamic_shapes_embedded_weights_and_metadata(rrdb_export) -> None:
    model, report = rrdb_export
    proto = onnx.load(str(report.path), load_external_data=False)
    assert not list(report.path.parent.glob("*.data"))
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) and d for d in (dims[0], dims[2], dims[3]))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {o.domain: o.version for o in proto.opset_import}[""] == 18
    meta = onnx_export.read_metadata(report.path)
    assert meta == report.metadata
    assert (meta.name, meta.architecture, meta.scale, meta.precision) == (
        "tiny-rrdbnet",
        "RRDBNet",
        4,
        "fp32",
    )
    assert meta.hyperparameters == model.hyperparameters
    assert meta.default_sigma == 0.03 and meta.default_samples == 25
    assert meta.weights_sha256 == model.sha256
    assert meta.state_dict_sha256 == onnx_export.model_digest(model.module)
    assert report.sha256 == onnx_export.file_sha256(report.path)


def test_fp16_export_keeps_float32_io_and_is_within_the_fp16_bound(tmp_path: Path) -> None:
    model = tiny_srvgg(default_sigma=None)
    before = copy.deepcopy(model.module.state_dict())
    report = onnx_export.export_onnx(model, tmp_path / "half.onnx", fp16=True)
    # The caller's module is untouched (export works on a copy).
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())
    assert next(model.module.parameters()).dtype == torch.float32
    proto = onnx.load(str(report.path))
    weight_types = {t.data_type for t in proto.graph.initializer if len(t.dims) == 4}
    assert weight_types == {onnx.TensorProto.FLOAT16}
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert report.metadata.precision == "fp16" and report.metadata.default_sigma is None
    assert report.validation is not None and report.validation.tolerance == onnx_export.FP16_TOLERANCE
    assert report.validation.passed


def test_failed_validation_raises_with_the_error_and_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    model = tiny_srvgg(default_sigma=None)
    real_export = onnx_export._torch_export

    def export_other_weights(module: nn.Module, path: Path, **kw: Any) -> None:
        wrong = copy.deepcopy(module)
        with torch.no_grad():
            wrong.body[0].bias.add_(0.5)  # what a broken exporter would produce
        real_export(wrong, path, **kw)

    monkeypatch.setattr(onnx_export, "_torch_export", export_other_weights)
    target = tmp_path / "bad.onnx"
    with pytest.raises(
        onnx_export.ExportValidationError, match=r"max abs error [0-9.e+-]+ \(tolerance 0.0001"
    ):
        onnx_export.export_onnx(model, target)
    assert list(tmp_path.iterdir()) == []


def test_validation_report_counts_non_finite_output_as_failure() -> None:
    report = onnx_export.ValidationReport(float("inf"), (((1, 3, 4, 4), float("inf")),), 1e-4)
    assert not report.passed and "FAILED" in report.summary()


def _foreign_onnx(path: Path) -> Path:
    """A valid ONNX file that certsr-rt did not write (an Identity graph, no certsr metadata)."""
    node = onnx.helper.make_node("Identity", ["input"], ["output"])
    vi = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [node], "g", [vi("input", onnx.TensorProto.FLOAT, [1])], [vi("output", onnx.TensorProto.FLOAT, [1])]
    )
    onnx.save(onnx.helper.make_model(graph), str(path))
    return path


def test_read_metadata_rejects_files_not_written_by_export(tmp_path: Path) -> None:
    path = _foreign_onnx(tmp_path / "foreign.onnx")
    with pytest.raises(InputError, match="not a certsr-rt ONNX export: expected metadata keys certsr.name"):
        onnx_export.read_metadata(path)
    with pytest.raises(InputError, match="does not exist"):
        onnx_export.read_metadata(tmp_path / "missing.onnx")


def test_model_digest_ignores_dtype_and_tracks_weights() -> None:
    model = tiny_srvgg(default_sigma=None)
    with torch.no_grad():
        for p in model.module.parameters():
            p.copy_(p.half().float())  # representable in half, like the bundled weights
    digest = onnx_export.model_digest(model.module)
    assert onnx_export.model_digest(copy.deepcopy(model.module).half()) == digest
    changed = copy.deepcopy(model.module)
    with torch.no_grad():
        changed.body[0].weight[0, 0, 0, 0] += 1.0
    assert onnx_export.model_digest(changed) != digest


def test_cached_onnx_exports_once_per_content(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("CERTSR_RT_CACHE", str(tmp_path / "cache"))
    calls = []
    real = onnx_export.export_onnx

    def counting(*args: Any, **kwargs: Any) -> onnx_export.ExportReport:
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "export_onnx", counting)
    model = tiny_srvgg(default_sigma=None)
    with caplog.at_level("INFO", logger="certsr_rt"):
        first = onnx_export.cached_onnx(model)
        assert first.parent == tmp_path / "cache" / "onnx" and first.is_file()
        assert onnx_export.cached_onnx(model) == first and len(calls) == 1
    # The one-time export says so (the upscale command shows info lines unless --quiet); the cached file
    # is silent.
    (note,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("exporting")]
    assert note.startswith("exporting tiny-srvgg to ONNX (fp32) for this backend: once per model")
    assert str(first) in note
    same_weights = tiny_srvgg(seed=0, default_sigma=None)
    assert onnx_export.cached_onnx(same_weights) == first and len(calls) == 1
    other = onnx_export.cached_onnx(tiny_srvgg(seed=1))
    assert other != first and len(calls) == 2
    assert onnx_export.onnx_cache_path(model, fp16=True) not in (first, other)


def test_export_names_the_extra_when_onnx_is_missing(monkeypatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingDependencyError, match=r"certsr-rt\[onnx\]"):
        onnx_export.export_onnx(tiny_srvgg(default_sigma=None), tmp_path / "x.onnx")


# ----------------------------------------------------------------------------- the export command


def _cli(monkeypatch, model: SRModel):
    import typer
    from typer.testing import CliRunner

    from certsr_rt.cli import export as export_cli

    monkeypatch.setattr(export_cli, "_load_model", lambda name: model)
    app = typer.Typer()
    app.command("export")(export_cli.export_command)
    app.command("noop")(lambda: None)  # keep "export" a sub-command, as in the real app
    return CliRunner(), app


def test_export_command_prints_the_error_and_writes_the_file(tmp_path: Path, monkeypatch) -> None:
    runner, app = _cli(monkeypatch, tiny_srvgg(default_sigma=None))
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", "tiny-srvgg", "-o", str(out), "--samples", "31"])
    assert result.exit_code == 0, result.output
    assert "max abs error" in result.output and "ok" in result.output
    assert onnx_export.read_metadata(out).default_samples == 31


def test_export_command_says_what_the_fp16_validation_measures(tmp_path: Path, monkeypatch) -> None:
    runner, app = _cli(monkeypatch, tiny_srvgg(default_sigma=None))
    result = runner.invoke(app, ["export", "tiny-srvgg", "-o", str(tmp_path / "h.onnx"), "--fp16"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    validation = next(i for i, line in enumerate(lines) if line.startswith("validation ("))
    assert lines[validation + 1] == f"note: {onnx_export.FP16_VALIDATION_NOTE}"
    assert "half-precision weights" in lines[validation + 1] and "not measured" in lines[validation + 1]
    result = runner.invoke(app, ["export", "tiny-srvgg", "-o", str(tmp_path / "f.onnx")])
    assert result.exit_code == 0 and "note:" not in result.output


def test_export_command_fails_on_bad_validation(tmp_path: Path, monkeypatch) -> None:
    runner, app = _cli(monkeypatch, tiny_srvgg(default_sigma=None))
    bad = onnx_export.ValidationReport(0.5, (((1, 3, 24, 32), 0.5),), 1e-4)
    monkeypatch.setattr(onnx_export, "validate_onnx", lambda *a, **k: bad)
    result = runner.invoke(app, ["export", "tiny-srvgg", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code != 0
    assert isinstance(result.exception, onnx_export.ExportValidationError)
    assert "max abs error 0.5" in str(result.exception)
    assert not (tmp_path / "m.onnx").exists()


def test_export_engine_without_tensorrt_names_the_extra_before_exporting(tmp_path: Path, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    runner, app = _cli(monkeypatch, tiny_srvgg(default_sigma=None))
    result = runner.invoke(app, ["export", "tiny-srvgg", "-o", str(tmp_path / "m.onnx"), "--engine"])
    assert isinstance(result.exception, MissingDependencyError)
    assert "certsr-rt[trt]" in str(result.exception)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("engine", [[], ["--engine"]])
def test_export_rejects_a_bad_max_size_before_any_work(tmp_path: Path, monkeypatch, engine: list) -> None:
    from typer.testing import CliRunner

    from certsr_rt.cli import export as export_cli
    from certsr_rt.cli.app import app

    loads: list[str] = []
    monkeypatch.setattr(export_cli, "_load_model", loads.append)
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", "x", "-o", str(out), *engine, "--max-size", "garbage"])
    assert result.exit_code == 2, result.output  # a usage error, as click reports them
    assert "Invalid value for '--max-size'" in result.output
    assert "Expected a size like 256x256 (height x width, positive), but got 'garbage'" in result.output
    assert loads == [] and not out.exists()


def test_export_command_with_registered_tiny_model(tmp_path: Path) -> None:
    try:
        from certsr_rt.cli.export import _load_model

        model = _load_model("tiny-srvgg")
    except ImportError:
        pytest.skip("certsr_rt.models.load_model is not available")
    report = onnx_export.export_onnx(model, tmp_path / "t.onnx")
    assert report.metadata.name == "tiny-srvgg" and report.metadata.weights_sha256 == model.sha256


# ----------------------------------------------------------------------------- real weights (slow)


# The RRDBNet export takes 25-150 s on the 2-core CI machine: its fp16 case is the one that checks the stated
# fp16 bound on real weights; fp32 export of the same graph is covered by the compact model and the tiny ones.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("file", "arch", "hp", "fp16"),
    [
        ("realesr_animevideov3_x4.pth", "SRVGGNetCompact", {"num_conv": 16}, False),
        ("realesr_animevideov3_x4.pth", "SRVGGNetCompact", {"num_conv": 16}, True),
        ("realesrgan_x4plus.pth", "RRDBNet", {}, True),
    ],
)
def test_real_weights_export_validates(tmp_path: Path, file: str, arch: str, hp: dict, fp16: bool) -> None:
    weights = REPO / "certsr_rt" / "models" / "weights" / file
    module = (SRVGGNetCompact if arch == "SRVGGNetCompact" else RRDBNet)(**hp)
    module.load_state_dict(torch.load(weights, weights_only=True)["params_ema"])
    model = make_model(module.eval(), file, arch, hp, sha256=onnx_export.file_sha256(weights))
    report = onnx_export.export_onnx(model, tmp_path / "real.onnx", fp16=fp16)
    assert report.validation is not None and report.validation.passed, report.validation.summary()


# ----------------------------------------------------------------------------- describing exported files


def test_is_exported_path_by_suffix_any_case() -> None:
    from certsr_rt.export import is_exported_path

    for yes in ("m.onnx", "M.ONNX", Path("dir/x4.Engine"), "a.b.engine"):
        assert is_exported_path(yes)
    for no in ("realesrgan-x4plus", "m.pth", "m.safetensors", "m.json", "onnx", "m.onnx.tmp"):
        assert not is_exported_path(no)


def test_describe_exported_onnx(rrdb_export, tmp_path: Path) -> None:
    from certsr_rt.export import ExportedModel, describe_exported

    model, report = rrdb_export
    described = describe_exported(str(report.path))
    assert described == ExportedModel(
        path=report.path,
        kind="onnx",
        name="tiny-rrdbnet",
        architecture="RRDBNet",
        scale=4,
        in_channels=3,
        out_channels=3,
        default_sigma=0.03,
        precision="fp32",
    )
    upper = tmp_path / "TINY.ONNX"
    upper.write_bytes(report.path.read_bytes())
    assert describe_exported(upper).kind == "onnx"


def _engine_with_record(tmp_path: Path, model: dict[str, Any], name: str = "m") -> Path:
    from certsr_rt.export.tensorrt import EngineKey, GpuInfo, ShapeProfile

    key = EngineKey("ab" * 32, "fp16", ShapeProfile(max_batch=8), "10.9.0.34", GpuInfo("GPU", (9, 0)))
    engine = tmp_path / f"{name}.engine"
    engine.write_bytes(b"ENGINE")
    engine.with_suffix(".json").write_text(json.dumps({"key": key.to_json(), "model": model}))
    return engine


def test_describe_exported_engine_from_its_record_old_and_new(tmp_path: Path) -> None:
    from certsr_rt.export import describe_exported
    from certsr_rt.export.tensorrt import read_engine_record

    new = {
        "name": "x4plus",
        "architecture": "RRDBNet",
        "scale": 4,
        "in_channels": 3,
        "out_channels": 3,
        "default_sigma": 0.01,
    }
    described = describe_exported(_engine_with_record(tmp_path, new))
    assert (described.kind, described.name, described.architecture) == ("engine", "x4plus", "RRDBNet")
    assert (described.scale, described.default_sigma, described.precision) == (4, 0.01, "fp16")
    # Records written before architecture and default_sigma were stored still read.
    old = {"name": "old", "scale": 4, "in_channels": 3, "out_channels": 3}
    path = _engine_with_record(tmp_path, old, "old")
    described = describe_exported(path)
    assert (described.architecture, described.default_sigma) == ("unknown", None)
    assert read_engine_record(path)[1] == {**old, "architecture": "unknown", "default_sigma": None}


def test_describe_exported_errors_are_one_line_input_errors(tmp_path: Path) -> None:
    from certsr_rt.export import describe_exported

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    foreign = _foreign_onnx(tmp_path / "foreign.onnx")
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"E")
    broken = _engine_with_record(tmp_path, {"name": "no scale"}, "broken")
    (tmp_path / "dir.onnx").mkdir()
    cases = {
        tmp_path / "missing.onnx": "Expected an exported model file at .*missing.onnx, but found nothing",
        tmp_path / "dir.onnx": "but found a directory",
        tmp_path / "model.pth": r"Expected an exported model \(.onnx or .engine\), but got .*model.pth",
        garbage: "Expected an ONNX model in .*garbage.onnx, but it could not be parsed",
        foreign: "not a certsr-rt ONNX export: expected metadata keys certsr.name",
        bare: "Expected the build record bare.json beside the TensorRT engine .*, but found none",
        broken: "Expected a certsr-rt engine build record in .*broken.json, but it is unreadable",
    }
    for path, message in cases.items():
        with pytest.raises(InputError, match=message) as info:
            describe_exported(path)
        assert "\n" not in str(info.value)


def test_backends_take_described_exports_never_paths(rrdb_export, tmp_path: Path) -> None:
    from certsr_rt.export import describe_exported
    from certsr_rt.runtime.backends import create_backend

    _, report = rrdb_export
    for given in (report.path, str(report.path)):
        backend = create_backend("onnxruntime", describe_exported(given), "cpu", "auto")
        assert (backend.name, backend.scale, backend.precision) == ("onnxruntime", 4, "fp32")
        for name in ("onnxruntime", "torch", "auto"):
            with pytest.raises(InputError, match="Expected an SRModel or an ExportedModel, but got the path"):
                create_backend(name, given, "cpu", "auto")  # type: ignore[arg-type]
    engine = _engine_with_record(tmp_path, {"name": "m", "scale": 4, "in_channels": 3, "out_channels": 3})
    with pytest.raises(InputError, match="is a TensorRT engine; run it with the tensorrt backend"):
        create_backend("onnxruntime", describe_exported(engine), "cpu", "auto")


def _fake_gpu_export(monkeypatch, tmp_path: Path):
    """A fake tensorrt and a pretend GPU, so ``export --engine`` runs its whole sequence on CPU."""
    import sys

    from test_backends import H100, make_fake_trt

    from certsr_rt.cli import export as export_cli
    from certsr_rt.export import tensorrt as trt_export

    trt, calls = make_fake_trt()
    # torch.export looks optional modules up with find_spec, which needs a spec on a module in sys.modules.
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(export_cli, "_cuda_available", lambda: True)
    monkeypatch.setattr(trt_export.GpuInfo, "of", classmethod(lambda cls, device: H100))
    monkeypatch.setenv("CERTSR_RT_CACHE", str(tmp_path / "cache"))
    return trt, calls


def test_export_engine_records_the_model_and_serves_the_backends_default(tmp_path: Path, monkeypatch) -> None:
    from test_backends import H100

    from certsr_rt.export import describe_exported
    from certsr_rt.export.tensorrt import EngineCache, ShapeProfile, prepare_engine

    trt, calls = _fake_gpu_export(monkeypatch, tmp_path)
    model = tiny_srvgg(default_sigma=0.02)
    runner, app = _cli(monkeypatch, model)
    args = ["export", "tiny-srvgg", "-o", str(tmp_path / "m.onnx"), "--engine", "--max-size", "512x512"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    (engine,) = (tmp_path / "cache" / "tensorrt").glob("*.engine")
    described = describe_exported(engine)
    assert (described.name, described.architecture, described.default_sigma) == (
        "tiny-srvgg",
        "SRVGGNetCompact",
        0.02,
    )
    # What the TensorRT backend asks for by default (batch 21, 256x256) is served by this engine.
    cached = onnx_export.onnx_cache_path(model)
    path, key = prepare_engine(
        trt,
        cached,
        precision="fp32",
        profile=ShapeProfile(),
        gpu=H100,
        cache=EngineCache(tmp_path / "cache" / "tensorrt"),
        model={},
    )
    assert path == engine and key.profile.max_height == 512
    assert sum(c[0] == "build" for c in calls) == 1
    # Exporting again for a smaller size finds the same engine and says so.
    args[-1] = "128x128"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "reusing a cached engine with a larger shape range (batch <= 21" in result.output
    assert f"engine: {engine}" in result.output and sum(c[0] == "build" for c in calls) == 1
