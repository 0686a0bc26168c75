"""A folder of before/after pairs as a user's camera gives them, to time `langbrt-train --init bundled` on.

    python benchmarks/fine_tune_pairs.py OUT [--pairs 30] [--seed 7]

Writes OUT/source/pNN.{jpg,png} and OUT/target/pNN.{jpg,png}: synthetic-blemish pairs (drawn at 512 px, so
the target is the source retouched in place) upscaled to photo sizes from 600x800 to 4000x3000 (12 MP), four
in five saved as JPEG (quality 92), the fifth as PNG. Why not the synthetic set itself: its 256-px tensors
skip what a fine-tune on real photos pays for, decoding and resizing large files (README: "Training").
Refuses an OUT that exists; the files go to a temporary folder renamed into place.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from langbrt.training.data.synthetic import SyntheticBlemishDataset

SIZES = ((3000, 4000), (4000, 3000), (1200, 1600), (2000, 1500), (800, 800), (1024, 1024), (600, 800), (2448, 3264))
"""(W, H) of the photos, in turn: phone and camera frames, portrait and landscape, and small crops."""

DRAWN_AT = 512  # px of the synthetic pairs before they are upscaled


def photo(image: torch.Tensor, width: int, height: int) -> Image.Image:
    """(3, S, S) in [0, 1] -> an RGB photo of width x height: upscaled to the longer side, centre-cropped."""
    side = max(width, height)
    big = F.interpolate(image[None], size=(side, side), mode="bilinear", align_corners=False)[0]  # (3, L, L)
    top, left = (side - height) // 2, (side - width) // 2
    crop = big[:, top : top + height, left : left + width].clamp(0, 1)  # (3, H, W)
    return Image.fromarray((crop.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))  # (H, W, 3)


def write_pairs(out: Path, count: int, seed: int) -> None:
    data = SyntheticBlemishDataset(count, image_size=DRAWN_AT, seed=seed, flip=False)
    for side in ("source", "target"):
        (out / side).mkdir(parents=True)
    for i in range(count):
        sample = data[i]
        width, height = SIZES[i % len(SIZES)]
        for side in ("source", "target"):
            image = photo(sample[side], width, height)
            if i % 5 == 4:
                image.save(out / side / f"p{i:02d}.png", compress_level=1)
            else:
                image.save(out / side / f"p{i:02d}.jpg", quality=92)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"fine_tune_pairs.py: {args.out} exists; name a new folder", file=sys.stderr)
        return 2
    if args.pairs < 1:
        print(f"fine_tune_pairs.py: --pairs must be at least 1, got {args.pairs}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    write_pairs(staging, args.pairs, args.seed)
    staging.rename(args.out)
    print(f"wrote {args.pairs} pairs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
