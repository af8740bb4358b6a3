#!/usr/bin/env bash
# Robustness table part C (issues 8/9): the CertSR compact model, plain and MRS at its sigma; CONDITIONS given.
# usage: run_c.sh SIGMA CONDITIONS OUTDIR
cd /work/main
exec env OMP_NUM_THREADS=1 certsr-rt evaluate \
  --models "certsr-compact-x4,certsr-compact-x4@sigma=$1:n=21" \
  --hr /work/eval/s514/HR --lr /work/eval/s514/LR --crop 48 \
  --conditions "$2" --attack-loss l1 \
  --device cpu --no-progress -o "$3"
