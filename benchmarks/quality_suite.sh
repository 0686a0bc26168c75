#!/usr/bin/env bash
# Quality benchmark (paper Tables 1-2 at CPU scale): train the tiny LangBRT, its ablations and its data-fraction
# variants on the synthetic set, then score them side by side with the classical floors (identity, bilateral
# retouch over skin, harmonic inpainting of the full model's maps) on the same synthetic test samples.
#
#   bash benchmarks/quality_suite.sh                      # STEPS=800 SAMPLES=128 RUNS=runs/quality
#   STEPS=300 SAMPLES=64 bash benchmarks/quality_suite.sh  # smaller
#
# One training process at a time, one thread each. A variant whose RUNS/NAME/final exists is not retrained,
# so an interrupted run resumes where it stopped. Writes benchmarks/results/quality-synthetic-tiny-DATE.json.
# "w/o L_local" (--semantic-weight > 0 vs 0) needs Alpha-CLIP weights; offline there are none, so it is not run.
set -euo pipefail

STEPS=${STEPS:-800}
SAMPLES=${SAMPLES:-128}
RUNS=${RUNS:-runs/quality}
THREADS=${THREADS:-1}
OUT=${OUT:-benchmarks/results/quality-synthetic-tiny-$(date +%Y-%m-%d).json}

COMMON=(--data synthetic --preset tiny --synthetic-length 2048 --steps "$STEPS" --batch-size 8 --lr 2e-3
        --l1-weight 20 --adversarial-weight 0 --perceptual-weight 0 --semantic-weight 0 --ema-decay 0
        --threads "$THREADS" --seed 0 --checkpoint-every 100000 --image-every 100000 --log-every 100 --quiet)

source "$(dirname "$0")/train_variant.sh"  # train NAME FLAGS...

train full --ablation none --fraction 1.0  # also the 100 % row of the data-fraction table
train no-prior --ablation no-prior
train no-tbd --ablation no-tbd
train no-tca --ablation no-tca
train frac-0.1 --fraction 0.1   # 205 of 2048 samples (ceil, training/data/subset.py)
train frac-0.01 --fraction 0.01  # 21 of 2048 samples
train no-prior-0.01 --ablation no-prior --fraction 0.01  # does the language prior reduce the need for data?

SUITE=()
for name in full no-prior no-tbd no-tca frac-0.1 frac-0.01 no-prior-0.01; do  # the first one's maps feed the inpainting baseline
    if [[ -d "$RUNS/$name/final" ]]; then
        SUITE+=(--suite "$name=$RUNS/$name/final")
    else
        echo "== $name: no checkpoint, not in the suite"
    fi
done
mkdir -p "$(dirname "$OUT")"
OMP_NUM_THREADS=$THREADS "$BIN/langbrt-eval" --data synthetic --split test --num-samples "$SAMPLES" "${SUITE[@]}" \
    --out "$OUT"
echo "wrote $OUT"
exit_if_any_failed
