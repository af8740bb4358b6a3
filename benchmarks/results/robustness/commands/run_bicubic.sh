#!/usr/bin/env bash
# Robustness table: the bicubic baseline again after the MATLAB border fix (5fa90e9).
cd /work/main
exec env OMP_NUM_THREADS=1 certsr-rt evaluate --models bicubic \
  --hr /work/eval/s514/HR --lr /work/eval/s514/LR --crop 48 \
  --conditions clean,noisy,blurry,jpeg,fgsm,pgd,pgd-eot,pgd-median --attack-loss l1 \
  --device cpu --no-progress -o /work/eval/bicubic
