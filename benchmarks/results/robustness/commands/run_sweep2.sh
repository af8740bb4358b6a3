#!/usr/bin/env bash
# LPIPS-vs-sigma sweep (issue 9 item 3) of MODEL at SIGMAS on held-out Set5 + Set14 (48x48 LR crops).
# usage: run_sweep2.sh MODEL SIGMAS OUTDIR
cd /work/main
exec env OMP_NUM_THREADS=1 certsr-rt evaluate --models "$1" \
  --hr /work/eval/s514/HR --lr /work/eval/s514/LR --crop 48 \
  --conditions clean,noisy --sigma-sweep "$2" --sweep-samples 21 \
  --device cpu --no-progress -o "$3"
