"""The measurements of ``benchmarks/gpu_check.sh``: median kernel exactness and speed, Upscaler end to end.

NOT YET RUN ON A GPU: written for the first session that has one. Each part records what it measured, or
the error that stopped it, and the next part runs regardless.

``kernel``   exactness of the median kernel against ``torch.sort`` on 21 x 3 x 2160 x 3840 (a 4K output)
             in fp16 and fp32, and on 21 x 102,300,000 fp16 (2.148e9 elements, more than 2**31); time from
             CUDA events over many repetitions, against ``torch.median(dim=0)`` and as a share of the
             measured device-to-device copy bandwidth (``Tensor.copy_``: bytes read + written per second).
             Targets (issue 10): >= 10x ``torch.median`` and >= 70 % of the copy bandwidth.
``upscale``  the Upscaler (Real-ESRGAN x4plus, bundled weights, torch backend) on a 480 x 270 frame at
             n = 21, fp32 / fp16 / bf16, tile 192 and the whole frame (tile 0), seconds per frame
             (median of timed frames after a warm-up frame) and the share of the fp16 compute floor:
             35.85 MFLOP per LR pixel per sample at 989 dense fp16 TFLOP/s (H200; bf16 matrix products
             measured ~790 TFLOP/s). Target: >= 40 % of the floor for the MRS forward.
``compile``  opt-in (``GPU_CHECK_COMPILE=1`` in gpu_check.sh): ``bench_gpu.py backend`` with torch.compile.

Usage: ``PYTHONPATH=. python benchmarks/gpu_check.py kernel|upscale --out DIR``; writes ``DIR/PART.md``
and ``DIR/PART.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu import cuda_time, machine_lines  # noqa: E402

MFLOP_PER_LR_PIXEL = 35.85e6
FP16_PEAK_TFLOPS = 989.0
BF16_MEASURED_TFLOPS = 790.0
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _record(out: Path, part: str, lines: list[str], data: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{part}.md").write_text("\n".join(lines) + "\n")
    (out / f"{part}.json").write_text(json.dumps(data, indent=2) + "\n")


def _guard(lines: list[str], data: dict[str, Any], key: str, fn: Callable[[], None]) -> None:
    """Run one measurement; an exception becomes a recorded failure, not the end of the script."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - a device check records every failure and goes on
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        lines.append(f"- **{key} FAILED**: `{text}`")
        data.setdefault("failures", {})[key] = traceback.format_exc()
        print(traceback.format_exc(), file=sys.stderr, flush=True)
    finally:
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------- kernel


