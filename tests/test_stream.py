"""The frame stream: order, noise keys, batching, overlap, errors, cancellation and bounded memory."""

from __future__ import annotations

import gc
import itertools
import threading
import time
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from certsr_rt.errors import Cancelled, InputError
from certsr_rt.runtime.stream import upscale_stream
from certsr_rt.smoothing.noise import gaussian_field


class FakeUpscaler:
    """Nearest-neighbour x4 plus sigma * the real noise field of ``noise_key``: keys are visible in outputs.

    Same interface as the Upscaler: numpy H x W x 3 (uint8/uint16/float32) -> same kind, a list of them -> a
    list; torch N x C x H x W or C x H x W float -> float in [0, 1] on the input's device; ``cancel`` is
    checked before each chunk. Every frame of a batch gets the same noise (as in the Upscaler, whose noise
    field does not depend on the position in the batch).
    """

    scale = 4

    def __init__(self, sigma: float = 0.05, delay: float = 0.0, chunks: int = 1, fail_at: int | None = None):
        self.sigma = sigma
        self.delay = delay
        self.chunks = chunks
        self.fail_at = fail_at
        self.progress = None
        self.calls: list[tuple[int, int]] = []  # (frames in the call, noise_key)
        self.threads: set[str] = set()
        self.cancels: list[object] = []  # the cancel argument of each call

    def _smooth(self, x: torch.Tensor, noise_key: int) -> torch.Tensor:
        n, c, h, w = x.shape
        noise = gaussian_field((1, c, h, w), seed=0, key=noise_key, device=x.device)
        y = (x.float() + self.sigma * noise).clamp(0, 1)
        return y.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)

    def __call__(self, image, *, noise_key: int = 0, cancel=None):
        self.threads.add(threading.current_thread().name)
        self.cancels.append(cancel)
        for chunk in range(self.chunks):
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            if self.delay:
                time.sleep(self.delay / self.chunks)
            if self.progress is not None:
                self.progress(chunk + 1, self.chunks)
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError(f"upscaler failed on call {self.fail_at}")
        if isinstance(image, list):
            self.calls.append((len(image), noise_key))
            return [self._numpy(im, noise_key) for im in image]
        if isinstance(image, np.ndarray):
            self.calls.append((1, noise_key))
            return self._numpy(image, noise_key)
        squeeze = image.dim() == 3
        x = image[None] if squeeze else image
        self.calls.append((x.shape[0], noise_key))
        y = self._smooth(x, noise_key)
        return y[0] if squeeze else y

    def _numpy(self, image: np.ndarray, noise_key: int) -> np.ndarray:
        peak = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype, 1.0)
        x = torch.from_numpy(image.astype(np.float32) / np.float32(peak)).permute(2, 0, 1)[None]
        y = self._smooth(x, noise_key)[0].permute(1, 2, 0).numpy()
        if image.dtype == np.float32:
            return y
        return np.rint(y * peak).astype(image.dtype)


def frames_uint8(n: int, h: int = 24, w: int = 32, *, static: bool = False) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return [base.copy() if static else np.roll(base, i, axis=1) for i in range(n)]


def test_frames_come_back_in_order_upscaled_on_worker_threads() -> None:
    frames = frames_uint8(20)
    up = FakeUpscaler()
    reference = [FakeUpscaler()(f, noise_key=0) for f in frames]
    with upscale_stream(up, frames, queue_size=2) as stream:
        out = list(stream)
    assert len(out) == 20
    for got, want in zip(out, reference, strict=True):
        assert got.shape == (96, 128, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)
    assert up.threads == {"certsr-compute"}
    assert stream.stats.frames_in == stream.stats.frames_out == 20
    assert not stream.running


def test_fixed_noise_is_the_same_field_for_every_frame() -> None:
    frames = frames_uint8(6, static=True)
    up = FakeUpscaler()
    out = list(upscale_stream(up, frames, noise_key=7))
    assert {key for _, key in up.calls} == {7}
    for o in out[1:]:
        np.testing.assert_array_equal(o, out[0])  # static input -> bit-identical output, no flicker


def test_fresh_noise_gives_each_frame_its_own_key() -> None:
    frames = frames_uint8(6, static=True)
    up = FakeUpscaler()
    out = list(upscale_stream(up, frames, fresh_noise=True, noise_key=100, batch=4))
    assert [key for _, key in up.calls] == [100, 101, 102, 103, 104, 105]
    assert all(n == 1 for n, _ in up.calls)  # fresh noise never groups frames: each needs its own field
    assert all(not np.array_equal(out[i], out[i + 1]) for i in range(5))


