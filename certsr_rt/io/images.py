"""Reading and writing still images, and the input/output path rules of the CLI.

Images are plain numpy arrays, in the layout the :class:`~certsr_rt.runtime.upscaler.Upscaler` accepts and
returns, so a read -> upscale -> write round trip keeps the kind of the file:

===============  ==============================================
shape            meaning
===============  ==============================================
``H x W``        grayscale
``H x W x 2``    grayscale + alpha
``H x W x 3``    RGB
``H x W x 4``    RGBA
===============  ==============================================

The dtype is the file's sample type: ``uint8`` (8-bit), ``uint16`` (16-bit PNG/TIFF) or ``float32``
(floating-point TIFF, values as stored). Channels are in RGB(A) order, not OpenCV's BGR(A).

Every failure is an :class:`~certsr_rt.errors.InputError` with one line, ``cannot read X: ...`` or
``cannot write X: ...``, that says what was expected and what came. OpenCV's own log lines and libpng's
messages are kept off stderr while a file is decoded or encoded.

**Provenance.** :func:`write_image` can record how an output was made (tool, version, model, sigma,
samples, seed, tiling, backend, precision) as one JSON string under the key ``certsr_rt`` (see
:data:`PROVENANCE_KEY`): a PNG ``tEXt``
chunk with that keyword; in TIFF the ImageDescription tag (270) and in JPEG a comment (COM) segment, each
holding ``certsr_rt=<json>``. WebP and BMP outputs carry none. :func:`read_provenance` reads it back (videos:
:func:`certsr_rt.io.video.read_video_provenance`).

Writes are atomic (:mod:`certsr_rt.io.atomic`): the encoded bytes go to a hidden temporary file in the
destination folder, flushed to disk and renamed over the destination only once complete; on any failure,
including ``KeyboardInterrupt``, the temporary file is removed, so a destination is either the old file,
the new file, or absent — never half written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import struct
import threading
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from certsr_rt.errors import InputError
from certsr_rt.io.atomic import write_atomic

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_OUTPUT_PIXELS",
    "PROVENANCE_KEY",
    "VIDEO_EXTENSIONS",
    "check_image_size",
    "check_not_input",
    "check_writable",
    "companion_path",
    "is_own_output",
    "describe_image",
    "expand_inputs",
    "output_is_directory",
    "output_path_for",
    "parse_provenance",
    "provenance_text",
    "read_image",
    "read_provenance",
    "write_image",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
"""Image formats this module reads and writes (lower case); folders are expanded to these."""

VIDEO_EXTENSIONS: tuple[str, ...] = (".avi", ".mkv", ".mov", ".mp4", ".webm")
"""Video containers the CLI hands to the video pipeline (lower case)."""

MAX_OUTPUT_PIXELS: int = 2**30
"""Largest output image, in pixels: OpenCV's default ``CV_IO_MAX_IMAGE_PIXELS``, past which it refuses to
decode, so a larger output could not be read back (and would take gigabytes of memory to write)."""

_SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_SIXTEEN_BIT_FORMATS = (".png", ".tif", ".tiff")
_FLOAT_FORMATS = (".tif", ".tiff")
_ALPHA_FORMATS = (".bmp", ".png", ".tif", ".tiff", ".webp")
_FORMAT_NAMES = {
    ".bmp": "BMP",
    ".jpeg": "JPEG",
    ".jpg": "JPEG",
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WebP",
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the whole IEND chunk: length 0, type, fixed CRC
_PNG_GRAY_ALPHA = 4  # IHDR colour type
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"

_quiet_lock = threading.RLock()


# ----------------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file into an array of the file's own kind.

    Args:
        path: the file; the format is taken from its content, not its name.

    Returns:
        ``H x W`` (gray), ``H x W x 2`` (gray + alpha), ``H x W x 3`` (RGB) or ``H x W x 4`` (RGBA), with
        dtype ``uint8``, ``uint16`` or ``float32`` as stored. JPEG EXIF orientation is applied.

    Raises:
        InputError: ``cannot read X: ...`` — missing file, a directory, no permission, an empty file, not an
            image, a truncated PNG/JPEG/WebP/BMP, undecodable data, an unsupported sample type or channel
            count, or an image larger than OpenCV decodes.
    """
    p = Path(path)
    data = _read_bytes(p)
    return _decode(data, p)


