#!/usr/bin/env bash
# MRS fine-tune of the compact model on BSD100 HR (CPU, bf16 autocast), issue 9.
cd /work/main
exec env OMP_NUM_THREADS=1 certsr-rt train \
  --model realesr-animevideov3-x4 --mode mrs \
  --hr-dir ../shared/assets/data/BSD100/HR --hr-crop 128 --batch-size 4 \
  --perceptual-weights ../shared/assets/weights/vgg16_features_imagenet1k_v1.pth \
  --gan-weight 0 --ema-decay 0.995 --amp bf16 --iterations 100000 --max-minutes 77 \
  --save-every 100 --log-every 10 --keep-checkpoints 3 --threads 1 --device cpu --no-progress \
  --name certsr-compact-x4 -o /work/runs/certsr-compact "$@"
