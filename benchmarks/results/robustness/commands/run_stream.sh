#!/usr/bin/env bash
# Robustness table re-run (issue 8: pgd-median keeps the worse of its own result and the transferred pgd).
# usage: run_stream.sh MODELS OUTDIR [MODELS OUTDIR ...]: runs them one after another, one thread.
set -u
cd /work/evalcode   # a frozen copy of commit 50a78e2 (git archive), so edits to the working tree cannot reach a running table
source /work/main/.venv/bin/activate
while [ $# -ge 2 ]; do
  echo "== $(date -u +%FT%TZ) start $2: $1"
  env OMP_NUM_THREADS=1 PYTHONPATH=/work/evalcode timeout 6000 python -m certsr_rt.cli.app evaluate \
    --models "$1" \
    --hr /work/eval/s514/HR --lr /work/eval/s514/LR --crop 48 \
    --conditions clean,noisy,blurry,jpeg,fgsm,pgd,pgd-eot,pgd-median --attack-loss l1 \
    --device cpu --no-progress -o "$2"
  echo "== $(date -u +%FT%TZ) end $2: rc $?"
  shift 2
done
