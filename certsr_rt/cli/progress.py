"""The one progress display of the commands (upscale, video, train, evaluate), on stderr.

On a terminal it is a rich bar (description, bar, count or percentage, elapsed time, ETA and a status
text such as the losses or the frame rate), redrawn in place. Elsewhere (a log file, a pipe, CI) it
prints plain lines at a steady cadence: at most one per ``line_seconds``, and/or one every ``line_every``
steps, and one when the work is complete (``line_at_end``). The words of a line are the command's
(``line=``); the numbers (rate, ETA, elapsed time) come from here. Rates and ETAs are rich's estimate (a
30-second window), in the plain lines too, so both forms agree.

The runtime and the trainer know nothing of it: they call a callback, and the command turns the calls into
:meth:`ProgressDisplay.update`. ``--quiet`` and every rank but 0 under ``torchrun`` build it with
``enabled=False``, which shows nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

__all__ = ["ProgressDisplay", "ProgressState", "clock", "text_bar"]


def clock(seconds: float) -> str:
    """``M:SS`` under an hour, else ``H:MM:SS`` (hours unbounded)."""
    s = max(int(round(seconds)), 0)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def text_bar(fraction: float, width: int = 20) -> str:
    """``####......``: a bar of ``width`` characters for a plain line."""
    filled = int(width * min(max(fraction, 0.0), 1.0))
    return "#" * filled + "." * (width - filled)


@dataclass(frozen=True)
class ProgressState:
    """What a plain line is made of.

    Attributes:
        description: the current description (e.g. ``2/5 photo.png``).
        completed: steps done.
        total: steps in all; ``None`` while unknown.
        elapsed: seconds since the first update.
        rate: steps per second (recent), ``None`` before there is any.
        status: the command's status text (losses, the share of the current input, ...).
    """

    description: str
    completed: float
    total: float | None
    elapsed: float
    rate: float | None
    status: str

    @property
    def fraction(self) -> float | None:
        """``completed / total``, ``None`` while the total is unknown."""
        return min(self.completed / self.total, 1.0) if self.total else None

    @property
    def remaining(self) -> float | None:
        """Estimated seconds to completion, ``None`` without a total or a rate."""
        if not self.total or not self.rate:
            return None
        return max(self.total - self.completed, 0.0) / self.rate

    @property
    def done(self) -> bool:
        """Whether the total is known and reached."""
        return self.total is not None and self.completed >= self.total


def _default_line(s: ProgressState) -> str:
    parts = [s.description]
    if s.total:
        parts.append(f"{s.completed:g}/{s.total:g} ({100 * (s.fraction or 0):.0f}%)")
    else:
        parts.append(f"{s.completed:g}")
    parts.append(f"elapsed {clock(s.elapsed)}")
    if s.remaining is not None:
        parts.append(f"ETA {clock(s.remaining)}")
    if s.status:
        parts.append(s.status)
    return "  ".join(parts)


