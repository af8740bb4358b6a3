"""The video part of ``certsr-rt upscale clip.mp4 -o clip_x4.mp4``: progress line, notes and summary.

The ``upscale`` command routes the video extensions to :func:`run_video`, which runs
:func:`certsr_rt.runtime.video.upscale_video_file` (the pipeline, for library use too) and shows what it
does on stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from certsr_rt.cli.progress import ProgressDisplay, ProgressState, clock

if TYPE_CHECKING:
    from certsr_rt.runtime.video import VideoProgress, VideoResult

__all__ = ["run_video"]


def _video_line(s: ProgressState) -> str:
    """``upscaling clip.mp4: 120/300 frames (40%)  2.50 fps  elapsed 0:48  ETA 1:12``."""
    head = f"{s.description}: {s.completed:g}"
    head += f"/{s.total:g} frames ({100 * (s.fraction or 0):.0f}%)" if s.total else " frames"
    parts = [head, f"{s.rate or 0.0:.2f} fps", f"elapsed {clock(s.elapsed)}"]
    if s.remaining is not None:
        parts.append(f"ETA {clock(s.remaining)}")
    return "  ".join(parts)


def run_video(
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
    """Upscale a video file (:func:`~certsr_rt.runtime.video.upscale_video_file`), showing it on stderr.

    Args:
        input_path: the source video.
        output_path: the destination (written atomically).
        upscaler: an :class:`~certsr_rt.runtime.upscaler.Upscaler` or anything with its call contract.
        fresh_noise: independent noise per frame instead of one field for all frames.
        progress: called as ``progress(done, total)`` after each encoded frame; when given, the built-in
            progress line is not printed. Raising from it (e.g. ``KeyboardInterrupt``) cancels cleanly.
        quiet: print nothing (no progress line, no summary, no interruption note).
        batch: frames per upscaler call with the shared noise field.
        queue_size: capacity of the decode and encode queues, in frames.
        codec: video encoder; ``None`` picks by container.
        crf: quality for libx264 / libvpx-vp9; ``None`` for the default.

    Returns:
        The :class:`~certsr_rt.runtime.video.VideoResult`.
    """
    from certsr_rt.runtime.video import upscale_video_file

    # A bar on a terminal; in a log a line at most every 10 s and one at the end. Not when the caller
    # shows progress itself (the upscale command's batch bar).
    display = ProgressDisplay(
        f"upscaling {Path(input_path).name}",
        enabled=not quiet and progress is None,
        line=_video_line,
        line_seconds=10.0,
    )
    display.update(0)  # the clock starts now, before the first frame

    def on_frame(done: int, total: int | None) -> None:
        if progress is not None:
            progress(done, total)
        else:
            display.update(done, total, status=f"{display.state().rate or 0.0:.2f} fps")

    def notify(text: str) -> None:
        if display.enabled:
            display.print(text)
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    with display:
        result = upscale_video_file(
            input_path,
            output_path,
            upscaler,
            fresh_noise=fresh_noise,
            progress=on_frame,
            notify=None if quiet else notify,
            batch=batch,
            queue_size=queue_size,
            codec=codec,
            crf=crf,
        )
    if not quiet:
        err = sys.stderr
        err.write(
            f"wrote {result.output}: {result.frames} frames, {result.width}x{result.height} at "
            f"{float(result.fps):g} fps ({result.codec}), audio {result.audio}, {clock(result.seconds)} "
            f"({result.frames_per_second:.2f} frames/s)\n"
        )
        err.flush()
    return result
