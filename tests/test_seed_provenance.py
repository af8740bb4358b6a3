"""Issue 8 item 2: a fresh noise seed by default, recorded in every output, repeatable with --seed."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from certsr_rt.cli.app import app
from certsr_rt.errors import InputError
from certsr_rt.io.images import read_image, read_provenance, write_image
from certsr_rt.smoothing.config import SmoothingConfig

FAST = ["--model", "tiny-srvgg", "--device", "cpu", "--samples", "5"]
RECORD = {"tool": "certsr-rt", "version": "0.1.0", "model": "m", "sigma": 0.06, "samples": 21, "seed": 123}


def _invoke(*args: str | Path) -> object:
    result = CliRunner().invoke(app, ["upscale", *map(str, args)])
    assert "Traceback" not in result.output
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _photo(path: Path, h: int = 10, w: int = 12) -> Path:
    write_image(path, np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8))
    return path


# ------------------------------------------------------------------------------------ SmoothingConfig


def test_default_config_draws_a_fresh_seed_each_time() -> None:
    seeds = {SmoothingConfig().seed for _ in range(4)}
    assert len(seeds) > 1  # 4 draws from 2**31 values colliding: probability ~3e-9
    cfg = SmoothingConfig()
    assert cfg.seed_drawn and isinstance(cfg.seed, int) and 0 <= cfg.seed < 2**31
    # Filling in sigma keeps the drawn seed (and says it was drawn).
    filled = cfg.resolved(0.05)
    assert filled.seed == cfg.seed and filled.seed_drawn and filled.sigma == 0.05


def test_an_explicit_seed_is_kept_and_validated() -> None:
    assert SmoothingConfig(seed=7).seed == 7 and not SmoothingConfig(seed=7).seed_drawn
    assert SmoothingConfig(seed=np.int64(7)).seed == 7
    for bad in (-1, 2**31, 1.5, True):
        with pytest.raises(InputError, match="seed must be an integer"):
            SmoothingConfig(seed=bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ metadata


@pytest.mark.parametrize(
    "name,image",
    [
        ("a.png", np.zeros((5, 6, 3), np.uint8)),
        ("b.png", np.full((5, 6), 40000, np.uint16)),
        ("c.png", np.zeros((5, 6, 2), np.uint8)),  # our own gray + alpha encoder
        ("d.tif", np.zeros((5, 6, 3), np.uint8)),
        ("e.tiff", np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6)),
        ("f.jpg", np.zeros((5, 6, 3), np.uint8)),
    ],
)
def test_provenance_round_trips_and_leaves_the_pixels_alone(
    tmp_path: Path, name: str, image: np.ndarray
) -> None:
    tagged = write_image(tmp_path / name, image, provenance=RECORD)
    plain = write_image(tmp_path / f"plain_{name}", image)
    assert read_provenance(tagged) == RECORD
    assert read_provenance(plain) is None
    np.testing.assert_array_equal(read_image(tagged), read_image(plain))


def test_provenance_is_readable_by_other_tools(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    png = write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8), provenance=RECORD)
    tif = write_image(tmp_path / "a.tif", np.zeros((4, 4, 3), np.uint8), provenance=RECORD)
    with pil.open(png) as im:
        assert '"seed":123' in im.text["certsr_rt"]
    with pil.open(tif) as im:
        assert im.tag_v2[270].startswith('certsr_rt={"model":"m"')


def test_read_provenance_of_other_files_is_none(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 3)
    (tmp_path / "text.txt").write_text("hello")
    webp = write_image(tmp_path / "a.webp", np.zeros((4, 4, 3), np.uint8), provenance=RECORD)
    for path in (tmp_path / "junk.png", tmp_path / "text.txt", tmp_path / "missing.png", webp):
        assert read_provenance(path) is None


def test_video_provenance_round_trips(tmp_path: Path) -> None:
    pytest.importorskip("av", reason="the video extra (PyAV) is not installed")
    from certsr_rt.io.video import VideoWriter, read_video_provenance

    for ext in (".mp4", ".mkv", ".mov", ".avi", ".webm"):
        for record in (RECORD, None):
            path = tmp_path / f"{'t' if record else 'p'}{ext}"
            with VideoWriter(path, width=16, height=16, fps=Fraction(5), provenance=record) as writer:
                for _ in range(2):
                    writer.write(np.zeros((16, 16, 3), np.uint8))
            assert read_video_provenance(path) == record, path


# ----------------------------------------------------------------------------------------------- CLI


def _seed_line(stderr: str) -> int:
    match = re.search(r"^seed (\d+) \(drawn from the OS; repeat this run with --seed \1", stderr, re.M)
    assert match, stderr
    return int(match.group(1))


def test_upscale_draws_a_seed_prints_and_records_it_and_the_seed_repeats_the_run(tmp_path: Path) -> None:
    src = _photo(tmp_path / "in.png")
    first = _invoke(src, *FAST, "-o", tmp_path / "one.png")
    second = _invoke(src, *FAST, "-o", tmp_path / "two.png")
    seed_one, seed_two = _seed_line(first.stderr), _seed_line(second.stderr)  # type: ignore[attr-defined]
    assert seed_one != seed_two
    record = read_provenance(tmp_path / "one.png")
    assert record is not None
    assert record["seed"] == seed_one and record["tool"] == "certsr-rt"
    assert (
        record["model"] == "tiny-srvgg" and record["samples"] == 5 and record["sigma"] == pytest.approx(0.06)
    )
    # Everything needed to repeat the run: the backend and precision change the last bits too.
    assert (record["tile"], record["precision"]) == (192, "fp32")
    assert record["backend"] in ("onnxruntime", "torch")  # onnxruntime where installed (the CPU default)
    assert isinstance(record["tile_overlap"], int)
    assert read_provenance(tmp_path / "two.png")["seed"] == seed_two  # type: ignore[index]
    # Different seeds, different noise, different images.
    assert not np.array_equal(read_image(tmp_path / "one.png"), read_image(tmp_path / "two.png"))
    again = _invoke(src, *FAST, "--seed", seed_one, "-o", tmp_path / "again.png")
    assert f"seed {seed_one} (given" in again.stderr  # type: ignore[attr-defined]
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "one.png").read_bytes()


def test_bound_images_carry_the_record_too(tmp_path: Path) -> None:
    src = _photo(tmp_path / "in.png")
    _invoke(
        src,
        "--model",
        "tiny-srvgg",
        "--device",
        "cpu",
        "--samples",
        "41",
        "--sigma",
        "0.1",
        "--bounds",
        "0.02",
        "--seed",
        "5",
        "-o",
        tmp_path / "out.png",
    )
    for name, what in (("out_lower.png", "lower bound"), ("out_upper.png", "upper bound")):
        record = read_provenance(tmp_path / name)
        assert record is not None and record["seed"] == 5 and record["output"] == what


def test_a_video_uses_one_seed_for_all_frames_and_records_it(tmp_path: Path) -> None:
    pytest.importorskip("av", reason="the video extra (PyAV) is not installed")
    from certsr_rt.io.video import VideoReader, VideoWriter, read_video_provenance

    src = tmp_path / "clip.mkv"
    frame = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    with VideoWriter(src, width=8, height=8, fps=Fraction(4)) as writer:
        for _ in range(3):
            writer.write(frame)  # a static clip: with one noise field every output frame is the same
    result = _invoke(src, *FAST, "-o", tmp_path / "out.mkv")
    seed = _seed_line(result.stderr)  # type: ignore[attr-defined]
    record = read_video_provenance(tmp_path / "out.mkv")
    assert record is not None and record["seed"] == seed and record["fresh_noise"] is False
    with VideoReader(tmp_path / "out.mkv") as reader:
        frames = list(reader)
    assert len(frames) == 3
    assert max(np.abs(f.astype(int) - frames[0].astype(int)).max() for f in frames) <= 2  # codec noise only


@pytest.mark.parametrize("ext", [".mkv", ".webm"])
def test_a_video_with_the_same_seed_is_byte_identical_and_without_one_gets_a_new_seed(
    tmp_path: Path, ext: str
) -> None:
    pytest.importorskip("av", reason="the video extra (PyAV) is not installed")
    from certsr_rt.io.video import VideoWriter, read_video_provenance

    src = tmp_path / f"clip{ext}"
    rng = np.random.default_rng(3)
    with VideoWriter(src, width=8, height=8, fps=Fraction(4)) as writer:
        for _ in range(2):
            writer.write(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    # Matroska and WebM write a random segment UID and a date unless muxed bit-exact.
    one, two = tmp_path / f"one{ext}", tmp_path / f"two{ext}"
    _invoke(src, *FAST, "--seed", "17", "-o", one)
    _invoke(src, *FAST, "--seed", "17", "-o", two)
    assert one.read_bytes() == two.read_bytes()
    first = _seed_line(_invoke(src, *FAST, "-o", tmp_path / f"a{ext}").stderr)  # type: ignore[attr-defined]
    second = _seed_line(_invoke(src, *FAST, "-o", tmp_path / f"b{ext}").stderr)  # type: ignore[attr-defined]
    assert first != second
    assert read_video_provenance(tmp_path / f"a{ext}")["seed"] == first  # type: ignore[index]
    assert read_video_provenance(tmp_path / f"b{ext}")["seed"] == second  # type: ignore[index]
