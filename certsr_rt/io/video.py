"""Video files in and out, through PyAV (the ``video`` extra: ``pip install 'certsr-rt[video]'``).

PyAV ships its own ffmpeg inside its wheel, so no system ffmpeg is needed. It is imported lazily, the first
time a video is opened, so ``import certsr_rt`` never pays for it.

Reading (:class:`VideoReader`): the first video stream is decoded to ``H x W x 3`` uint8 RGB numpy frames
(8 bits per channel, whatever the source depth; the source's colour matrix tag is honoured). Frame rate,
frame count, duration and the audio stream are described by :class:`VideoInfo`.

Writing (:class:`VideoWriter`): RGB uint8 frames are encoded at a constant frame rate, frame ``i`` at time
``i / fps``, in BT.709 limited-range ``yuv420p`` (tagged as such), with a codec chosen by the container:

=============================  ===============================================
container                      video codec
=============================  ===============================================
``.mp4`` ``.mkv`` ``.mov``     H.264 (libx264, CRF 18), MPEG-4 Part 2 if the
                               installed ffmpeg has no libx264
``.webm``                      VP9 (libvpx-vp9, CRF 32)
``.avi``                       MPEG-4 Part 2
=============================  ===============================================

The audio of a source file is copied packet for packet (no re-encoding) when the output container can hold
its codec, and interleaved with the video as frames are written; otherwise it is re-encoded to the
container's usual codec (AAC for mp4/mov/mkv, Opus for webm, MP3 for avi) and :attr:`VideoWriter.audio`
says so. Subtitle and data streams are not carried over.

**Interruption policy: nothing.** The writer encodes into a hidden temporary file next to the destination
(``.<name>.<random>.tmp``, see :mod:`certsr_rt.io.atomic`), flushed to disk and renamed over the destination
only after the container has been closed cleanly. On any exception, including ``KeyboardInterrupt``
(Ctrl-C), :meth:`VideoWriter.abort` closes and deletes the temporary file: the destination is then either
the file that was there before, or absent, never a truncated video. :attr:`VideoWriter.frames_written`
tells the caller how far it got. (Only a hard kill, e.g. ``SIGKILL``, can leave the hidden temporary file
behind.)

**Provenance.** ``VideoWriter(provenance=...)`` stores the record under the container metadata key
``certsr_rt`` (the same JSON as the image outputs, see :mod:`certsr_rt.io.images`): a global tag in mkv
and webm (ffmpeg spells it ``CERTSR_RT``), a metadata item in mp4 and mov (written with ffmpeg's
``movflags=use_metadata_tags``), and in avi, which keeps only its fixed INFO tags, the comment
(``ICMT``) as ``certsr_rt=<json>``. :func:`read_video_provenance` reads any of them back. Containers are
muxed bit-exact (no random segment UID or date), so the same frames give a byte-identical file.

Every failure to open, decode or encode is an :class:`~certsr_rt.errors.InputError` with one line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from certsr_rt._deps import require
from certsr_rt.errors import InputError
from certsr_rt.io.atomic import AtomicFile

__all__ = [
    "SUPPORTED_VIDEO_EXTENSIONS",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "count_frames",
    "default_video_codec",
    "probe_video",
    "read_video_provenance",
]

SUPPORTED_VIDEO_EXTENSIONS: tuple[str, ...] = (".avi", ".mkv", ".mov", ".mp4", ".webm")
"""Containers :class:`VideoWriter` writes (lower case); :class:`VideoReader` reads anything ffmpeg does."""

# Output container -> ffmpeg muxer name.
_MUXERS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".avi": "avi", ".webm": "webm"}
# Output container -> video encoders in order of preference.
_VIDEO_CODECS = {
    ".mp4": ("libx264", "mpeg4"),
    ".mkv": ("libx264", "mpeg4"),
    ".mov": ("libx264", "mpeg4"),
    ".avi": ("mpeg4",),
    ".webm": ("libvpx-vp9", "libvpx"),
}
# Output container -> audio encoder used when the source audio codec cannot be copied into it.
_AUDIO_FALLBACK = {".mp4": "aac", ".mkv": "aac", ".mov": "aac", ".avi": "libmp3lame", ".webm": "libopus"}
# Audio codecs copied into a container. ffmpeg's own check (avformat_query_codec) answers "maybe" for
# several pairs whose header write later fails (e.g. PCM in mp4), so the copy list is explicit.
_AUDIO_COPYABLE: dict[str, frozenset[str] | None] = {
    ".mp4": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus"}),
    ".mov": frozenset(
        {
            "aac",
            "mp3",
            "alac",
            "ac3",
            "eac3",
            "pcm_s16le",
            "pcm_s16be",
            "pcm_s24le",
            "pcm_s24be",
            "pcm_f32le",
            "pcm_f32be",
            "pcm_u8",
        }
    ),
    ".mkv": None,  # Matroska holds any codec ffmpeg can read.
    ".webm": frozenset({"opus", "vorbis"}),
    ".avi": frozenset({"mp3", "ac3", "pcm_s16le", "pcm_u8"}),
}
# Interleave audio up to this far ahead of the last written video frame (seconds).
_AUDIO_LEAD = 0.5


def _av() -> ModuleType:
    return require("av", "video", "reading and writing video files")


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, as read from its container (nothing is decoded).

    Attributes:
        path: the file.
        container: ffmpeg's name of the container format, e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"``.
        width: frame width in pixels.
        height: frame height in pixels.
        fps: average frame rate, exact (e.g. ``Fraction(30000, 1001)``).
        frame_count: number of frames from the container header, or estimated from duration x fps when the
            header has none (Matroska/WebM); ``None`` when neither is known. Use it for progress, not logic.
        frame_count_exact: whether ``frame_count`` came from the header (still only as good as the muxer
            that wrote it).
        duration: seconds, or ``None`` when unknown.
        start_time: presentation time of the first video frame in seconds (usually 0).
        video_codec: decoder name, e.g. ``"h264"``.
        audio_codec: codec of the first audio stream, or ``None`` when there is no audio.
        audio_sample_rate: its sample rate in Hz, or ``None``.
        audio_channels: its channel count, or ``None``.
    """

    path: Path
    container: str
    width: int
    height: int
    fps: Fraction
    frame_count: int | None
    frame_count_exact: bool
    duration: float | None
    start_time: float
    video_codec: str
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_channels: int | None

    @property
    def has_audio(self) -> bool:
        """Whether the file has an audio stream."""
        return self.audio_codec is not None


