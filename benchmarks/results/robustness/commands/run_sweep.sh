#!/usr/bin/env bash
# LPIPS-vs-sigma sweep (issue 9 item 3) for one model on held-out Set5 + Set14 (48x48 LR crops), clean and noisy.
# usage: run_sweep.sh MODEL OUTDIR
cd /work/main
exec env OMP_NUM_THREADS=1 certsr-rt evaluate --models "$1" \
  --hr /work/eval/s514/HR --lr /work/eval/s514/LR --crop 48 \
  --conditions clean,noisy --sigma-sweep 0,0.01,0.02,0.03,0.045,0.06,0.08 --sweep-samples 21 \
  --device cpu --no-progress -o "$2"
