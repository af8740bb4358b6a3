#!/usr/bin/env bash
# Robustness table part B (issue 8 item 6): realesrgan-x4plus plain (pgd-eot = pgd-median = pgd for a plain model).
cd /work/main
exec env OMP_NUM_THREADS=1 certsr-rt evaluate \
  --models "realesrgan-x4plus" \
  --hr /work/eval/s514/HR --lr /work/eval/s514/LR --crop 48 \
  --conditions clean,noisy,blurry,jpeg,fgsm,pgd,pgd-eot,pgd-median --attack-loss l1 \
  --device cpu --no-progress -o /work/eval/b
