#!/usr/bin/env bash
# Reproduces the model bundled in langbrt/assets/default_model (the one `langbrt-infer` uses when no
# --model is given). CPU only, about 75 minutes on one core in three stages of 1,200 steps (each later stage resumes
# the one before with --steps 2400, then 3600: a warm restart of the cosine schedule); no download, no weights files:
# synthetic blemishes on procedural faces plus the public-domain example face in examples/.
# The perceptual (VGG-19), semantic (Alpha-CLIP) and adversarial terms are off: no offline weights exist
# for the first two, and the GAN term is left off to keep each CPU step cheap (its effect on this model was
# not measured). Usage:
#   bash training/recipes/bundled_model.sh [OUTPUT_DIR]      (then copy OUTPUT_DIR/final)
set -euo pipefail
out="${1:-runs/bundled}"
langbrt-train --data synthetic --preset small --seed 0 \
  --real-face examples/astronaut_face.regions.json --real-fraction 0.3 --synthetic-length 20000 \
  --steps 1200 --batch-size 4 --lr 2e-3 --warmup-steps 50 \
  --l1-weight 20 --detection-weight 1 --component-weight 1 \
  --adversarial-weight 0 --perceptual-weight 0 --semantic-weight 0 \
  --ema-decay 0.999 --checkpoint-every 300 --image-every 300 --threads 1 \
  --output "$out"
langbrt-train --resume "$out/final" --steps 2400 --output "$out" --threads 1
langbrt-train --resume "$out/final" --steps 3600 --output "$out" --threads 1
