"""Video throughput: frames per second per bundled model and sample count, through the frame stream.

For each (model, n) an Upscaler is built (n = 1: sigma 0, the plain model; n > 1: sigma 0.03), warmed up on
a small frame, and fed synthetic frames of the given size through ``upscale_stream`` (feeder + compute
threads, fixed noise). Frames are timed until ``--frames`` are done or ``--budget-s`` is spent.

When not even one frame finishes within the budget (RRDBNet with n = 21 on a small CPU takes many
minutes per frame), the frame is **extrapolated**: the Upscaler reports each finished chunk of samples of
each tile through its ``progress(done, total)`` hook; the time of the chunks done so far, divided by
``done`` and multiplied by ``total``, estimates the whole frame. Those rows are marked "extrapolated".

With ``--file-frames K`` the end-to-end file pipeline (decode -> upscale -> encode with libx264, audio
copied) is also timed for the compact model at n = 1 on a K-frame synthetic clip.

Usage:
    python benchmarks/bench_video.py --size 320x180 --samples 1,21 --frames 3 --budget-s 150 \
        --file-frames 12 --out benchmarks/results/video_cpu.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

MODELS = ["realesrgan-x4plus", "realesr-animevideov3-x4"]


class _OverBudget(Exception):
    pass


def synthetic_frame(h: int, w: int, i: int):
    """A smooth synthetic RGB frame (content does not change the cost; it keeps the codec honest)."""
    import numpy as np

    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 0.5 + 0.4 * np.sin((x + 2 * i) / 9.0) * np.cos(y / 13.0)
    g = 0.5 + 0.4 * np.sin((x + y + 3 * i) / 17.0)
    b = 0.5 + 0.4 * np.cos((x - y) / 11.0)
    return (np.stack([r, g, b], axis=2) * 255).round().astype(np.uint8)


def measure(model: str, n: int, h: int, w: int, frames: int, budget: float, device: str) -> dict:
    import torch

    from certsr_rt import SmoothingConfig, Upscaler
    from certsr_rt.runtime.stream import upscale_stream

    sigma = 0.0 if n == 1 else 0.03
    up = Upscaler(model, SmoothingConfig(sigma=sigma, samples=n), device=device)
    up(synthetic_frame(36, 64, 0))  # warm-up (allocator, kernels), not timed
    if up.device.type == "cuda":
        torch.cuda.synchronize()

    units: list[tuple[float, int, int]] = []
    t0 = time.perf_counter()

    def hook(done: int, total: int) -> None:
        now = time.perf_counter()
        units.append((now, done, total))
        # Stop inside the first frame only once two chunks are done, so one chunk's start-up does not
        # dominate the extrapolation.
        if now - t0 > budget and not done_times and done >= 2:
            raise _OverBudget

    def timed(frame: object, *, noise_key: int = 0) -> object:
        return up(frame, noise_key=noise_key, progress=hook)  # type: ignore[call-overload]

    done_times: list[float] = []
    row = {"model": model, "n": n, "sigma": sigma, "device": str(up.device)}
    row["work_units"] = up.work_units(h, w)
    source = (synthetic_frame(h, w, i) for i in range(frames))
    try:
        with upscale_stream(timed, source, queue_size=2) as stream:
            for _ in stream:
                done_times.append(time.perf_counter())
                if done_times[-1] - t0 > budget:
                    break
    except _OverBudget:
        pass
    if done_times:
        row.update(frames=len(done_times), seconds=done_times[-1] - t0, extrapolated=False)
        row["fps"] = len(done_times) / row["seconds"]
    else:
        # Chunks of the first frame: (time since start of the frame) / units done * units per frame.
        t_last, done, total = units[-1]
        frame_s = (t_last - t0) / done * total
        row.update(frames=0, seconds=t_last - t0, extrapolated=True, units_done=done, units_total=total)
        row["fps"] = 1.0 / frame_s
    row["seconds_per_frame"] = 1.0 / row["fps"]
    up.close()
    return row


def measure_file(model: str, h: int, w: int, frames: int, device: str, rounds: int) -> dict:
    import av
    import numpy as np

    from certsr_rt import SmoothingConfig, Upscaler
    from certsr_rt.runtime.video import upscale_video_file

    up = Upscaler(model, SmoothingConfig(sigma=0.0, samples=1), device=device)
    up(synthetic_frame(36, 64, 0))
    with tempfile.TemporaryDirectory() as d:
        clip = Path(d) / "clip.mp4"
        with av.open(str(clip), "w") as c:
            vs = c.add_stream("libx264", rate=Fraction(30))
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            a = c.add_stream("aac", rate=48000)
            for i in range(frames):
                c.mux(vs.encode(av.VideoFrame.from_ndarray(synthetic_frame(h, w, i), format="rgb24")))
            c.mux(vs.encode())
            t_audio = np.arange(48000 * frames // 30) / 48000
            tone = (0.2 * np.sin(2 * np.pi * 440 * t_audio)).astype(np.float32)
            af = av.AudioFrame.from_ndarray(tone[None], format="flt", layout="mono")
            af.sample_rate, af.pts = 48000, 0
            c.mux(a.encode(af))
            c.mux(a.encode())
        # For comparison, the same frames from memory through the same stream, with no decode and no
        # encode (both sides run the upscaler on the stream's compute thread: torch's CPU speed differs
        # between the main thread and a worker thread on an oversubscribed machine, so a main-thread loop
        # is not a fair baseline). Rounds alternate so that load from other jobs hits both sides alike.
        from certsr_rt.runtime.stream import upscale_stream

        in_memory = [synthetic_frame(h, w, i) for i in range(frames)]
        bare, piped = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in upscale_stream(up, in_memory):
                pass
            bare.append(frames / (time.perf_counter() - t))
            result = upscale_video_file(clip, Path(d) / "out.mp4", up)
            piped.append(result.frames_per_second)
    up.close()
    return {
        "model": model,
        "frames": result.frames,
        "rounds": rounds,
        "pipeline_fps": statistics.median(piped),
        "bare_fps": statistics.median(bare),
        "pipeline_all": piped,
        "bare_all": bare,
        "audio": result.audio,
        "codec": result.codec,
    }


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op threads), {gpu}, Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="320x180", help="input WIDTHxHEIGHT")
    parser.add_argument("--samples", default="1,21")
    parser.add_argument("--models", default=",".join(MODELS), help="empty: file pipeline only")
    parser.add_argument("--frames", type=int, default=3, help="frames to time per configuration")
    parser.add_argument("--budget-s", type=float, default=150.0, help="time limit per configuration")
    parser.add_argument("--file-frames", type=int, default=0, help="time the file pipeline too")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the file comparison")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    for model in filter(None, args.models.split(",")):
        for n in (int(s) for s in args.samples.split(",")):
            row = measure(model, n, h, w, args.frames, args.budget_s, args.device)
            rows.append(row)
            print(row, flush=True)
    file_row = None
    if args.file_frames:
        file_row = measure_file("realesr-animevideov3-x4", h, w, args.file_frames, args.device, args.rounds)
        print(file_row, flush=True)
    load_after = os.getloadavg()

    lines = [
        f"# Video throughput, {w}x{h} input -> {4 * w}x{4 * h} output ({args.device})",
        "",
        f"- command: `python {shlex.join(sys.argv)}`",
        f"- machine: {machine()}",
        f"- date: {started:%Y-%m-%d %H:%M} UTC",
        "- load average (1/5/15 min) before: "
        + " / ".join(f"{v:.1f}" for v in load_before)
        + ", after: "
        + " / ".join(f"{v:.1f}" for v in load_after)
        + " "
        "(the machine was shared with other jobs: treat these as lower bounds on throughput)",
    ]
    if rows:
        lines += [
            "- frames go through `upscale_stream` (feeder + compute threads), fixed noise, default tile 192 "
            f"(a {w}x{h} frame is {rows[0]['work_units']} tile(s) at n = 1); n = 1 is the plain model "
            "(sigma 0), n > 1 uses sigma 0.03",
            "",
            "| model | n | frames timed | seconds | fps | seconds / frame | how |",
            "|---|---|---|---|---|---|---|",
        ]
    for r in rows:
        how = "measured"
        if r["extrapolated"]:
            how = (
                f"extrapolated from {r['units_done']} of {r['units_total']} sample chunks of one frame "
                f"({r['seconds']:.0f} s)"
            )
        lines.append(
            f"| {r['model']} | {r['n']} | {r['frames']} | {r['seconds']:.2f} | {r['fps']:.4g} | "
            f"{r['seconds_per_frame']:.1f} | {how} |"
        )
    if file_row is not None:
        lines += [
            "",
            f"End-to-end file pipeline (decode -> upscale -> {file_row['codec']} encode, audio "
            f"{file_row['audio']}), {file_row['model']} n = 1, {file_row['frames']} frames, median of "
            f"{file_row['rounds']} rounds: **{file_row['pipeline_fps']:.3f} fps**, against "
            f"{file_row['bare_fps']:.3f} fps for the same frames from memory through the same stream (no "
            "decode, no encode); rounds alternate. All rounds: file pipeline "
            + ", ".join(f"{v:.3f}" for v in file_row["pipeline_all"])
            + "; from memory "
            + ", ".join(f"{v:.3f}" for v in file_row["bare_all"])
            + ".",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
