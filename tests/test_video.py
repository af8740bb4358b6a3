"""Video files: PyAV reader/writer, the upscale_video_file pipeline and its CLI display, on tiny clips."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av", reason="the video extra (PyAV) is not installed")

from helpers import signal_after_first_line  # noqa: E402

from certsr_rt.cli.upscale_video import run_video  # noqa: E402
from certsr_rt.errors import InputError  # noqa: E402
from certsr_rt.io.video import VideoReader, VideoWriter, count_frames, probe_video  # noqa: E402
from certsr_rt.runtime.video import upscale_video_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TONE_HZ = 440.0


class NearestX4:
    """Stand-in for the Upscaler (same call contract): nearest-neighbour x4 of a uint8 RGB frame."""

    scale = 4

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.calls = 0
        self.keys: list[int] = []
        self.progress = None

    def __call__(self, image: np.ndarray, *, noise_key: int = 0) -> np.ndarray:
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError(f"upscaler failed at frame {self.fail_at}")
        self.calls += 1
        self.keys.append(noise_key)
        return np.repeat(np.repeat(image, 4, axis=0), 4, axis=1)


def clip_frame(i: int, h: int = 24, w: int = 32) -> np.ndarray:
    """Frame i of the synthetic clip: a moving bright bar over a two-colour background (smooth for codecs)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 60, 40)
    img[:, w // 2 :] = (30, 90, 180)
    x = (2 * i) % w
    img[:, x : x + 4] = 235
    return img


def make_clip(
    path: Path,
    *,
    frames: int = 16,
    fps: Fraction = Fraction(15),
    audio: str | None = "aac",
    video: str | None = "libx264",
    h: int = 24,
    w: int = 32,
) -> Path:
    """Write a tiny clip with PyAV: ``frames`` frames of :func:`clip_frame` and a 440 Hz mono tone."""
    rate = 48000 if audio == "libopus" else 22050
    with av.open(str(path), "w") as c:
        vs = None
        if video is not None:
            vs = c.add_stream(video, rate=fps)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        a = c.add_stream(audio, rate=rate) if audio else None
        if a is not None:
            a.layout = "mono"
        if vs is not None:
            for i in range(frames):
                c.mux(vs.encode(av.VideoFrame.from_ndarray(clip_frame(i, h, w), format="rgb24")))
            c.mux(vs.encode())
        if a is not None:
            t = np.arange(int(rate * frames / fps)) / rate
            tone = (0.3 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)[None]
            af = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
            af.sample_rate, af.pts = rate, 0
            c.mux(a.encode(af))
            c.mux(a.encode())
    return path


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    """All samples of the first audio stream, mixed to mono float; and the sample rate."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        rate = stream.codec_context.sample_rate
        mono = av.AudioResampler(format="fltp", layout="mono", rate=rate)
        chunks = [g.to_ndarray()[0] for f in c.decode(stream) for g in mono.resample(f)]
        chunks += [g.to_ndarray()[0] for g in mono.resample(None)]
    return np.concatenate(chunks), rate


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files of atomic writes in ``folder`` (``.NAME.<hex>.tmp``; earlier ``.partial-``)."""
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.name.startswith(".") and (p.name.endswith(".tmp") or ".partial-" in p.name)
    )


# ------------------------------------------------------------------------------------------ reading


def test_probe_describes_the_clip(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", fps=Fraction(30000, 1001))
    info = probe_video(clip)
    assert (info.width, info.height) == (32, 24)
    assert info.fps == Fraction(30000, 1001) and isinstance(info.fps, Fraction)
    assert info.frame_count == 16 and info.frame_count_exact
    assert info.video_codec == "h264"
    assert info.audio_codec == "aac" and info.audio_channels == 1 and info.audio_sample_rate == 22050


def test_reader_decodes_rgb_frames_close_to_the_source(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mkv", audio=None)
    with VideoReader(clip) as reader:
        frames = list(reader)
        assert reader.info.frame_count == 16 and not reader.info.frame_count_exact  # Matroska: estimated
        assert not reader.info.has_audio
    assert len(frames) == 16
    for i, f in enumerate(frames):
        assert f.shape == (24, 32, 3) and f.dtype == np.uint8
        assert np.abs(f.astype(int) - clip_frame(i)).mean() < 6  # lossy codec, chroma subsampling


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"this is not a video" * 50, "cannot read .*bad.mp4: expected a video file ffmpeg can open"),
    ],
)
def test_unreadable_inputs_give_one_line_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        VideoReader(path)
    assert "\n" not in str(info.value)


