"""Upscale a stream of video frames with decoding, computing and encoding overlapped.

:func:`upscale_stream` takes any iterable of frames and an :class:`~certsr_rt.runtime.upscaler.Upscaler`
(or anything called as ``upscaler(frame, noise_key=k)``, see :class:`UpscalerLike`) and returns a
:class:`FrameStream`, an iterator of upscaled frames in input order::

    with upscale_stream(upscaler, reader, queue_size=4) as stream:
        for big in stream:          # the caller's thread encodes while the next frames are computed
            writer.write(big)

Three threads work at once, joined by two bounded queues:

* a **feeder** thread pulls frames from the iterable (for a :class:`~certsr_rt.io.video.VideoReader` this
  is where decoding happens) into the input queue;
* a **compute** thread takes frames from the input queue, calls the upscaler, and puts results into the
  output queue;
* the **caller's** thread takes results as it iterates (and encodes them, in the video pipeline).

Memory is bounded whatever the length of the video: at most :attr:`FrameStream.max_frames_in_flight`
(``2 * queue_size + batch + 2``) frames have been taken from the iterable and not yet handed to the caller,
because a full queue blocks the thread that feeds it. :attr:`FrameStream.stats` records the high-water mark.

**Noise.** By default every frame is upscaled with the same noise field (``noise_key`` for all frames), so
regions that do not change between frames stay bit-identical and do not flicker. ``fresh_noise=True``
gives frame ``i`` the field ``noise_key + i``: statistically independent noise per frame.

**Batching.** With the shared noise field, up to ``batch`` consecutive frames of the same shape and kind
that are already waiting are grouped into one call of the upscaler: numpy frames as a list, tensors
concatenated into one ``N x C x H x W`` batch. The Upscaler puts the noisy copies of several frames into
each backend call (``N x k`` forwards, within its memory budget and the backend's ``max_batch``), and each
frame's result is the one it gets alone. Frames are never held back to fill a batch. This pays when the
backend gains from larger batches (GPU, few samples); on a CPU, where each frame at 21 samples already is
a batch of 21 forwards, it does not (``benchmarks/results/stream_batch.md``), so the default is 1.

**Devices.** Frames may be numpy arrays or torch tensors on any device (``C x H x W`` or ``N x C x H x W``
float in [0, 1]); results come back in the same kind, on the same device. CUDA tensors are handed between
threads with CUDA events, so the compute thread waits for the producer's stream and the caller's current
stream waits for the result, without blocking the host.

**Errors and cancellation.** An exception in the iterable or in the upscaler is re-raised in the caller's
thread, in order, after the frames that were completed before it. Leaving the ``with`` block or calling
:meth:`FrameStream.close` (including through ``KeyboardInterrupt`` or ``break``) stops both threads and
joins them; an upscale in progress is abandoned at its next backend call when the upscaler takes a
``cancel`` argument (the :class:`~certsr_rt.runtime.upscaler.Upscaler` does: it raises
:class:`~certsr_rt.errors.Cancelled`), else finished first.
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from certsr_rt.errors import Cancelled, InputError
from certsr_rt.runtime.layout import numpy_layout

__all__ = ["FrameStream", "StreamStats", "UpscalerLike", "upscale_stream"]

Frame = TypeVar("Frame", np.ndarray, torch.Tensor)

_POLL_SECONDS = 0.05
_END = object()


class UpscalerLike(Protocol):
    """What the stream needs from an upscaler: a call with a noise key (the Upscaler's contract).

    With ``batch > 1`` several numpy frames come as a list (return a list) and tensors as one
    ``N x C x H x W`` batch. An upscaler whose call also takes ``cancel`` (a callable, True: stop) is
    given one, so that closing the stream abandons an upscale in progress.
    """

    def __call__(self, image: Any, *, noise_key: int = 0) -> Any:
        """Upscale one numpy image, a list of them, or one tensor batch with the noise field ``noise_key``."""
        ...


@dataclass
class StreamStats:
    """Counters of a :class:`FrameStream`, updated while it runs.

    Attributes:
        frames_in: frames taken from the input iterable.
        frames_out: frames handed to the caller.
        upscaler_calls: calls of the upscaler (fewer than frames when frames were batched).
        max_frames_in_flight: most frames taken from the input and not yet handed out, at any time.
        max_input_queue: highest occupancy seen of the input queue.
        max_output_queue: highest occupancy seen of the output queue.
        compute_seconds: wall time spent inside the upscaler.
    """

    frames_in: int = 0
    frames_out: int = 0
    upscaler_calls: int = 0
    max_frames_in_flight: int = 0
    max_input_queue: int = 0
    max_output_queue: int = 0
    compute_seconds: float = 0.0


class _Failure:
    """An exception raised on a worker thread, travelling to the caller's thread through a queue."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Pipeline:
    """State shared by the threads.

    It deliberately holds no reference to the FrameStream, so that dropping the stream object lets its
    finalizer stop the threads.
    """

    def __init__(self, queue_size: int) -> None:
        self.stop = threading.Event()
        self.inputs: queue.Queue[Any] = queue.Queue(queue_size)
        self.outputs: queue.Queue[Any] = queue.Queue(queue_size)
        self.stats = StreamStats()

    def put(self, q: queue.Queue[Any], item: Any) -> bool:
        """Block until ``item`` is queued (True) or the stream is stopping (False)."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL_SECONDS)
            except queue.Full:
                continue
            return True
        return False

    def get(self, q: queue.Queue[Any]) -> Any:
        """Block until an item arrives, or return ``_END`` once the stream is stopping."""
        while True:
            try:
                return q.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if self.stop.is_set():
                    return _END

    def drain(self) -> None:
        for q in (self.inputs, self.outputs):
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break


def _ready_event(x: Any) -> Any:
    """A CUDA event recorded on the current stream after ``x`` was produced, or None off CUDA."""
    if isinstance(x, torch.Tensor) and x.is_cuda:
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(x.device))
        return event
    return None


def _wait_ready(x: Any, event: Any) -> None:
    if event is not None:
        event.wait(torch.cuda.current_stream(x.device))


def _feed(pipe: _Pipeline, frames: Iterable[Any]) -> None:
    """Feeder thread: pull frames (decode) into the input queue."""
    stats = pipe.stats
    try:
        for index, frame in enumerate(frames):
            if not pipe.put(pipe.inputs, (index, frame, _ready_event(frame))):
                return
            stats.frames_in = index + 1
            stats.max_input_queue = max(stats.max_input_queue, pipe.inputs.qsize())
            stats.max_frames_in_flight = max(stats.max_frames_in_flight, stats.frames_in - stats.frames_out)
            if pipe.stop.is_set():
                return
        pipe.put(pipe.inputs, _END)
    except BaseException as exc:  # noqa: BLE001 - every error goes to the caller's thread
        pipe.put(pipe.inputs, _Failure(exc))


def _batch_key(frame: Any) -> tuple[Any, ...] | None:
    """Frames with equal keys can share one upscaler call; None: this frame is always upscaled alone."""
    if isinstance(frame, np.ndarray):
        try:
            numpy_layout(frame)  # an image the Upscaler refuses is upscaled alone: its error comes in order
        except InputError:
            return None
        return ("numpy", frame.shape, frame.dtype)
    if isinstance(frame, torch.Tensor) and frame.dim() in (3, 4) and frame.is_floating_point():
        return ("torch", frame.dim(), tuple(frame.shape[-3:]), frame.dtype, frame.device)
    return None


def _takes_cancel(upscaler: Any) -> bool:
    """Whether the upscaler's call accepts ``cancel=`` (by name or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(upscaler).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "cancel" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _upscale_group(upscaler: UpscalerLike, frames: list[Any], noise_key: int, **kw: Any) -> list[Any]:
    """One upscaler call for several frames that share a noise field; results in the frames' kind."""
    if isinstance(frames[0], np.ndarray):
        out = list(upscaler(frames, noise_key=noise_key, **kw))
        if len(out) != len(frames):
            raise InputError(f"Expected the upscaler to return {len(frames)} frames, but got {len(out)}")
        return out
    sizes = [1 if f.dim() == 3 else f.shape[0] for f in frames]
    x = torch.cat([f[None] if f.dim() == 3 else f for f in frames])
    y = upscaler(x, noise_key=noise_key, **kw)
    if y.shape[0] != x.shape[0]:
        raise InputError(f"Expected the upscaler to return {x.shape[0]} frames, but got {y.shape[0]}")
    parts = torch.split(y, sizes)
    return [p[0] if f.dim() == 3 else p for p, f in zip(parts, frames, strict=True)]


def _compute(pipe: _Pipeline, upscaler: UpscalerLike, batch: int, fresh_noise: bool, noise_key: int) -> None:
    """Compute thread: take frames, upscale them (grouping when allowed), queue the results."""
    stats = pipe.stats
    # Closing the stream sets pipe.stop: an upscaler that takes cancel= stops at its next backend call.
    kw: dict[str, Any] = {"cancel": pipe.stop.is_set} if _takes_cancel(upscaler) else {}
    pending: Any = None
    try:
        while True:
            item = pending if pending is not None else pipe.get(pipe.inputs)
            pending = None
            if item is _END or isinstance(item, _Failure):
                pipe.put(pipe.outputs, item)
                return
            group = [item]
            key = _batch_key(item[1])
            if batch > 1 and not fresh_noise and key is not None:
                while len(group) < batch:
                    try:
                        nxt = pipe.inputs.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _END or isinstance(nxt, _Failure) or _batch_key(nxt[1]) != key:
                        pending = nxt
                        break
                    group.append(nxt)
            for _, frame, event in group:
                _wait_ready(frame, event)
            start = time.perf_counter()
            if len(group) == 1:
                index, frame, _ = item
                outs = [upscaler(frame, noise_key=noise_key + index if fresh_noise else noise_key, **kw)]
            else:
                outs = _upscale_group(upscaler, [g[1] for g in group], noise_key, **kw)
            stats.compute_seconds += time.perf_counter() - start
            stats.upscaler_calls += 1
            for (index, _, _), out in zip(group, outs, strict=True):
                if not pipe.put(pipe.outputs, (index, out, _ready_event(out))):
                    return
                stats.max_output_queue = max(stats.max_output_queue, pipe.outputs.qsize())
    except BaseException as exc:  # noqa: BLE001 - every error goes to the caller's thread
        if isinstance(exc, Cancelled) and pipe.stop.is_set():
            return  # the stream was closed: nobody waits for this frame
        if not pipe.stop.is_set():
            pipe.put(pipe.outputs, _Failure(exc))


class FrameStream(Iterator[Any]):
    """Iterator of upscaled frames, in input order; made by :func:`upscale_stream` (see the module doc).

    The worker threads start at the first ``next()`` (or on entering the ``with`` block) and are joined by
    :meth:`close`, which runs when iteration ends, when an error is raised to the caller, when the ``with``
    block is left, or when the stream is garbage-collected.

    Attributes:
        stats: live :class:`StreamStats`.
        max_frames_in_flight: the bound ``2 * queue_size + batch + 2`` on frames taken from the input and
            not yet handed out.
    """

    def __init__(
        self,
        upscaler: UpscalerLike,
        frames: Iterable[Any],
        *,
        batch: int = 1,
        queue_size: int = 4,
        fresh_noise: bool = False,
        noise_key: int = 0,
    ) -> None:
        if batch < 1:
            raise InputError(f"batch must be >= 1, got {batch}")
        if queue_size < 1:
            raise InputError(f"queue_size must be >= 1, got {queue_size}")
        if not 0 <= noise_key < 2**32:
            raise InputError(f"noise_key must be in [0, 2**32), got {noise_key}")
        self._pipe = _Pipeline(queue_size)
        self.stats = self._pipe.stats
        self.max_frames_in_flight = 2 * queue_size + batch + 2
        self._threads = [
            threading.Thread(target=_feed, args=(self._pipe, frames), name="certsr-feed", daemon=True),
            threading.Thread(
                target=_compute,
                args=(self._pipe, upscaler, batch, fresh_noise, noise_key),
                name="certsr-compute",
                daemon=True,
            ),
        ]
        self._started = False
        self._closed = False

    def _start(self) -> None:
        if not self._started:
            self._started = True
            for t in self._threads:
                t.start()

    def __iter__(self) -> FrameStream:
        return self

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        self._start()
        item = self._pipe.get(self._pipe.outputs)
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        index, frame, event = item
        _wait_ready(frame, event)
        self.stats.frames_out = index + 1
        return frame

    def close(self, timeout: float | None = None) -> bool:
        """Stop the worker threads and join them; pending frames are dropped. Safe to call again.

        Args:
            timeout: seconds to wait for the threads; ``None`` waits until they have stopped (an upscale in
                progress stops at its next chunk of samples). Call again to keep waiting.

        Returns:
            True when both threads have stopped (always, with ``timeout=None``).
        """
        self._closed = True
        self._pipe.stop.set()
        self._pipe.drain()
        if self._started:
            deadline = None if timeout is None else time.monotonic() + timeout
            for t in self._threads:
                t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if self.running:
                return False
        self._pipe.drain()
        return True

    @property
    def running(self) -> bool:
        """Whether a worker thread is still alive."""
        return any(t.is_alive() for t in self._threads)

    def __enter__(self) -> FrameStream:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Best effort for a stream dropped without close(): stop the threads (the pipe holds no reference
        # back to this object, so this runs as soon as the caller lets go of it).
        if not getattr(self, "_closed", True):
            self.close()


def upscale_stream(
    upscaler: UpscalerLike,
    frames: Iterable[Frame],
    *,
    batch: int = 1,
    queue_size: int = 4,
    fresh_noise: bool = False,
    noise_key: int = 0,
) -> FrameStream:
    """Upscale frames from an iterable on worker threads; iterate the result to get them back in order.

    Args:
        upscaler: an :class:`~certsr_rt.runtime.upscaler.Upscaler` (or any callable with its
            ``upscaler(frame, noise_key=k)`` contract, :class:`UpscalerLike`). It is called from one worker
            thread only.
        frames: numpy images (``H x W x 3`` uint8 RGB for video; any layout the Upscaler accepts) or torch
            tensors (``C x H x W`` or ``N x C x H x W`` float in [0, 1], any device). Iterated on the
            feeder thread, so a decoder behind it runs in parallel with the upscaler.
        batch: most frames grouped into one upscaler call when they share a noise field (see module doc).
        queue_size: capacity of each of the two queues, in frames.
        fresh_noise: ``False`` (default): one noise field for all frames, no flicker in static regions.
            ``True``: frame ``i`` gets the field ``noise_key + i``.
        noise_key: the shared field, or the key of frame 0 with fresh noise.

    Returns:
        A :class:`FrameStream`: iterate it (ideally in a ``with`` block) to get the upscaled frames.

    Raises:
        InputError: batch or queue_size below 1, or noise_key out of range. Errors of the frames or of the
            upscaler are raised while iterating.
    """
    return FrameStream(
        upscaler, frames, batch=batch, queue_size=queue_size, fresh_noise=fresh_noise, noise_key=noise_key
    )
