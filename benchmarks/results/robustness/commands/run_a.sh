#!/usr/bin/env bash
# Robustness table part A (issue 8 item 6): bicubic and the compact base model, plain and MRS sigma 0.03/0.06.
cd /work/main
exec env OMP_NUM_THREADS=1 certsr-rt evaluate \
  --models "bicubic,realesr-animevideov3-x4,realesr-animevideov3-x4@sigma=0.03:n=21,realesr-animevideov3-x4@sigma=0.06:n=21" \
  --hr /work/eval/s514/HR --lr /work/eval/s514/LR --crop 48 \
  --conditions clean,noisy,blurry,jpeg,fgsm,pgd,pgd-eot,pgd-median --attack-loss l1 \
  --device cpu --no-progress -o /work/eval/a