def test_batching_groups_waiting_frames_and_matches_single_frames() -> None:
    frames = frames_uint8(13)
    single = list(upscale_stream(FakeUpscaler(), frames))
    up = FakeUpscaler(delay=0.05)  # slower than the feeder: frames wait in the queue and get grouped
    out = list(upscale_stream(up, frames, batch=4, queue_size=8))
    assert sum(n for n, _ in up.calls) == 13
    assert max(n for n, _ in up.calls) == 4
    assert len(up.calls) < 13
    for got, want in zip(out, single, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_batching_keeps_numpy_dtypes(dtype: type) -> None:
    rng = np.random.default_rng(1)
    if dtype == np.uint16:
        frames = [rng.integers(0, 65536, (8, 10, 3), dtype=np.uint16) for _ in range(6)]
    else:
        frames = [rng.random((8, 10, 3), dtype=np.float32) for _ in range(6)]
    single = list(upscale_stream(FakeUpscaler(), frames))
    out = list(upscale_stream(FakeUpscaler(delay=0.02), frames, batch=3, queue_size=6))
    for got, want in zip(out, single, strict=True):
        assert got.dtype == dtype and got.shape == (32, 40, 3)
        np.testing.assert_array_equal(got, want)


def test_torch_frames_keep_their_layout_and_are_batched() -> None:
    gen = torch.Generator().manual_seed(0)
    chw = [torch.rand(3, 6, 8, generator=gen) for _ in range(5)]
    nchw = [torch.rand(2, 3, 6, 8, generator=gen) for _ in range(3)]
    up = FakeUpscaler(delay=0.03)
    out = list(upscale_stream(up, chw + nchw, batch=8, queue_size=8))
    assert [tuple(o.shape) for o in out] == [(3, 24, 32)] * 5 + [(2, 3, 24, 32)] * 3
    ref = FakeUpscaler()
    for got, frame in zip(out, chw + nchw, strict=True):
        torch.testing.assert_close(got, ref(frame, noise_key=0), rtol=0, atol=0)
    # 3-D and 4-D frames are never mixed in one call; frames arriving together are grouped.
    assert sum(n for n, _ in up.calls) == 5 + 6
    assert len(up.calls) < 8


def test_decode_compute_and_encode_overlap() -> None:
    n, step = 24, 0.03

    def decode() -> Iterator[np.ndarray]:
        for f in frames_uint8(n):
            time.sleep(step)
            yield f

    up = FakeUpscaler(delay=step)
    start = time.perf_counter()
    for _ in upscale_stream(up, decode(), queue_size=4):
        time.sleep(step)  # "encode"
    elapsed = time.perf_counter() - start
    serial = 3 * n * step
    assert elapsed < 0.65 * serial, f"no overlap: {elapsed:.2f} s vs {serial:.2f} s serial"


def test_error_in_the_input_is_raised_after_the_frames_before_it() -> None:
    def broken() -> Iterator[np.ndarray]:
        yield from frames_uint8(5)
        raise InputError("cannot read clip.mp4: decoding failed after 5 frames")

    stream = upscale_stream(FakeUpscaler(), broken())
    got = []
    with pytest.raises(InputError, match="after 5 frames"):
        for frame in stream:
            got.append(frame)
    assert len(got) == 5
    assert not stream.running


def test_error_in_the_upscaler_propagates_and_threads_are_joined() -> None:
    stream = upscale_stream(FakeUpscaler(fail_at=3), frames_uint8(10))
    got = []
    with pytest.raises(RuntimeError, match="failed on call 3"):
        for frame in stream:
            got.append(frame)
    assert len(got) == 3
    assert not stream.running


def test_break_from_an_endless_input_stops_and_joins() -> None:
    pulled = itertools.count()

    def endless() -> Iterator[np.ndarray]:
        frame = frames_uint8(1)[0]
        while True:
            next(pulled)
            yield frame

    with upscale_stream(FakeUpscaler(), endless(), queue_size=3) as stream:
        for i, _ in enumerate(stream):
            if i == 4:
                break
    assert not stream.running
    assert next(pulled) <= 5 + stream.max_frames_in_flight + 1


def test_close_abandons_a_long_upscale_at_its_next_chunk() -> None:
    up = FakeUpscaler(delay=4.0, chunks=80)  # one call = 4 s in 50 ms chunks
    original_hook = up.progress
    stream = upscale_stream(up, frames_uint8(3))
    stream._start()
    time.sleep(0.2)
    start = time.perf_counter()
    stream.close()
    assert time.perf_counter() - start < 1.0
    assert not stream.running
    assert up.progress is original_hook  # the stream never swaps the upscaler's attributes
    assert all(callable(c) for c in up.cancels)  # it cancels through the call's own argument


def test_close_with_timeout_reports_an_upscale_that_cannot_be_abandoned() -> None:
    def stubborn(image: np.ndarray, *, noise_key: int = 0) -> np.ndarray:  # no progress hook to cancel at
        time.sleep(0.6)
        return np.repeat(np.repeat(image, 4, 0), 4, 1)

    stream = upscale_stream(stubborn, frames_uint8(3))
    stream._start()
    time.sleep(0.1)
    assert stream.close(timeout=0.05) is False and stream.running
    assert stream.close() is True and not stream.running


def test_a_dropped_stream_stops_its_threads() -> None:
    stream = upscale_stream(FakeUpscaler(), itertools.repeat(frames_uint8(1)[0]))
    next(stream)
    threads = list(stream._threads)
    del stream
    gc.collect()
    for t in threads:
        t.join(timeout=2)
        assert not t.is_alive()


def test_memory_is_bounded_over_many_frames() -> None:
    """300 frames with queue_size 4: in-flight frames and peak memory do not grow with the frame count."""
    in_flight: list[int] = []
    consumed = 0

    def counted(n: int) -> Iterator[np.ndarray]:
        frame = frames_uint8(1)[0]
        for i in range(n):
            in_flight.append(i - consumed)  # frames pulled and not yet consumed, as seen by the producer
            yield frame.copy()

    def run(n: int) -> tuple[int, int]:
        nonlocal consumed
        consumed = 0
        in_flight.clear()
        tracemalloc.start()
        stream = upscale_stream(FakeUpscaler(), counted(n), queue_size=4)
        for _ in stream:
            consumed += 1
            time.sleep(0.001)  # a consumer slower than the producer: an unbounded queue would fill up
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert consumed == n
        assert stream.stats.max_input_queue <= 4 and stream.stats.max_output_queue <= 4
        assert stream.stats.max_frames_in_flight <= stream.max_frames_in_flight == 2 * 4 + 1 + 2
        assert max(in_flight) <= stream.max_frames_in_flight + 1
        return peak, max(in_flight)

    run(20)  # warm-up: first-call allocations of torch and numpy are not the stream's
    peak_short, _ = run(40)
    peak_long, _ = run(300)
    out_frame = 96 * 128 * 3
    # 260 more frames would add ~9.4 MB of outputs if they accumulated. The short run need not have filled
    # every queue when its peak was taken, so the allowance is the stream's own bound on frames in flight
    # (11 frames, ~0.4 MB: CI once measured 4.4 frames of difference), still 20x below accumulation.
    allowance = (2 * 4 + 1 + 2) * out_frame
    assert 260 * out_frame > 20 * allowance
    assert peak_long < peak_short + allowance, (peak_short, peak_long)


def test_invalid_options_are_refused() -> None:
    with pytest.raises(InputError, match="batch must be >= 1, got 0"):
        upscale_stream(FakeUpscaler(), [], batch=0)
    with pytest.raises(InputError, match="queue_size must be >= 1, got 0"):
        upscale_stream(FakeUpscaler(), [], queue_size=0)


def test_empty_input_gives_empty_output() -> None:
    stream = upscale_stream(FakeUpscaler(), [])
    assert list(stream) == []
    assert not stream.running


def test_batch_puts_several_frames_into_each_backend_call_of_the_upscaler() -> None:
    """The real Upscaler: frames grouped by the stream share backend calls, with single-frame results."""
    from certsr_rt.models import load_model
    from certsr_rt.runtime.backends.torch_backend import TorchBackend
    from certsr_rt.runtime.upscaler import Upscaler
    from certsr_rt.smoothing.config import SmoothingConfig

    class Counting(TorchBackend):
        batches: list[int] = []

        def _infer_impl(self, x: torch.Tensor) -> torch.Tensor:
            self.batches.append(x.shape[0])
            time.sleep(0.02)  # slower than the feeder: frames wait and are grouped
            return super()._infer_impl(x)

    model = load_model("tiny-srvgg")
    backend = Counting(model, "cpu", "fp32")
    up = Upscaler(model, SmoothingConfig(0.05, 5, 3, chunk_size=20), device="cpu", backend=backend, tile=0)
    frames = frames_uint8(9, 12, 16)
    direct = [up(f) for f in frames]
    backend.batches.clear()
    with upscale_stream(up, frames, batch=4, queue_size=8) as stream:
        out = list(stream)
    for got, want in zip(out, direct, strict=True):
        np.testing.assert_array_equal(got, want)
    assert stream.stats.upscaler_calls < 9
    assert max(backend.batches) > 5  # more than one frame's 5 noisy copies in one backend call
