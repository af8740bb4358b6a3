"""Upscale a video file: decode -> median-smoothed upscale -> encode, overlapped, audio kept.

Decoding runs on a feeder thread, the upscaler on a compute thread, and encoding on the calling thread
(see :mod:`certsr_rt.runtime.stream`); frame count and frame rate are kept, and the audio is carried over
(see :mod:`certsr_rt.io.video`). The ``upscale`` command (``certsr-rt upscale clip.mp4``) shows its
progress through :mod:`certsr_rt.cli.upscale_video`; this module prints nothing itself.

Interruption policy: **nothing**. On Ctrl-C or any error the partial output is deleted and the destination
is left as it was (absent, or the file that was there before); ``notify`` is told how many frames were done.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from certsr_rt.errors import InputError, Terminated

__all__ = ["VideoProgress", "VideoResult", "upscale_video_file"]

VideoProgress = Callable[[int, "int | None"], None]
"""``progress(done, total)``: frames encoded so far and the expected total (``None`` when unknown)."""


@dataclass(frozen=True)
class VideoResult:
    """What :func:`upscale_video_file` produced.

    Attributes:
        output: the finished file.
        frames: frames written (equal to the frames decoded from the input).
        width: output width in pixels.
        height: output height in pixels.
        fps: frame rate, exact.
        codec: video encoder used.
        audio: ``"none"``, ``"copied (aac)"`` or ``"re-encoded (opus -> aac)"``.
        seconds: wall time of the whole run.
    """

    output: Path
    frames: int
    width: int
    height: int
    fps: Fraction
    codec: str
    audio: str
    seconds: float

    @property
    def frames_per_second(self) -> float:
        """Throughput of the run, frames per wall-clock second."""
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def _provenance(upscaler: object, fresh_noise: bool) -> dict[str, Any] | None:
    """The upscaler's provenance record (one seed for the whole video) and how the noise was keyed."""
    provenance = getattr(upscaler, "provenance", None)
    if not callable(provenance):
        return None
    return {**provenance(), "fresh_noise": fresh_noise}


def stop_word(exc: BaseException) -> str:
    """How a run that raised ``exc`` ended, in one word: ``terminated``, ``interrupted`` or ``stopped``."""
    if isinstance(exc, Terminated):
        return "terminated"  # SIGTERM; the CLI uses one word per signal
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else "stopped"


def upscale_video_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    upscaler: object,
    *,
    fresh_noise: bool = False,
    progress: VideoProgress | None = None,
    notify: Callable[[str], None] | None = None,
    batch: int = 1,
    queue_size: int = 4,
    codec: str | None = None,
    crf: int | None = None,
) -> VideoResult:
    """Upscale every frame of a video file and write the result with the same frame rate and audio.

    Args:
        input_path: the source video (anything PyAV's ffmpeg reads).
        output_path: the destination; its extension (``.mp4 .mkv .mov .avi .webm``) picks the container.
            Written atomically: it appears only when complete.
        upscaler: an :class:`~certsr_rt.runtime.upscaler.Upscaler` (anything with ``scale`` and
            ``upscaler(rgb_uint8, noise_key=k)``).
        fresh_noise: ``False``: one noise field for every frame (no flicker in static regions);
            ``True``: independent noise per frame (key = frame index).
        progress: called as ``progress(done, total)`` after each encoded frame, on the calling thread;
            ``total`` is the container's frame count (``None`` when unknown). Raising from it (e.g.
            ``KeyboardInterrupt``) cancels cleanly.
        notify: called with one line when the run stops early (how many frames were done, that nothing
            was written), and once more if the frame in progress takes over a second to stop; ``None``:
            silent.
        batch: frames per upscaler call with the shared noise field (see :mod:`certsr_rt.runtime.stream`).
        queue_size: capacity of the decode and encode queues, in frames.
        codec: video encoder (e.g. ``"libx264"``); ``None`` picks by container.
        crf: quality for libx264 / libvpx-vp9 (lower is better); ``None`` for the default.

    Returns:
        A :class:`VideoResult`.

    Raises:
        InputError: unreadable input, unsupported output extension, output equal to the input, or an
            encoding failure. Nothing is left at ``output_path`` in that case.
        MissingDependencyError: PyAV (the ``video`` extra) is not installed.
        KeyboardInterrupt: re-raised after the partial output was removed.
    """
    from certsr_rt.io.video import SUPPORTED_VIDEO_EXTENSIONS, VideoReader, VideoWriter
    from certsr_rt.runtime.stream import upscale_stream

    src, dst = Path(input_path), Path(output_path)
    if dst.suffix.lower() not in SUPPORTED_VIDEO_EXTENSIONS:
        raise InputError(
            f"cannot write {dst}: expected a video extension among {', '.join(SUPPORTED_VIDEO_EXTENSIONS)}, "
            f"got {dst.suffix or 'none'!r}"
        )
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise InputError(f"the output must be a different file from the input, got {dst} for both")
    scale = getattr(upscaler, "scale", None)
    if not isinstance(scale, int) or scale < 1:
        raise InputError(f"Expected an upscaler with an integer scale attribute, but got {scale!r}")

    started = time.monotonic()
    with VideoReader(src) as reader:
        info = reader.info
        # Threads start at the first frame; made before the writer so a bad option leaves no file behind.
        stream = upscale_stream(
            upscaler,  # type: ignore[arg-type]
            reader,
            batch=batch,
            queue_size=queue_size,
            fresh_noise=fresh_noise,
        )
        writer = VideoWriter(
            dst,
            width=info.width * scale,
            height=info.height * scale,
            fps=info.fps,
            codec=codec,
            crf=crf,
            audio_from=src if info.has_audio else None,
            audio_offset=info.start_time,
            provenance=_provenance(upscaler, fresh_noise),
        )
        try:
            for frame in stream:
                writer.write(frame)
                if progress is not None:
                    progress(writer.frames_written, info.frame_count)
            writer.close()
        except BaseException as exc:
            # Remove the partial file first, so nothing is left even if joining the threads takes a while.
            writer.abort()
            if notify is not None:
                of = f" of {info.frame_count}" if info.frame_count else ""
                notify(
                    f"{stop_word(exc)} after {writer.frames_written}{of} frames; the partial video was "
                    f"deleted, nothing was written to {dst}"
                )
            if not stream.close(timeout=1.0) and notify is not None:
                notify("waiting for the frame in progress to stop (Ctrl-C again to quit at once)")
            raise
        finally:
            stream.close()
    return VideoResult(
        output=dst,
        frames=writer.frames_written,
        width=info.width * scale,
        height=info.height * scale,
        fps=info.fps,
        codec=writer.codec,
        audio=writer.audio,
        seconds=time.monotonic() - started,
    )