def _exact_against_sort(x: torch.Tensor, med: torch.Tensor, chunk: int = 4_000_000) -> tuple[bool, int]:
    """Whether ``med`` equals ``torch.sort(x, dim=0).values[n // 2]`` everywhere (compared in slices)."""
    n = x.shape[0]
    flat_x, flat_m = x.reshape(n, -1), med.reshape(-1)
    mismatches = 0
    for start in range(0, flat_x.shape[1], chunk):
        ref = torch.sort(flat_x[:, start : start + chunk], dim=0).values[n // 2]
        got = flat_m[start : start + chunk]
        same = (got == ref) | (torch.isnan(got) & torch.isnan(ref))
        mismatches += int((~same).sum().item())
    return mismatches == 0, mismatches


def _copy_bandwidth(nbytes: int, reps: int) -> float:
    """Device-to-device copy, GB/s (read + write), on ``nbytes`` buffers."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms, _ = cuda_time(lambda: dst.copy_(src), 5, reps)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def part_kernel(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from certsr_rt.runtime import cuda_median as cm

    reason = cm.kernel_unavailable_reason("cuda")
    lines = [
        "## Median kernel: exactness against torch.sort, time against torch.median and copy bandwidth",
        "",
        f"kernel: {'available' if reason is None else 'NOT available: ' + reason}",
        "",
    ]
    data: dict[str, Any] = {"kernel_unavailable": reason, "rows": []}
    if reason is not None:
        return lines, data
    n, shape = 21, (3, 2160, 3840)
    copy_gbs: dict[str, float] = {}

    def bandwidth() -> None:
        copy_gbs["value"] = _copy_bandwidth(2 * 2**30, args.reps)
        lines.append(
            f"- device-to-device copy (2 GiB, Tensor.copy_): {copy_gbs['value']:.0f} GB/s (read + write)"
        )
        data["copy_gbs"] = copy_gbs["value"]

    _guard(lines, data, "copy bandwidth", bandwidth)
    lines += [
        "",
        "| samples | dtype | exact vs torch.sort | kernel ms | torch.median ms | speed-up | kernel GB/s "
        "| % of copy |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def one(dname: str) -> None:
        x = torch.randn(n, *shape, device="cuda", dtype=DTYPES[dname])
        x[0, 0, 0, :7] = float("nan")  # NaN orders last, as in torch.sort
        x[1:4, 1, 5, :3] = float("inf")
        med = cm.median(x, method="network")
        torch.cuda.synchronize()
        exact, wrong = _exact_against_sort(x, med)
        k_ms, _ = cuda_time(lambda: cm.median(x, method="network"), 5, args.reps)
        t_ms, _ = cuda_time(lambda: torch.median(x, dim=0).values, 2, max(3, args.reps // 10))
        gbs = (n + 1) * x[0].numel() * x.element_size() / (k_ms * 1e-3) / 1e9
        share = 100 * gbs / copy_gbs["value"] if "value" in copy_gbs else float("nan")
        row = {
            "samples": f"{n}x{'x'.join(map(str, shape))}",
            "dtype": dname,
            "exact": exact,
            "mismatches": wrong,
            "kernel_ms": k_ms,
            "torch_median_ms": t_ms,
            "speedup": t_ms / k_ms,
            "kernel_gbs": gbs,
            "pct_of_copy": share,
        }
        data["rows"].append(row)
        lines.append(
            f"| {row['samples']} | {dname} | {'yes' if exact else f'NO ({wrong} differ)'} | {k_ms:.3f} | "
            f"{t_ms:.2f} | {t_ms / k_ms:.1f}x | {gbs:.0f} | {share:.0f}% |"
        )
        print(lines[-1], flush=True)

    for dname in ("fp16", "fp32"):
        _guard(lines, data, f"4K {dname}", lambda dname=dname: one(dname))

    def large() -> None:
        m = 102_300_000  # 21 x m = 2.148e9 elements > 2**31: 64-bit indexing in the kernel
        x = torch.randn(n, m, device="cuda", dtype=torch.float16)
        assert x.numel() > 2**31
        med = cm.median(x, method="network")
        torch.cuda.synchronize()
        exact, wrong = _exact_against_sort(x, med, chunk=8_000_000)
        tail = torch.sort(x[:, -1000:], dim=0).values[n // 2]
        tail_ok = torch.equal(med[-1000:], tail)  # the last elements, past 2**31 in the flat tensor
        data["large"] = {"elements": x.numel(), "exact": exact, "mismatches": wrong, "tail_exact": tail_ok}
        lines.append(
            f"- more than 2^31 elements (21 x {m:,} fp16 = {x.numel():,}): exact {exact} "
            f"({wrong} differ), last 1000 outputs exact {tail_ok}"
        )
        print(lines[-1], flush=True)

    _guard(lines, data, "more than 2^31 elements", large)
    lines += ["", "Targets (issue 10): kernel >= 10x torch.median and >= 70% of the copy bandwidth."]
    return lines, data


# ------------------------------------------------------------------------------------------ upscale


def part_upscale(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    import numpy as np

    from certsr_rt import SmoothingConfig, Upscaler
    from certsr_rt.models import load_model

    torch.backends.cudnn.benchmark = True
    w, h, n = 480, 270, args.samples
    floor_s = MFLOP_PER_LR_PIXEL * w * h * n / (FP16_PEAK_TFLOPS * 1e12)
    bf16_floor_s = MFLOP_PER_LR_PIXEL * w * h * n / (BF16_MEASURED_TFLOPS * 1e12)
    lines = [
        f"## Upscaler end to end: Real-ESRGAN x4plus, {w}x{h} frame (1080p out), n = {n}, torch backend",
        "",
        f"fp16 compute floor: 35.85 MFLOP x {w * h} LR px x {n} / {FP16_PEAK_TFLOPS:g} TFLOP/s = "
        f"{floor_s * 1e3:.1f} ms (bf16 at the measured {BF16_MEASURED_TFLOPS:g} TFLOP/s: "
        f"{bf16_floor_s * 1e3:.1f} ms). Seconds per frame: median of {args.frames} frames after one warm-up.",
        "",
        "| precision | tile | s / frame | % of fp16 floor | chunk | fell back to fp32 | median kernel |",
        "|---|---|---|---|---|---|---|",
    ]
    data: dict[str, Any] = {"floor_ms": floor_s * 1e3, "rows": []}
    model = load_model("realesrgan-x4plus")
    frame = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)

    def one(precision: str, tile: int) -> None:
        from certsr_rt.runtime import cuda_median as cm
        from certsr_rt.runtime.tiling import make_tiles

        config = SmoothingConfig(sigma=0.03, samples=n, seed=0)
        up = Upscaler(model, config, device="cuda", backend="torch", precision=precision, tile=tile)
        up(frame)  # warm-up: cuDNN autotuning, kernel compilation
        torch.cuda.synchronize()
        times = []
        for _ in range(args.frames):
            t = time.perf_counter()
            out = up(frame)  # numpy out: includes the copy back to the host
            times.append(time.perf_counter() - t)
        seconds = statistics.median(times)
        chunk = up._chunk_size(make_tiles(h, w, tile, up.tile_overlap)[0])
        row = {
            "precision": precision,
            "tile": tile,
            "seconds": seconds,
            "pct_of_fp16_floor": 100 * floor_s / seconds,
            "chunk": chunk,
            "fell_back": up.backend.fell_back_to_fp32,
            "finite": bool(np.isfinite(out.astype(np.float32)).all()),
        }
        data["rows"].append(row)
        kernel = "yes" if cm.kernel_unavailable_reason("cuda") is None else "no (torch)"
        lines.append(
            f"| {precision} | {tile or 'whole frame'} | {seconds:.3f} | {row['pct_of_fp16_floor']:.0f}% | "
            f"{chunk} | {row['fell_back']} | {kernel} |"
        )
        print(lines[-1], flush=True)
        up.close()

    for precision in ("fp16", "bf16", "fp32"):
        for tile in (192, 0):
            _guard(lines, data, f"{precision} tile {tile}", lambda p=precision, t=tile: one(p, t))
    lines += ["", "Target (issue 10): the MRS forward >= 40% of the fp16 floor."]
    return lines, data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=["kernel", "upscale"])
    p.add_argument("--out", type=Path, required=True, help="folder for PART.md and PART.json")
    p.add_argument("--reps", type=int, default=50, help="timed repetitions of the kernel")
    p.add_argument("--frames", type=int, default=3, help="timed frames per Upscaler configuration")
    p.add_argument("--samples", type=int, default=21)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check.py needs a CUDA GPU; none is visible")
    lines = [*machine_lines(" ".join(["python", *sys.argv])), ""]
    part = {"kernel": part_kernel, "upscale": part_upscale}[args.part]
    body, data = part(args)
    _record(args.out, args.part, lines + body, data)
    print("\n".join(lines + body))


if __name__ == "__main__":
    main()