def _open_input(path: Path) -> Any:
    """``av.open`` for reading, with every failure turned into one :class:`InputError` line."""
    av = _av()
    if not path.exists():
        raise InputError(f"cannot read {path}: no such file")
    if path.is_dir():
        raise InputError(f"cannot read {path}: expected a video file, got a directory")
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise InputError(
            f"cannot read {path}: expected a video file ffmpeg can open (mp4, mkv, mov, avi, webm, ...), "
            f"ffmpeg says: {_ffmpeg_reason(exc)}"
        ) from None


def _ffmpeg_reason(exc: BaseException) -> str:
    """The useful part of a PyAV error: ffmpeg's message without the errno and file name decorations."""
    strerror = getattr(exc, "strerror", None)
    return str(strerror or exc)


def _video_stream(container: Any, path: Path) -> Any:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise InputError(f"cannot read {path}: expected a video stream, found {', '.join(kinds)}")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise InputError(
            f"cannot read {path}: expected a video codec PyAV's ffmpeg can decode, found one it cannot"
        )
    return stream


def _describe(container: Any, stream: Any, path: Path) -> VideoInfo:
    fps = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not fps or fps <= 0:
        raise InputError(f"cannot read {path}: expected a video stream with a frame rate, found none")
    fps = Fraction(fps)
    duration: float | None = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    exact = bool(stream.frames)
    count: int | None = int(stream.frames) if exact else None
    if count is None and duration is not None:
        count = max(1, round(duration * fps))
    start = 0.0
    if stream.start_time is not None and stream.time_base is not None:
        start = float(stream.start_time * stream.time_base)
    audio = container.streams.audio[0] if container.streams.audio else None
    audio_ctx = audio.codec_context if audio is not None else None
    return VideoInfo(
        path=path,
        container=container.format.name,
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
        fps=fps,
        frame_count=count,
        frame_count_exact=exact,
        duration=duration,
        start_time=start,
        video_codec=_codec_name(stream),
        audio_codec=None if audio is None else _codec_name(audio),
        audio_sample_rate=None if audio_ctx is None else int(audio_ctx.sample_rate),
        audio_channels=None if audio_ctx is None else int(audio_ctx.channels),
    )