class ProgressDisplay:
    """A progress bar on a terminal, plain lines elsewhere; one task at a time.

    Use it as a context manager, or call :meth:`close` at the end (it ends the bar's line).

    Args:
        description: the first description.
        enabled: ``False`` shows nothing (``--quiet``, ranks other than 0).
        console: where to draw; default rich's stderr console.
        line: the words of a plain line, from a :class:`ProgressState`.
        line_seconds: shortest time between two plain lines; ``None``: no time cadence.
        line_every: a plain line whenever ``completed`` reaches a multiple of this; ``None``: none.
        line_at_end: a plain line when ``completed`` reaches ``total`` (off where the command's own
            "wrote ..." line says as much).
        count: show ``done/total`` on the bar (steps are whole things: images, iterations); otherwise a
            percentage (fractional work units).
        transient: remove the bar from the terminal when closed (the command prints its own summary).
    """

    def __init__(
        self,
        description: str = "",
        *,
        enabled: bool = True,
        console: Console | None = None,
        line: Callable[[ProgressState], str] = _default_line,
        line_seconds: float | None = 30.0,
        line_every: int | None = None,
        line_at_end: bool = True,
        count: bool = True,
        transient: bool = False,
    ) -> None:
        self.enabled = enabled
        self.description = description
        self.status = ""
        self._line = line
        self._line_seconds = line_seconds
        self._line_every = line_every
        self._line_at_end = line_at_end
        self._count = count
        self._transient = transient
        self._console = console
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._started: float | None = None
        self._first = 0.0
        self._last_line_time = float("-inf")
        self._last_line_completed: float | None = None
        self._live = False
        self.terminal = False
        """Whether the bar is drawn in place (a terminal); otherwise plain lines."""
        if enabled:
            from rich.console import Console

            if self._console is None:
                self._console = Console(stderr=True, highlight=False, soft_wrap=True)
            self.terminal = self._console.is_terminal

    @property
    def plain(self) -> bool:
        """Whether this display prints plain lines (enabled, and not on a terminal)."""
        return self.enabled and not self.terminal

    def _ensure_task(self, completed: float, total: float | None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn() if self._count else TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self._console,
            transient=self._transient,
            auto_refresh=self.terminal,
        )
        # The first update sets the starting point (e.g. a resumed run's iterations): not counted in rates.
        self._task = self._progress.add_task(self.description, total=total, completed=completed, status="")
        self._started, self._first = time.monotonic(), completed
        if self.terminal:
            self._progress.start()
            self._live = True

    def update(
        self,
        completed: float,
        total: float | None = None,
        *,
        description: str | None = None,
        status: str | None = None,
    ) -> None:
        """Show ``completed`` of ``total`` steps (``total`` ``None``: unknown, or as before)."""
        if not self.enabled:
            return
        with self._lock:
            if description is not None:
                self.description = description
            if status is not None:
                self.status = status
            if self._progress is None:
                self._ensure_task(completed, total)
            assert self._progress is not None and self._task is not None
            fields: dict[str, object] = {"completed": completed, "description": self.description}
            if total is not None:
                fields["total"] = total
            self._progress.update(self._task, status=self.status, **fields)
            if not self.terminal:
                self._maybe_line(completed)

    def state(self) -> ProgressState:
        """The numbers a line shows now (all zero before the first update, or when disabled)."""
        if self._progress is None or self._task is None:
            return ProgressState(self.description, 0.0, None, 0.0, None, self.status)
        task = self._progress.tasks[self._task]
        elapsed = time.monotonic() - (self._started or time.monotonic())
        rate = task.speed
        if rate is None and elapsed > 0 and task.completed > self._first:
            rate = (task.completed - self._first) / elapsed
        return ProgressState(self.description, task.completed, task.total, elapsed, rate, self.status)

    def _maybe_line(self, completed: float) -> None:
        if completed == self._last_line_completed:
            return
        s = self.state()
        now = time.monotonic()
        due = s.done and self._line_at_end
        if self._line_seconds is not None and now - self._last_line_time >= self._line_seconds:
            due = True
        if self._line_every and int(completed) % self._line_every == 0 and completed == int(completed):
            due = True
        if due and completed > self._first:
            self._last_line_time, self._last_line_completed = now, completed
            self.print(self._line(s))

    def print(self, text: str) -> None:
        """A line of text on stderr, above the bar on a terminal (nothing when disabled)."""
        if not self.enabled:
            return
        assert self._console is not None
        if self._live and self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            self._console.file.write(text + "\n")
            self._console.file.flush()
            self._last_line_time = time.monotonic()  # a note counts as a line for the cadence

    def close(self) -> None:
        """Stop drawing: the bar's last state stays on the terminal unless ``transient`` (idempotent)."""
        if self._live and self._progress is not None:
            self._progress.stop()
        self._live = False

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
