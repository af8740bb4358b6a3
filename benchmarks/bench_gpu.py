"""GPU benchmarks: the CUDA median kernel vs torch, and the torch CUDA backend for RRDBNet at n = 21.

Needs a CUDA GPU, and cuda-python for the kernel (``pip install 'certsr-rt[gpu]'``). Two parts:

``median``   21 x 3 x 1080 x 1920 samples (a 1080p output) in fp16 and fp32: the kernel's network path,
             generic path and network path with two extra ranks (certified bounds), against
             ``torch.median``, ``torch.kthvalue``, ``torch.sort`` and the selection network in torch ops
             along dim 0. Reports ms (median of timed calls, CUDA events) and effective bandwidth (bytes
             read + written / time); every result is checked against ``torch.sort``.
``backend``  Real-ESRGAN x4plus (RRDBNet, bundled weights) on a 21-sample batch, one call, for a 120x120 LR
             crop and a 480x270 LR frame (1080p out): fp32 / fp16 / bf16, eager NCHW, eager channels_last,
             ``torch.compile`` (inductor), CUDA graphs (eager channels_last captured once) and, when
             ``tensorrt`` is installed, the TensorRT backend (engine built once and cached). Reports ms
             per call, achieved TFLOP/s at 35.85 MFLOP per LR pixel per sample, and % of the fp16/bf16
             dense floor (989 TFLOP/s on H100 SXM; pass --peak-tflops for another GPU).

Usage (one GPU session; ~5-15 min, most of it torch.compile):
    python benchmarks/bench_gpu.py median  --out benchmarks/results/gpu_median.md
    python benchmarks/bench_gpu.py backend --out benchmarks/results/gpu_backend.md
    python benchmarks/bench_gpu.py backend --variants eager_cl,graph --precisions fp16 --sizes 120x120
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

MFLOP_PER_LR_PIXEL = 35.85e6
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cuda_time(fn: Callable[[], object], warmup: int, reps: int) -> tuple[float, float]:
    """(median, min) milliseconds of ``fn`` over ``reps`` calls after ``warmup`` calls, with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), min(times)


def machine_lines(command: str) -> list[str]:
    props = torch.cuda.get_device_properties(0)
    try:
        smi = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,clocks.max.sm,memory.total",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        smi = "nvidia-smi not available"
    return [
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- command: `{command}`",
        f"- GPU: {props.name}, sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, "
        f"{props.total_memory / 2**30:.0f} GiB; nvidia-smi: {smi}",
        f"- software: Python {platform.python_version()}, torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}), cuDNN {torch.backends.cudnn.version()}",
    ]


# ------------------------------------------------------------------------------------------- median