def _read_bytes(p: Path) -> bytes:
    try:
        with open(p, "rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise InputError(f"cannot read {p}: no such file") from exc
    except IsADirectoryError as exc:
        raise InputError(f"cannot read {p}: is a directory, expected an image file") from exc
    except PermissionError as exc:
        raise InputError(f"cannot read {p}: permission denied") from exc
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from exc


def _sniff(data: bytes) -> str | None:
    """Name of the container format from its magic bytes, or None."""
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if data[:2] == b"BM":
        return "BMP"
    return None


def _truncation(kind: str, data: bytes) -> str | None:
    """Why ``data`` is an incomplete file of format ``kind``, or None when it looks complete.

    OpenCV decoders may accept incomplete files (older builds return the top of a cut JPEG padded with
    grey), so the end markers are checked here, before decoding.
    """
    n = len(data)
    if kind == "PNG" and data.find(_PNG_IEND) < 0:
        return f"truncated PNG (no IEND chunk; the file ends after {n} bytes)"
    if kind == "JPEG":
        # The last scan belongs to the main image (an EXIF thumbnail sits before it in APP1), and 0xFF
        # bytes inside entropy-coded data are stuffed, so FFD9 after the last SOS is the image's own end.
        sos = data.rfind(_JPEG_SOS)
        if sos < 0 or data.rfind(_JPEG_EOI) < sos:
            return f"truncated JPEG (no end-of-image marker FFD9 after the image data; {n} bytes)"
    if kind == "WebP":
        declared = struct.unpack_from("<I", data, 4)[0] + 8
        if declared > n:
            return f"truncated WebP (the header says {declared} bytes, the file has {n})"
    if kind == "BMP" and n >= 6:
        declared = struct.unpack_from("<I", data, 2)[0]
        if declared > n:
            return f"truncated BMP (the header says {declared} bytes, the file has {n})"
    return None


def _png_header(data: bytes) -> tuple[int, int, int] | None:
    """``(width, height, colour type)`` from a PNG's IHDR chunk, or None."""
    if len(data) < 26 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return width, height, data[25]


def _decode(data: bytes, p: Path) -> np.ndarray:
    if not data:
        raise InputError(f"cannot read {p}: empty file (0 bytes), expected an image")
    kind = _sniff(data)
    if kind is not None:
        why = _truncation(kind, data)
        if why is not None:
            raise InputError(f"cannot read {p}: {why}")
    header = _png_header(data) if kind == "PNG" else None
    if header is not None and header[0] * header[1] > MAX_OUTPUT_PIXELS:
        raise InputError(
            f"cannot read {p}: the image is {header[0]}x{header[1]} = {header[0] * header[1]} pixels, "
            f"more than the {MAX_OUTPUT_PIXELS} (2**30) OpenCV decodes"
        )

    # IMREAD_UNCHANGED keeps alpha, 16-bit and float samples but ignores EXIF orientation; a JPEG has
    # neither alpha nor deep samples, so it is read with the flags that rotate it as cameras intend.
    flags = cv2.IMREAD_ANYCOLOR if kind == "JPEG" else cv2.IMREAD_UNCHANGED
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        with _quiet_opencv():
            arr = cv2.imdecode(buf, flags)
    except cv2.error:
        arr = None
    if arr is None:
        if kind is None:
            raise InputError(
                f"cannot read {p}: not an image (expected PNG, JPEG, WebP, TIFF or BMP data, "
                f"the file starts with {data[:8]!r})"
            )
        raise InputError(f"cannot read {p}: corrupt {kind} data (OpenCV could not decode it)")

    if arr.dtype not in _SUPPORTED_DTYPES:
        raise InputError(
            f"cannot read {p}: unsupported sample type {arr.dtype} (expected uint8, uint16 or float32)"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return np.ascontiguousarray(arr)
    channels = arr.shape[2]
    if channels == 3:
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if channels == 4:
        if header is not None and header[2] == _PNG_GRAY_ALPHA:
            # OpenCV expands gray + alpha PNGs to BGRA with B == G == R; give back the two channels.
            return np.ascontiguousarray(arr[:, :, [0, 3]])
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    raise InputError(f"cannot read {p}: {channels} channels (expected 1 to 4)")


# ----------------------------------------------------------------------------------------------- writing


def write_image(
    path: str | os.PathLike[str], image: np.ndarray, *, provenance: Mapping[str, Any] | None = None
) -> Path:
    """Encode ``image`` in the format named by the extension of ``path`` and write it atomically.

    What each format keeps (anything else is converted, with a logged warning when information is lost):

    - 16-bit samples: PNG and TIFF. JPEG, WebP and BMP store 8 bits, so a ``uint16`` image is rounded to
      8 bits with a warning (not refused: converting a 16-bit PNG to JPEG is a normal request).
    - ``float32`` samples: TIFF (as float). PNG gets 16 bits; JPEG, WebP and BMP 8 bits. Values are
      clipped to [0, 1] first, NaN becomes 0.
    - alpha: PNG, TIFF, WebP, BMP. JPEG has none: the alpha channel is dropped with a warning.
    - gray + alpha (``H x W x 2``): PNG (colour type 4); TIFF, WebP and BMP store it as RGBA.
    - gray (``H x W``): every format except WebP, which stores RGB.

    Missing parent folders are created. The file appears complete or not at all (see the module notes).

    Args:
        path: destination; its extension (one of :data:`IMAGE_EXTENSIONS`, any case) picks the format.
        image: ``H x W``, ``H x W x C`` with C in 1..4 (RGB[A] order); ``uint8``, ``uint16`` or ``float32``.
        provenance: a JSON-serialisable record stored under :data:`PROVENANCE_KEY` (PNG, TIFF, JPEG; see
            the module notes); read it back with :func:`read_provenance`.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: ``cannot write X: ...`` — unsupported extension, array of the wrong type or shape,
            encoder failure, or an OS error (permission, disk full, destination is a folder).
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise InputError(
            f"cannot write {p}: unsupported image format '{p.suffix or p.name}' "
            f"(expected one of {', '.join(IMAGE_EXTENSIONS)})"
        )
    data = _encode(image, ext, p)
    if provenance is not None:
        data = _embed_provenance(data, provenance_text(provenance))
    write_atomic(p, data)
    return p


# -------------------------------------------------------------------------------------------- provenance

PROVENANCE_KEY = "certsr_rt"
"""The key under which outputs record how they were made (PNG tEXt keyword, video metadata key, and the
``certsr_rt=`` prefix of a TIFF ImageDescription or JPEG comment)."""

_PROVENANCE_PREFIX = PROVENANCE_KEY + "="
_TIFF_IMAGE_DESCRIPTION = 270
_TIFF_ASCII = 2
_JPEG_COM = 0xFE


def provenance_text(record: Mapping[str, Any]) -> str:
    """The stored form of a provenance record: compact ASCII JSON with sorted keys."""
    return json.dumps(dict(record), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def parse_provenance(text: str | bytes | None) -> dict[str, Any] | None:
    """The record in a stored provenance value (JSON, optionally prefixed ``certsr_rt=``), or None."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    text = text.strip().rstrip("\0")
    if text.startswith(_PROVENANCE_PREFIX):
        text = text[len(_PROVENANCE_PREFIX) :]
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _png_chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def _embed_provenance(data: bytes, text: str) -> bytes:
    """``data`` (an encoded image) with ``text`` stored in it; formats without a place are returned as is."""
    kind = _sniff(data)
    payload = text.encode("ascii")
    if kind == "PNG" and data[12:16] == b"IHDR":
        end_of_ihdr = 8 + 12 + struct.unpack_from(">I", data, 8)[0]
        chunk = _png_chunk(b"tEXt", PROVENANCE_KEY.encode("latin-1") + b"\0" + payload)
        return data[:end_of_ihdr] + chunk + data[end_of_ihdr:]
    if kind == "TIFF" and data[2:4] in (b"*\x00", b"\x00*"):
        return _tiff_with_description(data, _PROVENANCE_PREFIX.encode("ascii") + payload + b"\0")
    if kind == "JPEG":
        comment = _PROVENANCE_PREFIX.encode("ascii") + payload
        if len(comment) + 2 <= 0xFFFF:
            return data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]
    return data


def _tiff_with_description(data: bytes, description: bytes) -> bytes:
    """A classic TIFF whose first IFD is rewritten at the end of the file with an ImageDescription tag.

    The original IFD stays in place, unreferenced; every other offset in the file is unchanged.
    """
    bo = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack_from(bo + "I", data, 4)[0]
    count = struct.unpack_from(bo + "H", data, ifd)[0]
    entries = [data[ifd + 2 + 12 * i : ifd + 14 + 12 * i] for i in range(count)]
    next_ifd = data[ifd + 2 + 12 * count : ifd + 6 + 12 * count]
    out = bytearray(data)
    if len(out) % 2:
        out += b"\0"
    text_offset = len(out)
    out += description
    if len(out) % 2:
        out += b"\0"
    entries = [e for e in entries if struct.unpack_from(bo + "H", e)[0] != _TIFF_IMAGE_DESCRIPTION]
    entry = struct.pack(bo + "HHII", _TIFF_IMAGE_DESCRIPTION, _TIFF_ASCII, len(description), text_offset)
    entries.append(entry)
    entries.sort(key=lambda e: struct.unpack_from(bo + "H", e)[0])
    new_ifd = len(out)
    out += struct.pack(bo + "H", len(entries)) + b"".join(entries) + next_ifd
    struct.pack_into(bo + "I", out, 4, new_ifd)
    return bytes(out)


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance record a certsr-rt output carries (see :func:`write_image`), or None.

    Only the headers are read (PNG chunks before the image data, the first TIFF IFD, JPEG segments before
    the scan), so this is cheap on large files.

    Args:
        path: an image file.

    Returns:
        The record as a dict (keys ``tool``, ``version``, ``model``, ``sigma``, ``samples``, ``seed``, ...),
        or None when the file has none, is not a PNG/TIFF/JPEG, or cannot be read.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            kind = _sniff(head + b"\0" * 16)
            if kind == "PNG":
                return _png_provenance(f)
            if kind == "TIFF" and head[2:4] in (b"*\x00", b"\x00*"):
                return _tiff_provenance(f, "<" if head[:2] == b"II" else ">", head)
            if kind == "JPEG":
                return _jpeg_provenance(f)
    except (OSError, struct.error, ValueError):
        return None
    return None


def _png_provenance(f: BinaryIO) -> dict[str, Any] | None:
    f.seek(8)
    keyword = PROVENANCE_KEY.encode("latin-1") + b"\0"
    while True:
        header = f.read(8)
        if len(header) < 8:
            return None
        length, tag = struct.unpack(">I", header[:4])[0], header[4:]
        if tag in (b"IDAT", b"IEND"):
            return None
        if tag == b"tEXt" and length < 1 << 20:
            payload = f.read(length)
            if payload.startswith(keyword):
                return parse_provenance(payload[len(keyword) :])
            f.seek(4, os.SEEK_CUR)
        else:
            f.seek(length + 4, os.SEEK_CUR)


def _tiff_provenance(f: BinaryIO, bo: str, head: bytes) -> dict[str, Any] | None:
    ifd = struct.unpack_from(bo + "I", head, 4)[0]
    f.seek(ifd)
    count = struct.unpack(bo + "H", f.read(2))[0]
    table = f.read(12 * count)
    for i in range(count):
        tag, typ, n, value = struct.unpack_from(bo + "HHII", table, 12 * i)
        if tag == _TIFF_IMAGE_DESCRIPTION and typ == _TIFF_ASCII and 4 < n < 1 << 20:
            f.seek(value)
            text = f.read(n)
            return parse_provenance(text) if text.startswith(_PROVENANCE_PREFIX.encode("ascii")) else None
    return None


def _jpeg_provenance(f: BinaryIO) -> dict[str, Any] | None:
    f.seek(2)
    prefix = _PROVENANCE_PREFIX.encode("ascii")
    while True:
        marker = f.read(4)
        if len(marker) < 4 or marker[0] != 0xFF or marker[1] == _JPEG_SOS[1]:
            return None
        length = struct.unpack(">H", marker[2:])[0]
        if marker[1] == _JPEG_COM:
            comment = f.read(length - 2)
            if comment.startswith(prefix):
                return parse_provenance(comment)
        else:
            f.seek(length - 2, os.SEEK_CUR)


def _check_array(image: object, p: Path) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise InputError(f"cannot write {p}: expected a numpy array, got {type(image).__name__}")
    if image.dtype not in _SUPPORTED_DTYPES:
        raise InputError(f"cannot write {p}: expected dtype uint8, uint16 or float32, got {image.dtype}")
    ok_shape = image.ndim == 2 or (image.ndim == 3 and 1 <= image.shape[2] <= 4)
    if not ok_shape or image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(
            f"cannot write {p}: expected an H x W or H x W x C array with C in 1..4, got shape {image.shape}"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if image.dtype == np.float32:
        return np.rint(_unit_float(image) * 255.0).astype(np.uint8)
    return image


def _unit_float(image: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def _encode(image: np.ndarray, ext: str, p: Path) -> bytes:
    image = _check_array(image, p)
    fmt = _FORMAT_NAMES[ext]

    if image.dtype == np.float32 and ext not in _FLOAT_FORMATS:
        if ext in _SIXTEEN_BIT_FORMATS:
            logger.info("%s: storing the float32 image as 16-bit PNG", p)
            image = np.rint(_unit_float(image) * 65535.0).astype(np.uint16)
        else:
            logger.warning("%s: %s stores 8 bits per channel; the float32 image is rounded to 8 bits", p, fmt)
            image = _to_uint8(image)
    if image.dtype == np.uint16 and ext not in _SIXTEEN_BIT_FORMATS:
        logger.warning("%s: %s stores 8 bits per channel; the 16-bit image is rounded to 8 bits", p, fmt)
        image = _to_uint8(image)

    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels in (2, 4) and ext not in _ALPHA_FORMATS:
        logger.warning("%s: %s has no alpha channel; the alpha channel is dropped", p, fmt)
        image = image[:, :, 0] if channels == 2 else image[:, :, :3]
        channels -= 1
    if channels == 2:
        if ext == ".png":
            return _encode_png_gray_alpha(image)
        # No OpenCV encoder takes two channels: store the gray + alpha image as RGBA.
        image = np.dstack([image[:, :, 0], image[:, :, 0], image[:, :, 0], image[:, :, 1]])
        channels = 4

    if channels == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif channels == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    else:
        image = np.ascontiguousarray(image)

    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    try:
        with _quiet_opencv():
            ok, buf = cv2.imencode(ext, image, params)
    except cv2.error as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"cannot write {p}: OpenCV could not encode {describe_image(image)} ({msg})"
        ) from exc
    if not ok:
        raise InputError(f"cannot write {p}: OpenCV could not encode {describe_image(image)} as {fmt}")
    return buf.tobytes()


def _encode_png_gray_alpha(image: np.ndarray) -> bytes:
    """A gray + alpha PNG (colour type 4), which OpenCV cannot write, with the Sub filter on every row."""
    height, width = image.shape[:2]
    depth = 16 if image.dtype == np.uint16 else 8
    rows = np.ascontiguousarray(image.astype(">u2") if depth == 16 else image).view(np.uint8)
    rows = rows.reshape(height, -1)
    bpp = 2 * depth // 8  # bytes per complete pixel, as the PNG filters count them
    filtered = rows.copy()
    filtered[:, bpp:] = rows[:, bpp:] - rows[:, :-bpp]  # uint8 arithmetic wraps mod 256, as PNG wants
    raw = np.concatenate([np.ones((height, 1), np.uint8), filtered], axis=1)  # filter type 1 = Sub

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, _PNG_GRAY_ALPHA, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------------------------------------- sizes


def check_image_size(
    height: int,
    width: int,
    scale: int = 4,
    max_output_pixels: int = MAX_OUTPUT_PIXELS,
    *,
    name: str | os.PathLike[str] | None = None,
) -> None:
    """Refuse an input whose upscaled output could not be written.

    Memory for untiled processing is the Upscaler's check; this one covers the output size limit.

    Args:
        height: input height in pixels.
        width: input width in pixels.
        scale: upscaling factor.
        max_output_pixels: largest allowed ``(scale * height) * (scale * width)``.
        name: the input's name for the message.

    Raises:
        InputError: ``X is too large for the given options: ...`` (or an empty image).
    """
    what = str(name) if name is not None else "the image"
    if height < 1 or width < 1:
        raise InputError(f"{what} is empty: expected at least 1x1 pixels, got {width}x{height}")
    out_h, out_w = height * scale, width * scale
    if out_h * out_w > max_output_pixels:
        raise InputError(
            f"{what} is too large for the given options: the x{scale} output would be {out_w}x{out_h} = "
            f"{out_h * out_w} pixels, more than the {max_output_pixels} an output image may have; "
            "crop or downscale the input"
        )


def describe_image(image: np.ndarray) -> str:
    """A short description such as ``"48x40 16-bit RGBA"`` (width x height, depth, channels)."""
    depth = {np.dtype(np.uint8): "8-bit", np.dtype(np.uint16): "16-bit", np.dtype(np.float32): "float32"}
    channels = 1 if image.ndim == 2 else image.shape[2]
    kind = {1: "gray", 2: "gray+alpha", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels}-channel")
    height, width = image.shape[:2]
    return f"{width}x{height} {depth.get(image.dtype, str(image.dtype))} {kind}"


# ------------------------------------------------------------------------------------------------- paths


def _has_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def expand_inputs(
    patterns: Iterable[str | os.PathLike[str]], extensions: Collection[str] = IMAGE_EXTENSIONS
) -> list[Path]:
    """Turn command-line inputs into a list of files.

    - an existing file is taken as given, whatever its extension;
    - a folder gives its files (not sub-folders) whose extension, any case, is in ``extensions``,
      sorted by name;
    - a pattern with ``*``, ``?`` or ``[`` that is not an existing path is a glob (``**`` recurses); its
      matching files are taken, sorted.

    The same file reached twice is listed once, at its first place.

    Args:
        patterns: paths, folders or glob patterns.
        extensions: extensions (lower case, with the dot) picked from folders.

    Returns:
        The files, in order.

    Raises:
        InputError: a path that does not exist, a folder without matching files, or a glob matching no file.
    """
    import glob

    wanted = {e.lower() for e in extensions}
    result: list[Path] = []
    seen: set[Path] = set()
    for pattern in patterns:
        text = os.fspath(pattern)
        p = Path(text).expanduser()
        if p.is_dir():
            files = sorted(c for c in p.iterdir() if c.is_file() and c.suffix.lower() in wanted)
            if not files:
                raise InputError(
                    f"no images in the folder {p} (expected files ending in {', '.join(sorted(wanted))})"
                )
        elif p.exists():
            files = [p]
        elif _has_glob(text):
            files = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True))
            files = [f for f in files if f.is_file()]
            if not files:
                raise InputError(f"no files match {text}")
        else:
            raise InputError(f"cannot read {text}: no such file or directory")
        for f in files:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                result.append(f)
    return result


