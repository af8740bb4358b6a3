"""Upscale a video file: decode -> median-smoothed upscale -> encode, overlapped, audio kept.

``certsr-rt upscale clip.mp4 -o clip_x4.mp4`` lands here (the ``upscale`` command routes the video
extensions to :func:`upscale_video_file`). Decoding runs on a feeder thread, the upscaler on a compute
thread, and encoding on the calling thread (see :mod:`certsr_rt.runtime.stream`); frame count and frame
rate are kept, and the audio is carried over (see :mod:`certsr_rt.io.video`).

Interruption policy: **nothing**. On Ctrl-C or any error the partial output is deleted and the destination
is left as it was (absent, or the file that was there before); the message says how many frames were done.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

from certsr_rt.errors import InputError, Terminated

__all__ = ["VideoResult", "upscale_video_file"]

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


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _ProgressLine:
    """Frames done, throughput over the last frames, elapsed time and ETA on one line of stderr.

    On a terminal the line is rewritten in place a few times a second; elsewhere (a log file) a line is
    printed at most every 10 seconds, and a final one at the end.
    """

    def __init__(self, label: str, total: int | None, out: TextIO, *, window: int = 30) -> None:
        self.label = label
        self.total = total
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.start = time.monotonic()
        self.times: deque[float] = deque(maxlen=window)
        self.last_print = 0.0
        self.printed = False

    def text(self, done: int, now: float) -> str:
        self.times.append(now)
        if len(self.times) >= 2 and self.times[-1] > self.times[0]:
            fps = (len(self.times) - 1) / (self.times[-1] - self.times[0])
        else:
            fps = done / max(now - self.start, 1e-9)
        parts = [f"{self.label}: {done}"]
        total = self.total if self.total is None or done <= self.total else None
        if total:
            parts[0] += f"/{total} frames ({100 * done / total:.0f}%)"
        else:
            parts[0] += " frames"
        parts.append(f"{fps:.2f} fps")
        parts.append(f"elapsed {_clock(now - self.start)}")
        if total and fps > 0:
            parts.append(f"ETA {_clock(max(total - done, 0) / fps)}")
        return "  ".join(parts)

    def update(self, done: int) -> None:
        now = time.monotonic()
        line = self.text(done, now)
        interval = 0.25 if self.tty else 10.0
        if now - self.last_print >= interval or done == self.total:
            self.last_print = now
            self.printed = True
            if self.tty:
                self.out.write("\r\033[K" + line)
            else:
                self.out.write(line + "\n")
            self.out.flush()

    def finish(self) -> None:
        if self.tty and self.printed:
            self.out.write("\n")
            self.out.flush()


def _provenance(upscaler: object, fresh_noise: bool) -> dict[str, Any] | None:
    """The upscaler's provenance record (one seed for the whole video) and how the noise was keyed."""
    provenance = getattr(upscaler, "provenance", None)
    if not callable(provenance):
        return None
    return {**provenance(), "fresh_noise": fresh_noise}


def upscale_video_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    upscaler: object,
    *,
    fresh_noise: bool = False,
    progress: VideoProgress | None = None,
    quiet: bool = False,
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
            ``total`` is the container's frame count (``None`` when unknown). When given, the built-in
            progress line is not printed. Raising from it (e.g. ``KeyboardInterrupt``) cancels cleanly.
        quiet: print nothing (no progress line, no summary, no interruption note).
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
    err: TextIO = sys.stderr
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
        line = None
        if not quiet and progress is None:
            line = _ProgressLine(f"upscaling {src.name}", info.frame_count, err)
        try:
            for frame in stream:
                writer.write(frame)
                if progress is not None:
                    progress(writer.frames_written, info.frame_count)
                elif line is not None:
                    line.update(writer.frames_written)
            writer.close()
        except BaseException as exc:
            # Remove the partial file first, so nothing is left even if joining the threads takes a while.
            writer.abort()
            if line is not None:
                line.finish()
            if not quiet:
                of = f" of {info.frame_count}" if info.frame_count else ""
                if isinstance(exc, Terminated):
                    what = "terminated"  # SIGTERM; the CLI uses one word per signal
                else:
                    what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "stopped"
                err.write(
                    f"{what} after {writer.frames_written}{of} frames; the partial video was deleted, "
                    f"nothing was written to {dst}\n"
                )
                err.flush()
            if not stream.close(timeout=1.0) and not quiet:
                err.write("waiting for the frame in progress to stop (Ctrl-C again to quit at once)\n")
                err.flush()
            raise
        finally:
            stream.close()
    if line is not None:
        line.finish()
    result = VideoResult(
        output=dst,
        frames=writer.frames_written,
        width=info.width * scale,
        height=info.height * scale,
        fps=info.fps,
        codec=writer.codec,
        audio=writer.audio,
        seconds=time.monotonic() - started,
    )
    if not quiet:
        fps = float(info.fps)
        err.write(
            f"wrote {dst}: {result.frames} frames, {result.width}x{result.height} at {fps:g} fps "
            f"({result.codec}), audio {result.audio}, {_clock(result.seconds)} "
            f"({result.frames_per_second:.2f} frames/s)\n"
        )
        err.flush()
    return result