def test_audio_only_file_is_refused(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "tone.mp4", video=None)
    with pytest.raises(InputError, match="expected a video stream, found audio"):
        probe_video(clip)


def test_truncated_file_is_an_input_error(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mkv", frames=30, audio=None)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    # Either the header is readable and decoding stops early, or opening fails: never a crash or a hang.
    try:
        with VideoReader(cut) as reader:
            n = sum(1 for _ in reader)
        assert n < 30
    except InputError as exc:
        assert "cannot read" in str(exc)


# ------------------------------------------------------------------------------------------ writing


def test_writer_round_trip_keeps_count_size_fps_and_tags(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with VideoWriter(out, width=64, height=48, fps=Fraction(24000, 1001)) as writer:
        for i in range(10):
            writer.write(np.repeat(np.repeat(clip_frame(i), 2, 0), 2, 1))
        assert out.exists() is False  # only the hidden temporary file exists while writing
        assert len(leftovers(tmp_path)) == 1
    assert leftovers(tmp_path) == []
    info = probe_video(out)
    assert (info.width, info.height, info.fps, info.frame_count) == (64, 48, Fraction(24000, 1001), 10)
    assert count_frames(out) == 10
    with av.open(str(out)) as c:
        frame = next(c.decode(video=0))
        assert frame.colorspace == 1 and frame.color_range == 1  # BT.709, limited range
    with VideoReader(out) as reader:
        for i, f in enumerate(reader):
            assert np.abs(f.astype(int) - np.repeat(np.repeat(clip_frame(i), 2, 0), 2, 1)).mean() < 4


def test_writer_refuses_bad_frames_and_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"expected a video extension among .*got '\.gif'"):
        VideoWriter(tmp_path / "out.gif", width=64, height=48, fps=30)
    with pytest.raises(InputError, match="expected a positive even width and height, got 63x48"):
        VideoWriter(tmp_path / "out.mp4", width=63, height=48, fps=30)
    with VideoWriter(tmp_path / "out.mp4", width=64, height=48, fps=30) as writer:
        with pytest.raises(InputError, match=r"expected a 48 x 64 x 3 uint8 RGB frame, got shape \(48, 64\)"):
            writer.write(np.zeros((48, 64), np.uint8))
        writer.write(np.zeros((48, 64, 3), np.uint8))
    assert count_frames(tmp_path / "out.mp4") == 1


def test_writer_with_no_frames_leaves_nothing(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "out.mp4", width=64, height=48, fps=30)
    with pytest.raises(InputError, match="expected at least one frame, got none"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ the pipeline


@pytest.mark.parametrize(
    ("source", "audio", "target", "kept_audio"),
    [
        ("mp4", "aac", "mp4", "copied (aac)"),
        ("mp4", "aac", "mkv", "copied (aac)"),
        ("mp4", "aac", "mov", "copied (aac)"),
        ("mkv", "libopus", "webm", "copied (opus)"),
        ("mp4", "aac", "webm", "re-encoded (aac -> opus)"),
        ("mp4", "aac", "avi", "re-encoded (aac -> mp3)"),
        ("mov", "pcm_s16le", "mp4", "re-encoded (pcm_s16le -> aac)"),
    ],
)
def test_upscale_video_keeps_frames_fps_and_audio(
    tmp_path: Path, source: str, audio: str, target: str, kept_audio: str
) -> None:
    clip = make_clip(tmp_path / f"clip.{source}", audio=audio, fps=Fraction(25))
    out = tmp_path / f"clip_x4.{target}"
    up = NearestX4()
    result = upscale_video_file(clip, out, up)
    assert result.frames == 16 and result.audio == kept_audio
    info = probe_video(out)
    assert (info.width, info.height) == (128, 96)
    assert info.fps == Fraction(25)
    assert count_frames(out) == 16
    assert info.has_audio
    samples, rate = decode_audio(out)
    src_samples, src_rate = decode_audio(clip)
    # Same duration, up to codec priming: a copy into Matroska keeps the 1024 AAC priming samples that mp4's
    # edit list hides (46 ms at 22 kHz); a re-encode adds its codec's delay and padding (MP3: ~0.08 s).
    assert abs(len(samples) / rate - len(src_samples) / src_rate) < (0.06 if "copied" in kept_audio else 0.1)
    assert abs(dominant_frequency(samples, rate) - TONE_HZ) < 5
    assert up.keys == [0] * 16  # fixed noise by default
    assert leftovers(tmp_path) == []


def test_upscale_video_content_is_the_upscaled_frames(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", audio=None)
    out = tmp_path / "nested" / "dir" / "clip_x4.mp4"  # missing folders are created
    upscale_video_file(clip, out, NearestX4())
    assert not probe_video(out).has_audio
    with VideoReader(out) as reader:
        for i, f in enumerate(reader):
            want = np.repeat(np.repeat(clip_frame(i), 4, 0), 4, 1)
            assert np.abs(f.astype(int) - want).mean() < 6


def test_fresh_noise_passes_the_frame_index_as_key(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", audio=None, frames=6)
    up = NearestX4()
    upscale_video_file(clip, tmp_path / "out.mp4", up, fresh_noise=True)
    assert up.keys == [0, 1, 2, 3, 4, 5]


def test_progress_callback_sees_every_frame(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", audio=None, frames=5)
    seen: list[tuple[int, int | None]] = []
    upscale_video_file(clip, tmp_path / "out.mp4", NearestX4(), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_progress_line_shows_fps_and_eta(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_clip(tmp_path / "clip.mp4", audio=None, frames=5)
    run_video(clip, tmp_path / "out.mp4", NearestX4())
    err = capsys.readouterr().err
    assert "upscaling clip.mp4: 5/5 frames (100%)" in err
    assert " fps" in err and "ETA 0:00" in err
    assert "wrote " in err and "5 frames, 128x96 at 15 fps (libx264), audio none" in err


def test_error_mid_way_leaves_no_output_and_keeps_an_old_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=12)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError, match="failed at frame 5"):
        run_video(clip, out, NearestX4(fail_at=5))
    assert out.read_bytes() == b"previous result"
    assert leftovers(tmp_path) == []
    assert "stopped after 5 of 12 frames; the partial video was deleted" in capsys.readouterr().err


def test_the_runtime_pipeline_prints_nothing_and_notifies_a_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=8, audio=None)
    out = tmp_path / "out.mp4"
    notes: list[str] = []
    with pytest.raises(RuntimeError, match="failed at frame 3"):
        upscale_video_file(clip, out, NearestX4(fail_at=3), notify=notes.append)
    assert notes == [
        f"stopped after 3 of 8 frames; the partial video was deleted, nothing was written to {out}"
    ]
    upscale_video_file(clip, out, NearestX4())
    assert capsys.readouterr().err == ""
    assert count_frames(out) == 8


def test_keyboard_interrupt_mid_way_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=12)
    out = tmp_path / "out.mp4"

    def interrupt(done: int, total: int | None) -> None:
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_video(clip, out, NearestX4(), progress=interrupt)
    assert not out.exists()
    assert leftovers(tmp_path) == []
    assert "interrupted after 4 of 12 frames" in capsys.readouterr().err


def test_ctrl_c_in_a_real_process_leaves_no_output(tmp_path: Path) -> None:
    """SIGINT to a process in the middle of a video: no output file, no partial file, a clear message."""
    clip = make_clip(tmp_path / "clip.mp4", frames=200, audio="aac")
    out = tmp_path / "out.mp4"
    script = textwrap.dedent(
        f"""
        import sys, time
        import numpy as np
        from certsr_rt.cli.upscale_video import run_video

        class Slow:
            scale = 4
            def __call__(self, image, *, noise_key=0):
                time.sleep(0.1)  # 200 frames: a 20 s window for the signal on a loaded machine
                return np.repeat(np.repeat(image, 4, 0), 4, 1)

        def progress(done, total):
            if done == 3:
                print("started", flush=True)

        try:
            run_video({str(clip)!r}, {str(out)!r}, Slow(), progress=progress)
        except KeyboardInterrupt:
            sys.exit(130)
        sys.exit(0)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    code, line, err = signal_after_first_line([sys.executable, "-c", script], signal.SIGINT, env=env)
    assert line.strip() == "started", err
    assert code == 130, err
    assert "interrupted after" in err and "nothing was written to" in err
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_bad_outputs_are_refused_before_any_work(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", audio=None, frames=3)
    up = NearestX4()
    with pytest.raises(InputError, match=r"expected a video extension among .*got '\.png'"):
        upscale_video_file(clip, tmp_path / "out.png", up)
    with pytest.raises(InputError, match="must be a different file from the input"):
        upscale_video_file(clip, clip, up)
    with pytest.raises(InputError, match="no such file"):
        upscale_video_file(tmp_path / "missing.mp4", tmp_path / "out.mp4", up)
    assert up.calls == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_memory_stays_bounded_over_a_long_clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """300 frames through decode -> stream -> encode: frames in flight stay below the stream's bound."""
    from certsr_rt.runtime import stream as stream_module

    clip = make_clip(tmp_path / "long.mp4", frames=300, audio=None, h=16, w=16)
    made: list[stream_module.FrameStream] = []
    real = stream_module.upscale_stream

    def spy(*args: object, **kwargs: object) -> stream_module.FrameStream:
        made.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(stream_module, "upscale_stream", spy)
    upscale_video_file(clip, tmp_path / "long_x4.mp4", NearestX4(), queue_size=4)
    (s,) = made
    assert s.stats.frames_out == 300
    assert s.stats.max_frames_in_flight <= s.max_frames_in_flight == 11
    assert count_frames(tmp_path / "long_x4.mp4") == 300


def test_real_upscaler_in_the_pipeline(tmp_path: Path) -> None:
    """The lead's Upscaler (tiny model) through the pipeline: same frames as calling it directly."""
    from certsr_rt.runtime.stream import upscale_stream
    from certsr_rt.runtime.upscaler import Upscaler
    from certsr_rt.smoothing.config import SmoothingConfig

    up = Upscaler("tiny-srvgg", SmoothingConfig(sigma=0.05, samples=5, seed=3), device="cpu")
    frames = [clip_frame(i, 12, 16) for i in range(6)]
    direct = [up(f, noise_key=0) for f in frames]
    for batch in (1, 3):
        out = list(upscale_stream(up, frames, batch=batch, queue_size=2))
        for got, want in zip(out, direct, strict=True):
            assert got.shape == (48, 64, 3) and got.dtype == np.uint8
            np.testing.assert_array_equal(got, want)
    clip = make_clip(tmp_path / "clip.mp4", frames=4, h=12, w=16)
    result = upscale_video_file(clip, tmp_path / "out.mp4", up)
    assert result.frames == 4 and probe_video(tmp_path / "out.mp4").width == 64


@pytest.mark.gpu
def test_cuda_tensor_frames_stay_on_the_gpu() -> None:
    from certsr_rt.runtime.stream import upscale_stream
    from certsr_rt.runtime.upscaler import Upscaler
    from certsr_rt.smoothing.config import SmoothingConfig

    up = Upscaler("tiny-srvgg", SmoothingConfig(sigma=0.05, samples=5, seed=3), device="cuda")
    frames = [torch.rand(3, 12, 16, device="cuda") for _ in range(6)]
    direct = [up(f, noise_key=0) for f in frames]
    out = list(upscale_stream(up, iter(frames), batch=2))
    for got, want in zip(out, direct, strict=True):
        assert got.is_cuda and got.shape == (3, 48, 64)
        torch.testing.assert_close(got, want)
