#!/usr/bin/env bash
# realesrgan-x4plus with MRS: the conditions a CPU can afford (no adaptive attacks), robustness table protocol.
# usage: run_x4plus.sh SIGMA OUTDIR
set -u
cd /work/evalcode   # the frozen copy of 50a78e2 the table was measured with
source /work/main/.venv/bin/activate
echo "== $(date -u +%FT%TZ) start $2: sigma $1"
env OMP_NUM_THREADS=1 PYTHONPATH=/work/evalcode timeout 7200 python -m certsr_rt.cli.app evaluate \
  --models "realesrgan-x4plus@sigma=$1:n=21" \
  --hr /work/eval/s514/HR --lr /work/eval/s514/LR --crop 48 \
  --conditions clean,noisy,blurry,jpeg,fgsm,pgd --attack-loss l1 \
  --device cpu -o "$2"
echo "== $(date -u +%FT%TZ) end $2: rc $?"
