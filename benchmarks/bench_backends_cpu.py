"""CPU: torch eager vs onnxruntime on the same 21-sample MRS batch, for both bundled models.

Both backends run the same input (a 48x48 LR crop of a Set5 image when ../shared/assets is present, else a
seeded random image) plus the same 21 noise fields, as ONE batched call per run. Runs alternate between
the backends (torch, onnxruntime, torch, ...) so that load from other processes hits both alike; the
reported ratio is median(torch) / median(onnxruntime) from the same process. The ONNX export is cached
(``$CERTSR_RT_CACHE``) and its time is reported separately, not counted in the ratio.

Usage:
    OMP_NUM_THREADS=2 python benchmarks/bench_backends_cpu.py --threads 2 --repeats 3 \
        --out benchmarks/results/backends_cpu.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

MODELS = ["certsr-compact-x4", "realesrgan-x4plus", "realesr-animevideov3-x4"]
ASSET = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "assets"
    / "data"
    / "Set5"
    / "LR_x4"
    / "img_003.png"
)


def _input(size: int):
    import numpy as np
    import torch

    if ASSET.is_file():
        import cv2

        img = cv2.imread(str(ASSET), cv2.IMREAD_COLOR)[:, :, ::-1]
        h, w = img.shape[:2]
        y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
        crop = img[y : y + size, x : x + size].astype(np.float32) / 255.0
        source = f"{ASSET.name} centre {crop.shape[0]}x{crop.shape[1]} crop"
    else:
        crop = np.random.default_rng(0).random((size, size, 3), dtype=np.float32)
        source = f"seeded random {size}x{size} image"
    return torch.from_numpy(crop.copy()).permute(2, 0, 1)[None], source


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def bench_model(name: str, x, samples: int, sigma: float, threads: int, repeats: int) -> dict:
    import torch

    from certsr_rt.export.exported import describe_exported
    from certsr_rt.export.onnx import cached_onnx
    from certsr_rt.models import load_model
    from certsr_rt.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from certsr_rt.runtime.backends.torch_backend import TorchBackend
    from certsr_rt.smoothing.noise import gaussian_field

    model = load_model(name)
    t = time.perf_counter()
    onnx_path = cached_onnx(model)
    export_s = time.perf_counter() - t
    batch = (x + sigma * gaussian_field((samples, *x.shape[1:]), seed=0)).contiguous()
    runners = {
        "torch": TorchBackend(model, "cpu", "fp32").activate(),
        "onnxruntime": OnnxRuntimeBackend(describe_exported(onnx_path), "cpu", threads=threads).activate(),
    }
    outputs, times = {}, {k: [] for k in runners}
    for k, backend in runners.items():  # warm-up (allocations, first-call kernel selection)
        outputs[k] = backend.infer(batch)
    for _ in range(repeats):
        for k, backend in runners.items():
            t = time.perf_counter()
            backend.infer(batch)
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": name,
        "batch": tuple(batch.shape),
        "export_s": export_s,
        "times": times,
        "median": med,
        "ratio": med["torch"] / med["onnxruntime"],
        "max_abs_diff": float((outputs["torch"] - outputs["onnxruntime"]).abs().max()),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--size", type=int, default=48, help="LR crop side")
    p.add_argument("--samples", type=int, default=21)
    p.add_argument("--sigma", type=float, default=0.03)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="markdown file to write")
    p.add_argument("--note", default="", help="free text recorded with the results (e.g. 'shared machine')")
    args = p.parse_args()

    import onnxruntime
    import torch

    torch.set_num_threads(args.threads)
    x, source = _input(args.size)
    rows = []
    for name in args.models.split(","):
        r = bench_model(name, x, args.samples, args.sigma, args.threads, args.repeats)
        rows.append(r)
        print(
            f"{name}: torch {r['median']['torch']:.3f} s, onnxruntime {r['median']['onnxruntime']:.3f} s, "
            f"ratio {r['ratio']:.2f}x, max |diff| {r['max_abs_diff']:.2e}",
            flush=True,
        )
    command = " ".join(["python", *sys.argv])
    lines = [
        "# CPU backends: torch eager vs onnxruntime (21-sample MRS batch, one batched call)",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} {command}`",
        f"- machine: {_cpu_name()}, {os.cpu_count()} logical cores visible, {platform.platform()}",
        f"- software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}",
        f"- threads: torch {args.threads}, onnxruntime intra-op {args.threads}",
        f"- input: {source}, {args.samples} noisy copies (sigma {args.sigma}, seed 0) -> batch "
        f"{'x'.join(map(str, rows[0]['batch']))}, float32",
        f"- method: 1 warm-up call each, then {args.repeats} alternating timed calls; median reported",
    ]
    if args.note:
        lines.append(f"- note: {args.note}")
    lines += [
        "",
        "| model | torch eager (s) | onnxruntime (s) | torch / onnxruntime | max abs diff | runs torch "
        "| runs ort | ONNX export (s, cached after first) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        runs = {k: ", ".join(f"{t:.3f}" for t in v) for k, v in r["times"].items()}
        lines.append(
            f"| {r['model']} | {r['median']['torch']:.3f} | {r['median']['onnxruntime']:.3f} | "
            f"**{r['ratio']:.2f}x** | {r['max_abs_diff']:.1e} | {runs['torch']} | {runs['onnxruntime']} | "
            f"{r['export_s']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