def output_is_directory(output_option: str | os.PathLike[str] | None, n_inputs: int) -> bool:
    """Whether ``-o`` names a folder to write into rather than the output file itself.

    ``-o`` is a folder when it ends with a path separator, is an existing folder, or has no extension.
    Otherwise it is a file name, which is valid for a single input only.

    Args:
        output_option: the ``-o`` value, or None.
        n_inputs: how many inputs the command has.

    Returns:
        True for a folder, False for a file name or no ``-o``.

    Raises:
        InputError: ``-o`` names one file while there are several inputs.
    """
    if output_option is None:
        return False
    text = os.fspath(output_option)
    o = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or o.is_dir() or not o.suffix:
        return True
    if n_inputs > 1:
        raise InputError(
            f"-o {text} names one file but there are {n_inputs} inputs; "
            f"give a folder instead (e.g. -o {o.with_suffix('')}/)"
        )
    return False


def output_path_for(
    input_path: str | os.PathLike[str],
    output_option: str | os.PathLike[str] | None,
    n_inputs: int,
    suffix: str = "_x4",
    *,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Where the upscaled version of ``input_path`` goes.

    - no ``-o``: ``<stem><suffix><ext>`` beside the input;
    - ``-o`` a folder (see :func:`output_is_directory`; created when written):
      ``<folder>/<stem><suffix><ext>``;
    - ``-o`` a file name (one input only): that file, in the format of its extension.

    ``<ext>`` is the input's extension, or ``.png`` when the input's format is not one we write (an image
    read from ``.ppm`` say). The extension must suit the input: an image format for an image, a video
    container for a video.

    Args:
        input_path: the input file.
        output_option: the ``-o`` value, or None.
        n_inputs: how many inputs the command has.
        suffix: added to the input's stem.
        inputs: every input of the command; the output may overwrite none of them (``input_path`` is
            always checked).

    Returns:
        The output path.

    Raises:
        InputError: ``-o`` a file name with several inputs, an output extension that does not suit the
            input, or an output that is one of the inputs ("refusing to overwrite the input X").
    """
    inp = Path(input_path)
    is_video = inp.suffix.lower() in VIDEO_EXTENSIONS
    known = VIDEO_EXTENSIONS if is_video else IMAGE_EXTENSIONS
    ext = inp.suffix if inp.suffix.lower() in known else (".mp4" if is_video else ".png")
    name = f"{inp.stem}{suffix}{ext}"
    if output_option is None:
        out = inp.with_name(name)
    elif output_is_directory(output_option, n_inputs):
        out = Path(os.fspath(output_option)).expanduser() / name
    else:
        out = Path(os.fspath(output_option)).expanduser()
        if out.suffix.lower() not in known:
            kind = "a video" if is_video else "an image"
            raise InputError(
                f"cannot write {out}: '{out.suffix}' is not a format for {kind} "
                f"(expected one of {', '.join(known)})"
            )
    check_not_input(out, [inp, *inputs])
    return out


def companion_path(output: str | os.PathLike[str], tag: str) -> Path:
    """``<stem><tag><ext>`` beside ``output``, e.g. the ``_lower`` / ``_upper`` bound images."""
    out = Path(output)
    return out.with_name(f"{out.stem}{tag}{out.suffix}")


def check_not_input(output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]) -> None:
    """Raise when ``output`` is the same file as one of ``inputs``.

    Raises:
        InputError: ``refusing to overwrite the input X``.
    """
    given = Path(output).expanduser()
    out = given.resolve()
    for item in inputs:
        source = Path(item).expanduser()
        if source.resolve() == out or _same_existing_file(source, given):
            raise InputError(f"refusing to overwrite the input {item} (choose another -o)")


def _same_existing_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` both exist and are one file (a hard link has another path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


_WRITE_PROBE = b"certsr-rt write test\n" * 200  # 4 KiB: a full disk fails on it, not only on the output


def check_writable(folder: str | os.PathLike[str]) -> None:
    """Raise unless a file can be written in ``folder``, before any work is spent on its contents.

    A probe file (4 KiB, flushed to disk) is created and removed. A folder that does not exist yet is
    checked through the nearest existing folder above it, which is where it would be created; nothing is
    left behind either way.

    Args:
        folder: where an output will be written.

    Raises:
        InputError: ``cannot write into X: ...`` (read-only or full file system, no permission, a file
            where a folder is needed).
    """
    target = Path(folder).expanduser()
    probe_in = target
    while not probe_in.exists() and probe_in.parent != probe_in:
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise InputError(f"cannot write into {target}: {probe_in} is a file, not a folder")
    probe = probe_in / f".certsr-rt-write-test.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise InputError(f"cannot write into {target}: {exc.strerror or exc}") from None
    try:
        os.write(fd, _WRITE_PROBE)
        os.fsync(fd)
    except OSError as exc:
        raise InputError(f"cannot write into {target}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)


# The names this tool gives its outputs: NAME_x4.EXT and its companions NAME_x4_<tag>.EXT (the _lower and
# _upper bounds, the radius map).
_OUTPUT_STEM = re.compile(r"_x4(_[a-z0-9]+)*$", re.IGNORECASE)


def is_own_output(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like a certsr-rt output: by its name, or by the provenance record it carries.

    Used to leave a previous run's outputs out when a folder or glob is upscaled again.

    Args:
        path: an image or video file.

    Returns:
        True for ``NAME_x4.EXT`` / ``NAME_x4_<tag>.EXT`` names and for files whose metadata says
        ``{"tool": "certsr-rt", ...}`` (see :func:`read_provenance`).
    """
    p = Path(path)
    if _OUTPUT_STEM.search(p.stem):
        return True
    if p.suffix.lower() in VIDEO_EXTENSIONS:
        try:
            from certsr_rt.io.video import read_video_provenance

            record = read_video_provenance(p)
        except ImportError:  # no video support installed: the name rule alone
            return False
    else:
        record = read_provenance(p)
    return record is not None and record.get("tool") == "certsr-rt"


# ------------------------------------------------------------------------------------------------ stderr


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's logger and the C libraries' direct writes to stderr (libpng, libtiff).

    OpenCV's log level covers its own messages only; the codecs print to file descriptor 2, so it is
    pointed at /dev/null for the duration of the call. That is process-wide: other threads' stderr output
    during a decode is lost, a price worth the clean terminal (the calls take milliseconds).
    """
    with _quiet_lock:
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        saved = None
        try:
            try:
                saved = os.dup(2)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)
                os.close(devnull)
            except OSError:
                saved = None
            yield
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
            cv2.utils.logging.setLogLevel(level)
