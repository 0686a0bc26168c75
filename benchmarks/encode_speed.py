"""How long encoding a reply takes, Pillow's defaults against `encode_image(fast=True)` (what langbrt-serve
sends), per format: milliseconds, bytes and PSNR against the float image (uint8 quantisation included).

    python benchmarks/encode_speed.py PHOTO [--size 512] [--repeats 10]

The photo is resized to --size x --size (the model's input size: what a low-latency client sends). Runs
on the CPU, where a server encodes whatever GPU ran the model; a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from langbrt.io import encode_image, read_image, read_image_bytes
from langbrt.training.metrics import psnr

FORMATS = ("jpeg", "png", "webp")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    image = read_image(args.photo)  # (3, H, W)
    image = torch.nn.functional.interpolate(image[None], size=(args.size, args.size), mode="bilinear",
                                            antialias=True)[0].clamp(0, 1)  # (3, S, S)
    print(f"{'format':>6} {'fast':>5} {'ms':>7} {'bytes':>9} {'PSNR dB':>8}")
    for fmt in FORMATS:
        for fast in (False, True):
            started = time.perf_counter()
            for _ in range(args.repeats):
                data = encode_image(image, fmt, fast=fast)
            ms = (time.perf_counter() - started) / args.repeats * 1e3
            quality = psnr(read_image_bytes(data)[None], image[None]).item()  # (1, 3, S, S) each
            print(f"{fmt:>6} {str(fast):>5} {ms:7.1f} {len(data):9d} {quality:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
