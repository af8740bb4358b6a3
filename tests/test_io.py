"""Image reading/writing and the CLI's input/output path rules (certsr_rt.io.images)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from certsr_rt.errors import InputError
from certsr_rt.io import atomic, images
from certsr_rt.io.images import (
    IMAGE_EXTENSIONS,
    MAX_OUTPUT_PIXELS,
    check_image_size,
    companion_path,
    describe_image,
    expand_inputs,
    output_is_directory,
    output_path_for,
    read_image,
    write_image,
)

RNG = np.random.default_rng(0)
H, W = 10, 12


def _random(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    if dtype is np.float32:
        return RNG.random(shape, dtype=np.float32)
    return RNG.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


KINDS = {
    "rgb8": ((H, W, 3), np.uint8),
    "rgb16": ((H, W, 3), np.uint16),
    "gray8": ((H, W), np.uint8),
    "gray16": ((H, W), np.uint16),
    "rgba8": ((H, W, 4), np.uint8),
    "rgba16": ((H, W, 4), np.uint16),
    "gray_alpha8": ((H, W, 2), np.uint8),
    "gray_alpha16": ((H, W, 2), np.uint16),
}


def _dir_entries(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_png_round_trip_is_exact(tmp_path: Path, kind: str) -> None:
    shape, dtype = KINDS[kind]
    image = _random(shape, dtype)
    path = write_image(tmp_path / f"{kind}.png", image)
    back = read_image(path)
    assert back.dtype == image.dtype and back.shape == image.shape
    np.testing.assert_array_equal(back, image)


@pytest.mark.parametrize("kind", ["rgb8", "rgb16", "gray8", "gray16", "rgba8", "rgba16"])
def test_tiff_round_trip_is_exact(tmp_path: Path, kind: str) -> None:
    shape, dtype = KINDS[kind]
    image = _random(shape, dtype)
    back = read_image(write_image(tmp_path / "x.tiff", image))
    np.testing.assert_array_equal(back, image)
    assert back.dtype == image.dtype


def test_float32_tiff_round_trip(tmp_path: Path) -> None:
    image = _random((H, W, 3), np.float32)
    back = read_image(write_image(tmp_path / "x.tif", image))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, image)


def test_channel_order_is_rgb(tmp_path: Path) -> None:
    image = np.zeros((4, 5, 3), np.uint8)
    image[..., 0] = 200  # red
    write_image(tmp_path / "red.png", image)
    bgr = cv2.imread(str(tmp_path / "red.png"), cv2.IMREAD_UNCHANGED)
    assert bgr[0, 0].tolist() == [0, 0, 200]
    assert read_image(tmp_path / "red.png")[0, 0].tolist() == [200, 0, 0]


def test_gray_alpha_png_is_colour_type_4(tmp_path: Path) -> None:
    path = write_image(tmp_path / "ga.png", _random((H, W, 2), np.uint8))
    data = path.read_bytes()
    assert data[12:16] == b"IHDR" and data[25] == 4
    # An independent decoder (OpenCV) reads it as the same gray + alpha, expanded to BGRA.
    bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(bgra[..., [0, 3]], read_image(path))


def test_jpeg_round_trip_is_close(tmp_path: Path) -> None:
    image = np.tile(np.linspace(0, 255, W, dtype=np.uint8)[None, :, None], (H, 1, 3))
    back = read_image(write_image(tmp_path / "x.jpg", image))
    assert back.shape == image.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - image.astype(int)).max() <= 8


def test_sixteen_bit_to_jpeg_is_8bit_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    image = np.full((H, W, 3), 65535, np.uint16)
    with caplog.at_level(logging.WARNING, logger="certsr_rt.io.images"):
        back = read_image(write_image(tmp_path / "x.jpeg", image))
    assert back.dtype == np.uint8 and back.min() >= 250
    assert "16-bit image is rounded to 8 bits" in caplog.text


def test_alpha_to_jpeg_is_dropped_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="certsr_rt.io.images"):
        back = read_image(write_image(tmp_path / "x.jpg", _random((H, W, 4), np.uint8)))
    assert back.shape == (H, W, 3)
    assert "alpha channel is dropped" in caplog.text


def test_float32_to_png_is_16bit(tmp_path: Path) -> None:
    image = np.array([[0.0, 0.5, 1.0, 2.0, np.nan]], np.float32)
    back = read_image(write_image(tmp_path / "x.png", image))
    assert back.dtype == np.uint16
    assert back.tolist() == [[0, 32768, 65535, 65535, 0]]


def test_gray_alpha_to_tiff_is_rgba(tmp_path: Path) -> None:
    image = _random((H, W, 2), np.uint16)
    back = read_image(write_image(tmp_path / "x.tif", image))
    assert back.shape == (H, W, 4) and back.dtype == np.uint16
    np.testing.assert_array_equal(back[..., 0], image[..., 0])
    np.testing.assert_array_equal(back[..., 3], image[..., 1])


def test_single_channel_3d_is_written_as_gray(tmp_path: Path) -> None:
    image = _random((H, W, 1), np.uint8)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "x.png", image)), image[..., 0])


def test_write_creates_missing_folders(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a" / "b" / "x.png", _random((H, W), np.uint8))
    assert path.is_file()


def test_describe_image() -> None:
    assert describe_image(np.zeros((10, 12, 4), np.uint16)) == "12x10 16-bit RGBA"
    assert describe_image(np.zeros((3, 2), np.uint8)) == "2x3 8-bit gray"


# ------------------------------------------------------------------------------------------------ atomic


def test_encoder_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise cv2.error("simulated encoder failure")

    monkeypatch.setattr(images.cv2, "imencode", boom)
    with pytest.raises(InputError, match=r"cannot write .*x\.png: OpenCV could not encode"):
        write_image(tmp_path / "x.png", _random((H, W, 3), np.uint8))
    assert _dir_entries(tmp_path) == []


def test_encoder_returning_false_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images.cv2, "imencode", lambda *a, **k: (False, None))
    with pytest.raises(InputError, match="could not encode"):
        write_image(tmp_path / "x.png", _random((H, W, 3), np.uint8))
    assert _dir_entries(tmp_path) == []


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, OSError])
def test_interrupt_mid_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc_type: type[BaseException]
) -> None:
    def half_then_fail(f: object, data: bytes) -> None:
        f.write(data[: len(data) // 2])  # type: ignore[attr-defined]
        raise exc_type(28, "No space left on device") if exc_type is OSError else exc_type()

    monkeypatch.setattr(atomic, "_write_chunks", half_then_fail)
    expected = KeyboardInterrupt if exc_type is KeyboardInterrupt else InputError
    with pytest.raises(expected):
        write_image(tmp_path / "x.png", _random((H, W, 3), np.uint8))
    assert _dir_entries(tmp_path) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _random((H, W, 3), np.uint8)
    target = write_image(tmp_path / "x.png", old)

    def interrupted(f: object, data: bytes) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "_write_chunks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_image(target, _random((H, W, 3), np.uint8))
    assert _dir_entries(tmp_path) == ["x.png"]
    np.testing.assert_array_equal(read_image(target), old)


def test_write_errors(tmp_path: Path) -> None:
    image = _random((H, W, 3), np.uint8)
    with pytest.raises(InputError, match=r"unsupported image format '\.gif'"):
        write_image(tmp_path / "x.gif", image)
    with pytest.raises(InputError, match="expected dtype uint8, uint16 or float32, got float64"):
        write_image(tmp_path / "x.png", image.astype(np.float64))
    with pytest.raises(InputError, match=r"with C in 1\.\.4, got shape \(10, 12, 5\)"):
        write_image(tmp_path / "x.png", np.zeros((H, W, 5), np.uint8))
    with pytest.raises(InputError, match="expected a numpy array, got list"):
        write_image(tmp_path / "x.png", [[0]])  # type: ignore[arg-type]
    (tmp_path / "d.png").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        write_image(tmp_path / "d.png", image)
    assert _dir_entries(tmp_path) == ["d.png"]


# -------------------------------------------------------------------------------------------- bad inputs


def _png_bytes() -> bytes:
    ok, buf = cv2.imencode(".png", _random((16, 16, 3), np.uint8))
    assert ok
    return buf.tobytes()


def _jpeg_bytes() -> bytes:
    ok, buf = cv2.imencode(".jpg", _random((32, 32, 3), np.uint8))
    assert ok
    return buf.tobytes()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^cannot read .*nope\.png: no such file$"):
        read_image(tmp_path / "nope.png")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory, expected an image file"):
        read_image(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(_png_bytes())
    path.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        read_image(path)


def test_text_file_renamed_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello, this is not an image\n")
    with pytest.raises(
        InputError, match=r"not an image \(expected PNG, JPEG, WebP, TIFF or BMP data, .*b'hello, t'"
    ):
        read_image(path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(InputError, match=r"empty file \(0 bytes\)"):
        read_image(path)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_png(tmp_path: Path, keep: float) -> None:
    data = _png_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match=r"truncated PNG \(no IEND chunk"):
        read_image(path)


@pytest.mark.parametrize("keep", [0.3, 0.8, -2])
def test_truncated_jpeg(tmp_path: Path, keep: float) -> None:
    data = _jpeg_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:keep] if isinstance(keep, int) else data[: int(len(data) * keep)])
    with pytest.raises(InputError, match=r"truncated JPEG \(no end-of-image marker FFD9"):
        read_image(path)


def test_truncated_webp_and_bmp(tmp_path: Path) -> None:
    for ext, name in ((".webp", "WebP"), (".bmp", "BMP")):
        ok, buf = cv2.imencode(ext, _random((16, 16, 3), np.uint8))
        path = tmp_path / f"cut{ext}"
        path.write_bytes(buf.tobytes()[:-10])
        with pytest.raises(InputError, match=f"truncated {name}"):
            read_image(path)


def test_corrupt_png_body(tmp_path: Path) -> None:
    data = bytearray(_png_bytes())
    data[40:60] = b"\x00" * 20  # inside IDAT, keeping the IEND chunk
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt PNG data"):
        read_image(path)


def test_unsupported_sample_type(tmp_path: Path) -> None:
    ok, buf = cv2.imencode(".tif", RNG.random((4, 5)))  # float64 TIFF
    path = tmp_path / "x.tif"
    path.write_bytes(buf.tobytes())
    with pytest.raises(
        InputError, match=r"unsupported sample type float64 \(expected uint8, uint16 or float32\)"
    ):
        read_image(path)


def test_jpeg_with_trailing_bytes_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(_jpeg_bytes() + b"\x00\x00trailer")
    assert read_image(path).shape == (32, 32, 3)


def test_no_opencv_noise_on_stderr(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bad_crc = bytearray(_png_bytes())
    bad_crc[29:33] = b"\x00\x00\x00\x00"  # IHDR CRC: libpng prints to fd 2 itself
    bad_body = bytearray(_png_bytes())
    bad_body[40:60] = b"\x00" * 20  # IDAT: OpenCV's logger warns
    for i, data in enumerate((bytes(bad_crc), bytes(bad_body), b"text")):
        path = tmp_path / f"bad{i}.png"
        path.write_bytes(data)
        with pytest.raises(InputError):
            read_image(path)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_error_messages_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "t.png").write_bytes(b"\n\n\x00line\nbreaks")
    with pytest.raises(InputError) as info:
        read_image(tmp_path / "t.png")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------- sizes


def test_check_image_size() -> None:
    check_image_size(100, 100, 4)
    limit_side = int((MAX_OUTPUT_PIXELS**0.5) // 4)
    check_image_size(limit_side, limit_side, 4)
    with pytest.raises(InputError, match=r"^big\.png is too large for the given options: the x4 output"):
        check_image_size(limit_side + 1, limit_side, 4, name="big.png")
    with pytest.raises(InputError, match="too large"):
        check_image_size(10, 10, 4, max_output_pixels=1599)
    with pytest.raises(InputError, match="is empty"):
        check_image_size(0, 10, 4)


# ------------------------------------------------------------------------------------------------- paths


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ("b.png", "a.JPG", "c.tiff", "notes.txt", "clip.mp4"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    return tmp_path


def test_expand_folder_is_sorted_non_recursive_images_only(folder: Path) -> None:
    assert [p.name for p in expand_inputs([folder])] == ["a.JPG", "b.png", "c.tiff"]


def test_expand_glob(folder: Path) -> None:
    assert [p.name for p in expand_inputs([str(folder / "*.png")])] == ["b.png"]
    assert [p.name for p in expand_inputs([str(folder / "**" / "*.png")])] == ["b.png", "d.png"]


def test_expand_file_is_taken_as_given_and_deduplicated(folder: Path) -> None:
    files = expand_inputs([folder / "notes.txt", folder / "b.png", folder, str(folder / "b.*")])
    assert [p.name for p in files] == ["notes.txt", "b.png", "a.JPG", "c.tiff"]


def test_expand_errors(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.raises(InputError, match=r"cannot read .*missing\.png: no such file or directory"):
        expand_inputs([folder / "missing.png"])
    with pytest.raises(InputError, match=r"no files match .*\*\.webp"):
        expand_inputs([str(folder / "*.webp")])
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(InputError, match="no images in the folder"):
        expand_inputs([empty])


def test_expand_custom_extensions(folder: Path) -> None:
    assert [p.name for p in expand_inputs([folder], extensions=(".mp4",))] == ["clip.mp4"]


def test_output_beside_input(tmp_path: Path) -> None:
    assert output_path_for(tmp_path / "cat.png", None, 1) == tmp_path / "cat_x4.png"
    assert output_path_for(tmp_path / "cat.JPG", None, 3) == tmp_path / "cat_x4.JPG"
    assert output_path_for(tmp_path / "cat.ppm", None, 1) == tmp_path / "cat_x4.png"
    assert output_path_for(tmp_path / "clip.mkv", None, 1) == tmp_path / "clip_x4.mkv"
    assert output_path_for(tmp_path / "cat.png", None, 1, suffix="_sr") == tmp_path / "cat_sr.png"


def test_output_file(tmp_path: Path) -> None:
    out = tmp_path / "result.webp"
    assert output_path_for(tmp_path / "cat.png", out, 1) == out
    assert output_path_for(tmp_path / "clip.mp4", tmp_path / "o.mkv", 1) == tmp_path / "o.mkv"
    with pytest.raises(InputError, match=r"names one file but there are 2 inputs; give a folder"):
        output_path_for(tmp_path / "cat.png", out, 2)
    with pytest.raises(InputError, match=r"'\.mp4' is not a format for an image"):
        output_path_for(tmp_path / "cat.png", tmp_path / "o.mp4", 1)
    with pytest.raises(InputError, match=r"'\.png' is not a format for a video"):
        output_path_for(tmp_path / "clip.mp4", tmp_path / "o.png", 1)


def test_output_folder(tmp_path: Path) -> None:
    existing = tmp_path / "existing.d"
    existing.mkdir()
    cat = tmp_path / "in" / "cat.png"
    assert output_path_for(cat, existing, 1) == existing / "cat_x4.png"
    assert output_path_for(cat, f"{tmp_path}/new/", 1) == tmp_path / "new" / "cat_x4.png"
    assert output_path_for(cat, tmp_path / "new", 1) == tmp_path / "new" / "cat_x4.png"  # no extension
    assert output_path_for(cat, tmp_path / "new", 5) == tmp_path / "new" / "cat_x4.png"
    assert output_is_directory(f"{tmp_path}/new/", 1)
    assert not output_is_directory(tmp_path / "x.png", 1)
    assert not output_is_directory(None, 3)


def test_refuses_to_overwrite_an_input(tmp_path: Path) -> None:
    cat = tmp_path / "cat.png"
    with pytest.raises(InputError, match=r"refusing to overwrite the input .*cat\.png"):
        output_path_for(cat, cat, 1)
    with pytest.raises(InputError, match="refusing to overwrite the input"):
        output_path_for(cat, tmp_path, 1, suffix="")
    # cat_x4.png is itself an input of the batch
    with pytest.raises(InputError, match=r"refusing to overwrite the input .*cat_x4\.png"):
        output_path_for(cat, None, 2, inputs=[cat, tmp_path / "cat_x4.png"])


def test_companion_path(tmp_path: Path) -> None:
    assert companion_path(tmp_path / "cat_x4.png", "_lower") == tmp_path / "cat_x4_lower.png"


def test_extension_constants() -> None:
    assert set(IMAGE_EXTENSIONS) >= {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)