def bench_median(args: argparse.Namespace) -> list[str]:
    from certsr_rt.runtime import cuda_median as cm
    from certsr_rt.smoothing import aggregate

    reason = cm.kernel_unavailable_reason("cuda")
    n, shape = 21, (3, 1080, 1920)
    lines = [
        f"## Median over n = {n} samples of {'x'.join(map(str, shape))} (one 1080p output)",
        "",
        f"kernel: {'available' if reason is None else 'NOT available: ' + reason}",
        "",
        "| dtype | method | ms (median) | ms (min) | effective GB/s | equals torch.sort |",
        "|---|---|---|---|---|---|",
    ]
    for dname in ("fp16", "fp32"):
        dtype = DTYPES[dname]
        x = torch.randn(n, *shape, device="cuda", dtype=dtype)
        reference = torch.sort(x, dim=0).values[n // 2]
        lo_ref, hi_ref = torch.sort(x, dim=0).values[3], torch.sort(x, dim=0).values[17]
        methods: dict[str, Callable[[], object]] = {
            "torch.median(dim=0)": lambda x=x: torch.median(x, dim=0).values,
            "torch.kthvalue(k=11, dim=0)": lambda x=x: torch.kthvalue(x, n // 2 + 1, dim=0).values,
            "torch.sort(dim=0)[10]": lambda x=x: torch.sort(x, dim=0).values[n // 2],
            "torch, selection network (91 min/max pairs)": lambda x=x: aggregate.median_and_order_statistics(
                x, method="network"
            )[0],
        }
        if reason is None:
            methods["kernel, network (91 CE)"] = lambda x=x: cm.median(x, method="network")
            methods["kernel, generic (bisection)"] = lambda x=x: cm.median(x, method="generic")
            methods["kernel, network + ranks 4, 18"] = lambda x=x: cm.median_and_order_statistics(
                x, (4, 18), method="network"
            )
        elements = x[0].numel()
        for label, fn in methods.items():
            out = fn()
            if isinstance(out, tuple):
                med, (lo, hi) = out
                ok = torch.equal(med, reference) and torch.equal(lo, lo_ref) and torch.equal(hi, hi_ref)
                written = 3
            else:
                ok, written = torch.equal(out, reference), 1
            ms, ms_min = cuda_time(fn, args.warmup, args.reps)
            gbs = (n + written) * elements * x.element_size() / (ms * 1e-3) / 1e9
            lines.append(
                f"| {dname} | {label} | {ms:.3f} | {ms_min:.3f} | {gbs:.0f} | {'yes' if ok else 'NO'} |"
            )
            print(lines[-1], flush=True)
        del x
        torch.cuda.empty_cache()
    return lines


# ------------------------------------------------------------------------------------------- backend


def _runner(module: torch.nn.Module, x: torch.Tensor, variant: str) -> Callable[[], torch.Tensor]:
    if variant == "eager":
        return lambda: module(x)
    if variant == "eager_cl":
        module = module.to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        return lambda: module(xc)
    if variant == "compile":
        module = module.to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        compiled = torch.compile(module, mode="max-autotune-no-cudagraphs", dynamic=False)
        return lambda: compiled(xc)
    if variant == "graph":
        module = module.to(memory_format=torch.channels_last)
        static_in = x.contiguous(memory_format=torch.channels_last).clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                module(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = module(static_in)

        def replay() -> torch.Tensor:
            static_in.copy_(x)  # the real loop writes the new noisy batch into the captured input
            graph.replay()
            return static_out

        return replay
    raise ValueError(f"unknown variant {variant!r}")


def _tensorrt_row(model, noisy: torch.Tensor, pname: str, w: int, h: int, flop: float, args) -> str:
    """The TensorRT backend on the same batch (float32 I/O; fp16/fp32 engines from the ONNX export)."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return f"| {w}x{h} | {pname} | tensorrt | not installed | | | | |"
    if pname == "bf16":
        return f"| {w}x{h} | {pname} | tensorrt | n/a (fp16/fp32 engines only) | | | | |"
    from certsr_rt.export.tensorrt import ShapeProfile
    from certsr_rt.runtime.backends.tensorrt_backend import TensorRTBackend

    profile = ShapeProfile(max_batch=noisy.shape[0], max_height=h, max_width=w)
    with TensorRTBackend(model, "cuda", pname, profile=profile) as backend:  # builds once, then cached
        out = backend.infer(noisy)
        bad = (~torch.isfinite(out)).float().mean().item()
        ms, ms_min = cuda_time(lambda: backend.infer(noisy), args.warmup, args.reps)
    tflops = flop / (ms * 1e-3) / 1e12
    return (
        f"| {w}x{h} | {pname} | tensorrt | {ms:.1f} | {ms_min:.1f} | {tflops:.0f} | "
        f"{100 * tflops / args.peak_tflops:.0f}% | {bad:.1%} |"
    )


def bench_backend(args: argparse.Namespace) -> list[str]:
    from certsr_rt.models import load_model
    from certsr_rt.smoothing.noise import gaussian_field

    torch.backends.cudnn.benchmark = True
    model = load_model("realesrgan-x4plus")
    n = args.samples
    lines = [
        f"## Torch CUDA backend, Real-ESRGAN x4plus (RRDBNet), n = {n} samples in one call",
        "",
        f"FLOP per call = 35.85 MFLOP x LR pixels x {n}; floor = that / {args.peak_tflops:g} TFLOP/s "
        "(dense fp16/bf16 peak; fp32 runs as TF32 in cuDNN).",
        "",
        "| LR size | precision | variant | ms / call (median) | ms (min) | TFLOP/s | % of fp16 floor | "
        "non-finite outputs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.lower().split("x"))
        lr = torch.rand(1, 3, h, w, device="cuda")
        noisy = (lr + 0.03 * gaussian_field((n, 3, h, w), seed=0, device="cuda")).contiguous()
        flop = MFLOP_PER_LR_PIXEL * h * w * n
        for pname in args.precisions.split(","):
            dtype = DTYPES[pname]
            x = noisy.to(dtype)
            for variant in args.variants.split(","):
                if variant == "tensorrt":
                    row = _tensorrt_row(model, noisy, pname, w, h, flop, args)
                    lines.append(row)
                    print(row, flush=True)
                    continue
                module = copy.deepcopy(model.module).to("cuda", dtype).eval()
                try:
                    with torch.inference_mode():
                        fn = _runner(module, x, variant)
                        out = fn()
                        bad = (~torch.isfinite(out)).float().mean().item()
                        ms, ms_min = cuda_time(fn, args.warmup, args.reps)
                    tflops = flop / (ms * 1e-3) / 1e12
                    row = (
                        f"| {w}x{h} | {pname} | {variant} | {ms:.1f} | {ms_min:.1f} | {tflops:.0f} | "
                        f"{100 * tflops / args.peak_tflops:.0f}% | {bad:.1%} |"
                    )
                except torch.cuda.OutOfMemoryError:
                    row = f"| {w}x{h} | {pname} | {variant} | OOM | | | | |"
                lines.append(row)
                print(row, flush=True)
                del module
                torch.cuda.empty_cache()
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=["median", "backend", "all"])
    p.add_argument("--out", type=Path, default=None, help="markdown file to write")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--samples", type=int, default=21)
    p.add_argument("--sizes", default="120x120,480x270", help="LR sizes WxH")
    p.add_argument("--precisions", default="fp32,fp16,bf16")
    p.add_argument("--variants", default="eager,eager_cl,compile,graph,tensorrt")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense fp16 peak of the GPU")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA GPU; none is visible")
    lines = ["# GPU benchmarks", "", *machine_lines(" ".join(["python", *sys.argv])), ""]
    if args.part in ("median", "all"):
        lines += [*bench_median(args), ""]
    if args.part in ("backend", "all"):
        lines += [*bench_backend(args), ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