def _codec_name(stream: Any) -> str:
    """The codec's canonical name (``mp3``, not the decoder's ``mp3float``)."""
    ctx = stream.codec_context
    return "unknown" if ctx is None else str(ctx.codec.canonical_name)


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Describe a video file without decoding it.

    Args:
        path: the video file.

    Returns:
        Its :class:`VideoInfo`.

    Raises:
        InputError: the file is missing, not a media file ffmpeg can open, or has no video stream.
        MissingDependencyError: PyAV (the ``video`` extra) is not installed.
    """
    p = Path(path)
    container = _open_input(p)
    try:
        return _describe(container, _video_stream(container, p), p)
    finally:
        container.close()


class VideoReader:
    """Decode the first video stream of a file into ``H x W x 3`` uint8 RGB numpy frames.

    Use it as a context manager, and iterate it once::

        with VideoReader("clip.mp4") as reader:
            print(reader.info.fps, reader.info.frame_count)
            for rgb in reader:          # H x W x 3 uint8
                ...

    Iteration may happen on another thread than the one that opened the reader (the video pipeline decodes
    on a worker thread), but not on two at once.

    Args:
        path: the video file.
        threads: decoder threads; ``0`` lets ffmpeg choose.

    Raises:
        InputError: the file is missing, unreadable or has no decodable video stream (at open), or a packet
            cannot be decoded (during iteration).
        MissingDependencyError: PyAV is not installed.
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 0) -> None:
        self.path = Path(path)
        self._container = _open_input(self.path)
        try:
            self._stream = _video_stream(self._container, self.path)
            self.info = _describe(self._container, self._stream, self.path)
            self._stream.thread_type = "AUTO"
            self._stream.codec_context.thread_count = threads
        except BaseException:
            self._container.close()
            raise
        self.frames_read = 0
        """Frames decoded so far."""

    def __iter__(self) -> Iterator[np.ndarray]:
        av = _av()
        try:
            for frame in self._container.decode(self._stream):
                rgb = frame.to_ndarray(format="rgb24")
                self.frames_read += 1
                yield rgb
        except av.FFmpegError as exc:
            raise InputError(
                f"cannot read {self.path}: decoding failed after {self.frames_read} frames "
                f"(expected a complete, uncorrupted stream), ffmpeg says: {_ffmpeg_reason(exc)}"
            ) from None

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_video_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance record a certsr-rt video carries (see the module notes), or None.

    Args:
        path: a video file.

    Returns:
        The record as a dict, or None when the file has none or cannot be opened.
    """
    from certsr_rt.io.images import PROVENANCE_KEY, parse_provenance

    av = _av()
    try:
        with av.open(str(path), mode="r") as container:
            metadata = {str(k).lower(): str(v) for k, v in container.metadata.items()}
    except (av.FFmpegError, OSError, ValueError):
        return None
    record = parse_provenance(metadata.get(PROVENANCE_KEY))
    if record is None and metadata.get("comment", "").startswith(PROVENANCE_KEY + "="):
        record = parse_provenance(metadata["comment"])
    return record


def count_frames(path: str | os.PathLike[str]) -> int:
    """Count the frames of the first video stream by demuxing and decoding them all (exact, slowish).

    Args:
        path: the video file.

    Returns:
        The number of decoded frames.
    """
    p = Path(path)
    container = _open_input(p)
    try:
        stream = _video_stream(container, p)
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))
    finally:
        container.close()


def default_video_codec(path: str | os.PathLike[str]) -> str:
    """The encoder :class:`VideoWriter` uses for ``path``'s container with the installed PyAV.

    Args:
        path: an output path ending in one of :data:`SUPPORTED_VIDEO_EXTENSIONS`.

    Returns:
        An ffmpeg encoder name, e.g. ``"libx264"``.

    Raises:
        InputError: unsupported extension, or none of the container's encoders is in PyAV's ffmpeg.
    """
    ext = _extension(Path(path))
    av = _av()
    for name in _VIDEO_CODECS[ext]:
        try:
            av.codec.Codec(name, "w")
        except (av.codec.codec.UnknownCodecError, ValueError):
            continue
        return name
    raise InputError(
        f"cannot write {path}: expected one of the encoders {', '.join(_VIDEO_CODECS[ext])} in PyAV's "
        "ffmpeg, found none"
    )


def _extension(path: Path) -> str:
    ext = path.suffix.lower()
    if ext not in _MUXERS:
        raise InputError(
            f"cannot write {path}: expected a video extension among {', '.join(SUPPORTED_VIDEO_EXTENSIONS)}, "
            f"got {ext or 'none'!r}"
        )
    return ext


class VideoWriter:
    """Encode RGB uint8 frames into a video file, atomically, optionally with the audio of a source file.

    Use it as a context manager: leaving the block normally finalizes the file (:meth:`close`); leaving it
    by any exception, ``KeyboardInterrupt`` included, removes the partial output (:meth:`abort`)::

        with VideoWriter("out.mp4", width=1280, height=720, fps=Fraction(30), audio_from="in.mp4") as w:
            for rgb in frames:
                w.write(rgb)

    Args:
        path: destination; the extension picks the container (see the module docstring).
        width: frame width in pixels (even: ``yuv420p`` needs it).
        height: frame height in pixels (even).
        fps: frame rate, best as an exact :class:`~fractions.Fraction` (e.g. ``Fraction(30000, 1001)``).
        codec: video encoder name (e.g. ``"libx264"``); ``None`` picks by container.
        crf: constant-rate-factor quality for libx264 / libvpx-vp9 (lower is better; defaults 18 / 32);
            ignored by other encoders.
        provenance: a JSON-serialisable record stored in the container metadata (see the module notes).
        audio_from: a media file whose first audio stream is carried into the output, or ``None``.
        audio_offset: seconds subtracted from the carried audio's timestamps, to keep it in sync with a
            source video stream that started at this time (the output video starts at 0).

    Raises:
        InputError: unsupported extension or codec, odd size, unreadable ``audio_from``, or a destination
            folder that cannot be created or written (missing folders are created).
        MissingDependencyError: PyAV is not installed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        fps: Fraction | int | float,
        codec: str | None = None,
        crf: int | None = None,
        audio_from: str | os.PathLike[str] | None = None,
        audio_offset: float = 0.0,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        av = _av()
        self.path = Path(path)
        ext = _extension(self.path)
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise InputError(
                f"cannot write {self.path}: expected a positive even width and height, got {width}x{height}"
            )
        fps = Fraction(fps).limit_denominator(1_000_000) if not isinstance(fps, Fraction) else fps
        if fps <= 0:
            raise InputError(f"cannot write {self.path}: expected a positive frame rate, got {fps}")
        self.width, self.height, self.fps = width, height, fps
        self.codec = codec or default_video_codec(self.path)
        self.frames_written = 0
        """Frames handed to the encoder so far."""
        self.audio = "none"
        """What happened to the audio: ``"none"``, ``"copied (aac)"`` or ``"re-encoded (opus -> aac)"``."""

        self._file = AtomicFile(self.path)
        self.temporary_path = self._file.temporary
        """The hidden file being encoded; it becomes :attr:`path` on :meth:`close`."""
        self._audio_in: Any = None
        self._closed = False
        try:
            # bitexact: no random segment UID or muxing date (mkv, webm), so the same frames, options and
            # --seed give a byte-identical file.
            options = {"fflags": "+bitexact"}
            if ext in (".mp4", ".mov") and provenance:
                options["movflags"] = "use_metadata_tags"
            self._container = av.open(
                str(self.temporary_path), mode="w", format=_MUXERS[ext], options=options
            )
        except (av.FFmpegError, OSError) as exc:
            self._remove_temporary()
            raise InputError(f"cannot write {self.path}: {_ffmpeg_reason(exc)}") from None
        try:
            if provenance is not None:
                from certsr_rt.io.images import PROVENANCE_KEY, provenance_text

                text = provenance_text(provenance)
                if ext == ".avi":
                    self._container.metadata["comment"] = f"{PROVENANCE_KEY}={text}"
                else:
                    self._container.metadata[PROVENANCE_KEY] = text
            self._video = self._add_video_stream(av, crf)
            if audio_from is not None:
                self._add_audio(Path(audio_from), ext, audio_offset)
            self._container.start_encoding()  # write the header now: bad codec/container pairs fail here
        except BaseException as exc:
            self.abort()
            if isinstance(exc, (av.FFmpegError, ValueError)):
                raise InputError(
                    f"cannot write {self.path} with video codec {self.codec}: {_ffmpeg_reason(exc)}"
                ) from None
            raise

    # ------------------------------------------------------------------ setup
    def _add_video_stream(self, av: ModuleType, crf: int | None) -> Any:
        try:
            stream = self._container.add_stream(self.codec, rate=self.fps)
        except (av.codec.codec.UnknownCodecError, ValueError) as exc:
            raise InputError(
                f"cannot write {self.path}: expected a video encoder this container accepts, "
                f"got {self.codec!r} ({exc})"
            ) from None
        stream.width = self.width
        stream.height = self.height
        stream.pix_fmt = "yuv420p"
        cc = stream.codec_context
        cc.time_base = Fraction(1) / self.fps
        # Tag the colour space we convert with: untagged HD video is read as BT.709 by players anyway, and
        # the tags make every player agree.
        cc.colorspace = 1  # AVCOL_SPC_BT709
        cc.color_primaries = 1  # AVCOL_PRI_BT709
        cc.color_trc = 1  # AVCOL_TRC_BT709
        cc.color_range = 1  # AVCOL_RANGE_MPEG (limited)
        if self.codec == "libx264":
            stream.options = {"crf": str(18 if crf is None else crf), "preset": "medium"}
        elif self.codec in ("libvpx-vp9", "libvpx"):
            cc.bit_rate = 0  # constant quality
            stream.options = {
                "crf": str(32 if crf is None else crf),
                "b": "0",
                "deadline": "good",
                "cpu-used": "4",
                "row-mt": "1",
            }
        else:
            # MPEG-4 Part 2 and others: ~0.2 bit per pixel keeps upscaled detail without huge files.
            bits = self.width * self.height * float(self.fps) * 0.2
            cc.bit_rate = int(max(2_000_000, min(200_000_000, bits)))
        return stream

    def _add_audio(self, source: Path, ext: str, offset: float) -> None:
        self._audio_in = _open_input(source)
        if not self._audio_in.streams.audio:
            self._audio_in.close()
            self._audio_in = None
            return
        src = self._audio_in.streams.audio[0]
        src_name = _codec_name(src)
        copyable = _AUDIO_COPYABLE[ext]
        self._audio_copy = copyable is None or src_name in copyable
        if self._audio_copy:
            try:
                self._audio_out = self._container.add_stream_from_template(src)
            except ValueError:
                self._audio_copy = False
        if not self._audio_copy:
            if src.codec_context is None:
                raise InputError(
                    f"cannot copy the audio of {source}: expected a codec PyAV can decode, got {src_name}"
                )
            target = _AUDIO_FALLBACK[ext]
            rate = int(src.codec_context.sample_rate)
            rates = _av().codec.Codec(target, "w").audio_rates
            if rates and rate not in rates:
                rate = 48000 if 48000 in rates else max(rates)
            self._audio_out = self._container.add_stream(target, rate=rate)
            # More than two channels are downmixed to stereo: MP3 cannot hold them, and Opus would need an
            # explicit channel mapping.
            layout = src.codec_context.layout
            self._audio_out.codec_context.layout = layout if layout.nb_channels <= 2 else "stereo"
            self._audio_out.codec_context.bit_rate = 192_000
            self.audio = f"re-encoded ({src_name} -> {self._audio_out.codec_context.codec.canonical_name})"
        else:
            self.audio = f"copied ({src_name})"
        self._audio_src = src
        self._audio_shift = offset
        self._audio_packets = self._audio_in.demux(src)
        self._audio_pending: Any = None
        self._audio_done = False
        self._audio_flushed = False

    # ------------------------------------------------------------------ writing
    def write(self, image: np.ndarray) -> None:
        """Encode one ``height x width x 3`` uint8 RGB frame.

        Args:
            image: the frame, C-contiguous or not.

        Raises:
            InputError: the frame has the wrong shape or dtype, or the encoder failed.
        """
        if self._closed:
            raise InputError(f"cannot write to {self.path}: expected an open writer, it is already closed")
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise InputError(
                f"cannot write to {self.path}: expected a {self.height} x {self.width} x 3 uint8 RGB frame, "
                f"got shape {image.shape} dtype {image.dtype}"
            )
        av = _av()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
        frame.pts = self.frames_written
        frame.time_base = self._video.codec_context.time_base
        try:
            self._container.mux(self._video.encode(frame))
        except av.FFmpegError as exc:
            raise InputError(
                f"cannot write {self.path}: encoding frame {self.frames_written} failed, "
                f"ffmpeg says: {_ffmpeg_reason(exc)}"
            ) from None
        self.frames_written += 1
        if self._audio_in is not None:
            self._mux_audio_until(self.frames_written / self.fps + _AUDIO_LEAD)

    def _mux_audio_until(self, until: float | None) -> None:
        """Carry source audio whose timestamp is before ``until`` seconds (``None``: all of it)."""
        while not self._audio_done:
            packet = self._audio_pending
            if packet is None:
                try:
                    packet = next(self._audio_packets)
                except StopIteration:
                    self._audio_done = True
                    break
                if self._audio_copy and packet.dts is None:
                    continue  # the demuxer's empty flush packet
            t = None
            if packet.pts is not None and packet.time_base is not None:
                t = float(packet.pts * packet.time_base)
            if until is not None and t is not None and t - self._audio_shift > until:
                self._audio_pending = packet
                return
            self._audio_pending = None
            self._carry_audio(packet)
        if self._audio_done and not self._audio_copy and not self._audio_flushed:
            self._audio_flushed = True
            self._container.mux(self._audio_out.encode(None))

    def _carry_audio(self, packet: Any) -> None:
        if self._audio_shift:
            shift = round(self._audio_shift / packet.time_base)
            if packet.pts is not None:
                packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
        if self._audio_copy:
            packet.stream = self._audio_out
            self._container.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None  # let the encoder's resampler number the samples
            self._container.mux(self._audio_out.encode(frame))

    # ------------------------------------------------------------------ finishing
    def close(self) -> None:
        """Flush the encoders, carry the remaining audio, close the file and move it to :attr:`path`.

        Raises:
            InputError: finalizing failed; the partial output has then been removed.
        """
        if self._closed:
            return
        av = _av()
        try:
            if self.frames_written == 0:
                raise InputError(f"cannot write {self.path}: expected at least one frame, got none")
            self._container.mux(self._video.encode(None))
            if self._audio_in is not None:
                self._mux_audio_until(None)
            self._container.close()
            self._closed = True
            self._close_audio_source()
            self._file.commit()
        except BaseException as exc:
            self.abort()
            if isinstance(exc, (av.FFmpegError, OSError)):
                raise InputError(
                    f"cannot write {self.path}: finishing the file failed: {_ffmpeg_reason(exc)}"
                ) from None
            raise

    def abort(self) -> None:
        """Stop without producing output: close everything and delete the temporary file (idempotent)."""
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away; its trailer does not matter
                pass
        self._close_audio_source()
        self._remove_temporary()

    def _close_audio_source(self) -> None:
        if self._audio_in is not None:
            self._audio_in.close()
            self._audio_in = None

    def _remove_temporary(self) -> None:
        self._file.discard()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
