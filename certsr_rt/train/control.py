"""Run control of the training loop: when it stops, when it logs, and what it shows meanwhile.

* :class:`StopControl` — the time limit (``max_minutes``) and SIGINT/SIGTERM: the current iteration is
  finished, a checkpoint written, and the run stops (a second SIGINT aborts at once). All processes stop
  together.
* :class:`LossLog` — the losses summed over ``log_every`` iterations, averaged over the window and the
  processes, one JSON line per window in ``loss_log.jsonl`` (rank 0). Its partial window is saved in
  every checkpoint.
* :data:`ProgressFn` — the progress callback (the ``train`` command draws it with
  :class:`certsr_rt.cli.progress.ProgressDisplay`).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from certsr_rt.train.distributed import DistInfo, all_reduce_mean, any_true

__all__ = ["LOG_KEYS", "LOSS_LOG", "LossLog", "ProgressFn", "StopControl"]

LOG_KEYS = ("l_g", "l_pix", "l_percep", "l_gan", "l_d")
"""Losses recorded per iteration: generator total, its L1 / perceptual / GAN parts (weighted, averaged
over groups), and the discriminator loss (0 without a discriminator)."""

LOSS_LOG = "loss_log.jsonl"
"""The loss log's file name in the run's output folder."""

ProgressFn = Callable[[int, int, Mapping[str, float]], None]
"""``progress(done, total, losses)``: called on rank 0 once before the first iteration with the iterations
already done and no losses, then after every iteration with this process's losses of it (keys
:data:`LOG_KEYS`)."""


class StopControl:
    """Decides, after each iteration, whether the run stops early: the time limit or a signal.

    Args:
        max_minutes: wall-time limit of the run, from the construction of this object; ``None`` for none.
        log: where rank 0's messages go.
    """

    def __init__(self, max_minutes: float | None, log: Callable[[str], None]) -> None:
        self.max_minutes = max_minutes
        self.log = log
        self.started = time.monotonic()
        self.stop_signal: int | None = None
        """The number of the signal that asked the run to stop, if any."""

    def halt(self, now: float, dist: DistInfo, device: torch.device) -> bool:
        """True on every process if any of them was signalled or ran past the time limit."""
        timed_out = self.max_minutes is not None and (now - self.started) > self.max_minutes * 60
        return any_true(self.stop_signal is not None or timed_out, dist, device)

    @property
    def reason(self) -> str:
        """Why a halted run stopped: ``"signal"`` or ``"time limit"``."""
        return "signal" if self.stop_signal is not None else "time limit"

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM finish the current iteration, write a checkpoint and stop (a 2nd SIGINT aborts)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop_signal = signum
            what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted (Ctrl-C)"
            self.log(f"{what}: stopping after this iteration with a checkpoint")

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


class LossLog:
    """The loss log: one line per ``every`` iterations, averaged over them and over the processes.

    Args:
        path: the log file (rank 0 appends to it).
        every: iterations per line.
        dist: this process's place in the group (every process takes part in the average).
        device: where the average's all-reduce runs.
    """

    def __init__(self, path: Path, every: int, dist: DistInfo, device: torch.device) -> None:
        self.path = path
        self.every = every
        self.dist = dist
        self.device = device
        self.sums: dict[str, float] = dict.fromkeys(LOG_KEYS, 0.0)
        self.count = 0

    def add(self, losses: Mapping[str, float]) -> None:
        """Add one iteration's losses to the window."""
        for k in LOG_KEYS:
            self.sums[k] += losses[k]
        self.count += 1

    def due(self, iteration: int) -> bool:
        """Whether a line is written after ``iteration`` updates."""
        return iteration % self.every == 0

    def write(self, iteration: int, lr: float, elapsed_s: float) -> None:
        """Average the window over its iterations and the processes, append the line (rank 0), reset it."""
        values = torch.tensor([self.sums[k] for k in LOG_KEYS], dtype=torch.float64, device=self.device)
        values = all_reduce_mean(values, self.dist) / max(self.count, 1)
        if self.dist.is_main and self.count:
            record: dict[str, Any] = {"iteration": iteration, "lr": lr}
            record.update({k: float(v) for k, v in zip(LOG_KEYS, values.tolist(), strict=True)})
            record["elapsed_s"] = round(elapsed_s, 3)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        self.sums = dict.fromkeys(LOG_KEYS, 0.0)
        self.count = 0

    def state(self) -> dict[str, Any]:
        """The partial window, for a checkpoint."""
        return {"sums": dict(self.sums), "count": self.count}

    def load(self, state: Mapping[str, Any] | None) -> None:
        """Restore a window saved by :meth:`state` (``None``: an empty window)."""
        state = state or {}
        self.sums = {k: float(state.get("sums", {}).get(k, 0.0)) for k in LOG_KEYS}
        self.count = int(state.get("count", 0))
