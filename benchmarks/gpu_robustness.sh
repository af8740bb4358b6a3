#!/usr/bin/env bash
# The rows of benchmarks/results/robustness.md that a CPU cannot afford (issue 8): realesrgan-x4plus with
# MRS at sigma 0.03 and 0.06, n = 21, under the table's exact protocol (Set5 + Set14, 48x48 LR centre
# crops, clean/noisy/blurry/jpeg/fgsm/pgd/pgd-eot/pgd-median, L1 attack loss, seed 0, fp32, untiled).
# On this project's 2-core CPU one MRS forward of x4plus on a 48x48 crop takes ~80 s and pgd-median
# ~1800 s per image (about 40 h for the two rows).
#
#   bash benchmarks/gpu_robustness.sh [FOLDER]     # results into FOLDER, default $OUT, else ./gpu_robustness_out
#
# Environment (defaults in brackets): DATA [../shared/assets/data] (holds Set5/ and Set14/ with HR/ and LR_x4/),
# DEVICE [cuda], MODELS [the two x4plus MRS entries], LIMIT [all 19 images], LIMIT_SECONDS [540],
# PAIRS [/work/eval/s514, the link folder].
# Needs the lpips package (on the device machine: carry its wheel, see the device notes); runs from the
# repository root with PYTHONPATH=. (nothing installed). Then, here:
#   python scripts/merge_evaluations.py -o benchmarks/results/robustness benchmarks/results/robustness FOLDER
#
# NOT YET RUN ON A GPU: written without one; tested on a CPU with DEVICE=cpu and a tiny model.
set -u
DEST="${1:-${OUT:-gpu_robustness_out}}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
cd "$(dirname "$0")/.."
DATA="$(cd "${DATA:-../shared/assets/data}" && pwd)" || { echo "error: DATA folder not found" >&2; exit 1; }
MODELS="${MODELS:-realesrgan-x4plus@sigma=0.03:n=21,realesrgan-x4plus@sigma=0.06:n=21}"
export PYTHONPATH=.
export PYTHONUNBUFFERED=1

# One folder of links to Set5 + Set14, prefixed by set (their file names collide), at the path the table's
# runs used: merge_evaluations.py joins only runs that name the same HR and LR folders.
PAIRS="${PAIRS:-/work/eval/s514}"
mkdir -p "$PAIRS/HR" "$PAIRS/LR" || { echo "error: cannot create $PAIRS (set PAIRS)" >&2; exit 1; }
for s in Set5 Set14; do
    for f in "$DATA/$s"/HR/*.png; do ln -sf "$f" "$PAIRS/HR/${s}_$(basename "$f")"; done
    for f in "$DATA/$s"/LR_x4/*.png; do ln -sf "$f" "$PAIRS/LR/${s}_$(basename "$f")"; done
done

start=$SECONDS
timeout --signal=TERM --kill-after=10 "${LIMIT_SECONDS:-540}" python -m certsr_rt.cli.app evaluate \
    --models "$MODELS" --hr "$PAIRS/HR" --lr "$PAIRS/LR" --crop 48 \
    --conditions clean,noisy,blurry,jpeg,fgsm,pgd,pgd-eot,pgd-median --attack-loss l1 \
    --device "${DEVICE:-cuda}" ${LIMIT:+--limit "$LIMIT"} --no-progress -o "$DEST/eval" \
    > "$DEST/evaluate.log" 2>&1
rc=$?
echo "evaluate: exit $rc, $((SECONDS - start)) s" | tee "$DEST/summary.txt"
tail -n 12 "$DEST/evaluate.log"
exit $rc
