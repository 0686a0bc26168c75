"""Where one LangBRT forward spends its GPU time: torch.profiler's CUDA kernel table, most expensive first.

    python benchmarks/profile_forward.py --preset paper --precision fp16 --batch 8 --out profile.txt

Random weights and random prompt embeddings (time does not depend on their values), the model's
pre-defined prompts, `--warmup` forwards before the profiled one. Written for the GPU to-do list
(benchmarks/gpu_session.sh): the table says which operators an end-to-end speed-up has to attack.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from langbrt import LangBRT, LangBRTConfig
from langbrt.text import PromptBank

PRESETS = {"paper": LangBRTConfig.paper, "small": LangBRTConfig.small, "tiny": LangBRTConfig.tiny}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def random_model(config: LangBRTConfig) -> LangBRT:
    """A model whose prompt bank holds its pre-defined prompts with random unit embeddings (no text encoder)."""
    texts = list(LangBRT(config).predefined_prompts)
    embeddings = torch.nn.functional.normalize(torch.randn(len(texts), config.text_dim), dim=-1)  # (T, D)
    bank = PromptBank.from_state(texts, embeddings, encoder_name=config.text_encoder, dim=config.text_dim)
    return LangBRT(config, prompt_bank=bank)


def profile_table(model: LangBRT, images: torch.Tensor, warmup: int, rows: int) -> str:
    with torch.inference_mode():
        for _ in range(warmup):
            model(images)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(images)
            torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    parser.add_argument("--precision", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20, help="operators listed")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("profile_forward: no CUDA device; run this on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    config = PRESETS[args.preset]()
    dtype = DTYPES[args.precision]
    model = random_model(config).to("cuda", dtype).eval()
    images = torch.rand(args.batch, 3, config.image_size, config.image_size, device="cuda", dtype=dtype)
    table = profile_table(model, images, args.warmup, args.rows)
    header = (f"# {torch.cuda.get_device_name()}, torch {torch.__version__}: {args.preset} preset, {args.precision}, "
              f"batch {args.batch}, one forward after {args.warmup} warm-ups\n")
    print(header + table)
    if args.out:
        args.out.write_text(header + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
