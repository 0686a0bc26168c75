#!/usr/bin/env bash
# Quality benchmark at the small preset (256 px), the bundled model's scale: the full model and its no-tca /
# no-prior ablations, and the 1 % data regime with and without the language prior, each trained like the
# first stage of training/recipes/bundled_model.sh (1,200 steps, seed 0; about 25 min per model on one core),
# then scored beside the bundled model and the classical floors on the same 128 synthetic test samples.
#
#   bash benchmarks/quality_suite_small.sh        # RUNS=runs/small-ablation THREADS=1
#
# A variant whose RUNS/NAME/final exists is not retrained (benchmarks/train_variant.sh). Writes
# benchmarks/results/quality-synthetic-small-DATE.json and quality-synthetic-small-1pct-DATE.json.
set -euo pipefail

RUNS=${RUNS:-runs/small-ablation}
THREADS=${THREADS:-1}
DAY=$(date +%Y-%m-%d)

COMMON=(--data synthetic --preset small --seed 0
        --real-face examples/astronaut_face.regions.json --real-fraction 0.3 --synthetic-length 20000
        --steps 1200 --batch-size 4 --lr 2e-3 --warmup-steps 50
        --l1-weight 20 --detection-weight 1 --component-weight 1
        --adversarial-weight 0 --perceptual-weight 0 --semantic-weight 0
        --ema-decay 0.999 --checkpoint-every 100000 --image-every 100000 --threads "$THREADS" --quiet)

source "$(dirname "$0")/train_variant.sh"  # train NAME FLAGS...

train full --ablation none
train no-tca --ablation no-tca
train no-prior --ablation no-prior
train frac-0.01 --ablation none --fraction 0.01
train no-prior-0.01 --ablation no-prior --fraction 0.01

EVAL=("$BIN/langbrt-eval" --data synthetic --split test --num-samples 128 --device cpu)
OMP_NUM_THREADS=$THREADS "${EVAL[@]}" --suite bundled=langbrt/assets/default_model \
    --suite full-1200="$RUNS/full/final" --suite no-tca-1200="$RUNS/no-tca/final" \
    --suite no-prior-1200="$RUNS/no-prior/final" --out "benchmarks/results/quality-synthetic-small-$DAY.json"
OMP_NUM_THREADS=$THREADS "${EVAL[@]}" --suite frac-0.01-1200="$RUNS/frac-0.01/final" \
    --suite no-prior-0.01-1200="$RUNS/no-prior-0.01/final" \
    --out "benchmarks/results/quality-synthetic-small-1pct-$DAY.json"
