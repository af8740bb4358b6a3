#!/usr/bin/env bash
# One device check for the GPU path (issue 10), to run as it is on a CUDA machine:
#
#   bash benchmarks/gpu_check.sh [FOLDER]        # results into FOLDER, default $OUT, else ./gpu_check_out
#   GPU_CHECK_COMPILE=1 bash benchmarks/gpu_check.sh   # also the opt-in torch.compile step (several min)
#
# Needs: python with torch (CUDA), cuda-python, pytest, rich, typer, opencv, numpy; onnxruntime (CPU) is
# optional. Needs no network, no tensorrt, no onnxruntime-gpu, no lpips, no PyAV. Runs from the repository
# root with PYTHONPATH=. (nothing is installed). Budget: <= 8 minutes without the compile step.
#
# Writes into FOLDER:
#   environment.txt   nvidia-smi, versions, the kernel's availability
#   pytest_gpu.txt    python -m pytest -m gpu (kernel tests and the Upscaler on CUDA: fp32, fp16, bf16, the
#                     NaN fallback), with its exit code
#   kernel.md/json    median kernel exactness vs torch.sort (21x3x2160x3840 fp16/fp32, > 2^31 elements),
#                     time vs torch.median, share of the device-to-device copy bandwidth
#   upscale.md/json   the Upscaler on a 480x270 frame, n = 21, fp16/bf16/fp32, tile 192 vs whole frame,
#                     as a share of the fp16 compute floor
#   compile.md        (opt-in) bench_gpu.py backend with torch.compile
#   summary.txt       one line per step: its exit code and seconds
#
# NOT YET RUN ON A GPU: written without one. Each step has its own time limit, and a failing step does
# not stop the next.
set -u
DEST="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"  # absolute, before moving to the repository root
cd "$(dirname "$0")/.."
export PYTHONPATH=.
export PYTHONUNBUFFERED=1
: > "$DEST/summary.txt"

step() {  # step NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "== $name (limit ${limit}s): $*"
    timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$DEST/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc, $((SECONDS - start)) s" | tee -a "$DEST/summary.txt"
    tail -n 5 "$DEST/$name.log"
}

{
    date -u
    nvidia-smi || echo "nvidia-smi failed"
    python - <<'EOF'
import importlib.util, torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"sm_{p.major}{p.minor}", f"{p.total_memory / 2**30:.0f} GiB")
for mod in ("cuda.bindings", "cupy", "onnxruntime", "tensorrt"):
    try:
        found = importlib.util.find_spec(mod) is not None
    except ImportError:
        found = False
    print(mod, "installed" if found else "not installed")
from certsr_rt.runtime import cuda_median as cm
print("median kernel:", cm.kernel_unavailable_reason("cuda") or "available")
EOF
} > "$DEST/environment.txt" 2>&1
cat "$DEST/environment.txt"

step pytest_gpu 180 python -m pytest -m gpu -q -p no:cacheprovider -o addopts="" tests/
cp "$DEST/pytest_gpu.log" "$DEST/pytest_gpu.txt"
step kernel 120 python benchmarks/gpu_check.py kernel --out "$DEST"
step upscale 150 python benchmarks/gpu_check.py upscale --out "$DEST"
if [ "${GPU_CHECK_COMPILE:-0}" = "1" ]; then
    step compile 600 python benchmarks/bench_gpu.py backend --variants eager_cl,compile --precisions fp16 \
        --sizes 480x270 --out "$DEST/compile.md"
fi
echo "results in $DEST:"
ls -l "$DEST"
cat "$DEST/summary.txt"
