"""The one atomic writer (certsr_rt.io.atomic) and the six writers behind it.

Each writer is made to fail midway (after part of its new file has been written); the old file must be
intact and no temporary file left. Each successful write must reach :func:`os.fsync`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
import torch

from certsr_rt.errors import InputError
from certsr_rt.io import atomic
from certsr_rt.io.atomic import AtomicFile, atomic_path, stale_partial_files, write_atomic


def _folder(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of os.fsync (which still runs)."""
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def _half_then(exc: BaseException) -> Callable[[BinaryIO, Any], None]:
    def write(f: BinaryIO, data: Any) -> None:
        view = memoryview(data)
        f.write(view[: max(1, len(view) // 2)])
        f.flush()
        raise exc

    return write


# --------------------------------------------------------------------------------------------- mechanism


def test_write_atomic_replaces_the_file_and_fsyncs(tmp_path: Path, fsyncs: list[int]) -> None:
    target = tmp_path / "sub" / "x.bin"
    assert write_atomic(target, b"old") == target
    assert fsyncs
    write_atomic(target, memoryview(b"new" * 1000))
    assert target.read_bytes() == b"new" * 1000
    assert _folder(target.parent) == ["x.bin"]


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_write_atomic_failing_midway_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    monkeypatch.setattr(atomic, "_write_chunks", _half_then(exc))
    if isinstance(exc, OSError):
        with pytest.raises(InputError, match=r"cannot write .*x\.bin: No space left on device"):
            write_atomic(target, b"new" * 100)
    else:
        with pytest.raises(KeyboardInterrupt):
            write_atomic(target, b"new" * 100)
    assert target.read_bytes() == b"old"
    assert _folder(tmp_path) == ["x.bin"]


def test_a_folder_as_target_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match=r"cannot write .*d: is a directory"):
        write_atomic(tmp_path / "d", b"x")
    assert _folder(tmp_path) == ["d"]


def test_atomic_path_names_a_hidden_temporary_beside_the_target(tmp_path: Path) -> None:
    target = tmp_path / "clip_x4.mp4"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.is_file() and not target.exists()
        tmp.write_bytes(b"video")
        # a hard kill here would leave exactly this file, which a later run recognises as its own
        assert stale_partial_files(target, older_than=time.time() + 10) == [tmp]
    assert target.read_bytes() == b"video" and _folder(tmp_path) == ["clip_x4.mp4"]


def test_commit_and_discard_by_hand(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_bytes(b"old")
    f = AtomicFile(target)
    f.temporary.write_bytes(b"new")
    f.discard()
    f.discard()  # idempotent
    assert target.read_bytes() == b"old" and _folder(tmp_path) == ["a.txt"]
    g = AtomicFile(target)
    g.temporary.write_bytes(b"new")
    assert g.commit() == target and target.read_bytes() == b"new"
    with pytest.raises(InputError, match="already finished"):
        g.commit()


def test_republishing_the_same_hard_link_leaves_no_temporary(tmp_path: Path) -> None:
    from certsr_rt.train.checkpoint import publish_latest

    gen = tmp_path / "checkpoints" / "net_g_00000001.pth"
    gen.parent.mkdir()
    gen.write_bytes(b"weights")
    publish_latest(gen, tmp_path)
    publish_latest(gen, tmp_path)  # both names already link one file: rename() does nothing
    assert _folder(tmp_path) == ["checkpoints", "net_g_latest.pth"]
    assert (tmp_path / "net_g_latest.pth").read_bytes() == b"weights"


# ---------------------------------------------------------------------------------------------- writers


def test_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsyncs: list[int]) -> None:
    from certsr_rt.io.images import read_image, write_image

    target = tmp_path / "a.png"
    old = np.zeros((8, 8, 3), np.uint8)
    write_image(target, old)
    assert fsyncs
    monkeypatch.setattr(atomic, "_write_chunks", _half_then(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_image(target, np.full((8, 8, 3), 200, np.uint8))
    assert np.array_equal(read_image(target), old) and _folder(tmp_path) == ["a.png"]


def test_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsyncs: list[int]) -> None:
    from certsr_rt.train import checkpoint

    target = tmp_path / "state.pth"
    checkpoint.atomic_save({"a": torch.ones(2)}, target)
    assert fsyncs
    real_save = torch.save

    def save_half(obj: Any, f: BinaryIO) -> None:
        real_save(obj, f)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", save_half)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_save({"a": torch.zeros(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))
    assert _folder(tmp_path) == ["state.pth"]


def test_latest_generator_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsyncs: list[int]) -> None:
    from certsr_rt.train import checkpoint

    old, new = tmp_path / "checkpoints" / "old.pth", tmp_path / "checkpoints" / "new.pth"
    old.parent.mkdir()
    old.write_bytes(b"old weights")
    new.write_bytes(b"new weights" * 1000)
    checkpoint.publish_latest(old, tmp_path)
    assert fsyncs

    def no_link(src: Path, dst: Path) -> None:
        raise OSError(18, "Invalid cross-device link")

    def copy_half(src: Path, dst: Path) -> None:
        Path(dst).write_bytes(Path(src).read_bytes()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.os, "link", no_link)
    monkeypatch.setattr(checkpoint.shutil, "copyfile", copy_half)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.publish_latest(new, tmp_path)
    assert (tmp_path / "net_g_latest.pth").read_bytes() == b"old weights"
    assert _folder(tmp_path) == ["checkpoints", "net_g_latest.pth"]


def _tiny_result() -> Any:
    from certsr_rt.evaluation.runner import EvaluationResult, Measurement
    from certsr_rt.evaluation.specs import ModelEntry

    entry = ModelEntry("bicubic", label="bicubic")
    return EvaluationResult(
        entries=[entry],
        sweep=[],
        conditions=["clean"],
        images=["a.png"],
        measurements={entry.key: [Measurement("a.png", "clean", 30.0, 0.9, 0.1)]},
    )


def test_evaluation_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsyncs: list[int]) -> None:
    from certsr_rt.evaluation.report import write_report

    out = tmp_path / "out"
    written = write_report(_tiny_result(), out)
    assert len(fsyncs) >= len(written) == 4
    before = {p.name: p.read_bytes() for p in written}
    monkeypatch.setattr(atomic, "_write_chunks", _half_then(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_report(_tiny_result(), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_onnx_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsyncs: list[int]) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from certsr_rt.export import onnx as onnx_export
    from certsr_rt.models import load_model

    target = tmp_path / "m.onnx"
    target.write_bytes(b"old onnx")
    real_validate = onnx_export.validate_onnx
    seen: list[Path] = []

    def interrupted_validation(path: Path, *args: object, **kwargs: object) -> None:
        assert Path(path).stat().st_size > 0  # the new model is in the temporary file
        seen.append(Path(path))
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export, "validate_onnx", interrupted_validation)
    with pytest.raises(KeyboardInterrupt):
        onnx_export.export_onnx(load_model("tiny-srvgg"), target)
    assert seen and seen[0].parent == tmp_path
    assert target.read_bytes() == b"old onnx" and _folder(tmp_path) == ["m.onnx"]
    assert not fsyncs
    monkeypatch.setattr(onnx_export, "validate_onnx", real_validate)
    report = onnx_export.export_onnx(load_model("tiny-srvgg"), target)
    assert report.validation is not None and report.validation.passed
    assert fsyncs and target.read_bytes() != b"old onnx" and _folder(tmp_path) == ["m.onnx"]


def test_tensorrt_engine_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsyncs: list[int]) -> None:
    from certsr_rt.export.tensorrt import EngineCache, EngineKey, GpuInfo, ShapeProfile

    gpu = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0))
    key = EngineKey(
        onnx_sha256="ab" * 32, precision="fp16", profile=ShapeProfile(), tensorrt_version="10.9.0.34", gpu=gpu
    )
    model = {
        "name": "tiny",
        "architecture": "SRVGGNetCompact",
        "scale": 4,
        "in_channels": 3,
        "out_channels": 3,
        "default_sigma": 0.03,
    }
    cache = EngineCache(tmp_path)
    path = cache.store(key, b"OLD ENGINE", model)
    assert len(fsyncs) >= 2  # the record and the engine
    names = _folder(tmp_path)
    monkeypatch.setattr(atomic, "_write_chunks", _half_then(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        cache.store(key, b"NEW ENGINE" * 100, model)
    assert path.read_bytes() == b"OLD ENGINE" and _folder(tmp_path) == names
    assert json.loads(path.with_suffix(".json").read_text())["model"] == model


def test_video(tmp_path: Path, fsyncs: list[int]) -> None:
    pytest.importorskip("av")
    from certsr_rt.io.video import VideoWriter, count_frames

    target = tmp_path / "v.mkv"
    frame = np.zeros((16, 16, 3), np.uint8)
    with VideoWriter(target, width=16, height=16, fps=Fraction(10)) as w:
        for _ in range(3):
            w.write(frame)
    assert fsyncs
    before = target.read_bytes()
    with pytest.raises(KeyboardInterrupt), VideoWriter(target, width=16, height=16, fps=Fraction(10)) as w:
        for _ in range(5):
            w.write(frame)
        raise KeyboardInterrupt
    assert target.read_bytes() == before and count_frames(target) == 3
    assert _folder(tmp_path) == ["v.mkv"]
