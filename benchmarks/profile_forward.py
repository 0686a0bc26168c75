"""How long one LangBRT forward takes on the GPU and where the time goes: torch.profiler's CUDA kernel table.

    python benchmarks/profile_forward.py --preset paper --precision fp16 --batch 8 --out profile.txt
    python benchmarks/profile_forward.py --compile ...    # the same forward through torch.compile
    python benchmarks/profile_forward.py --channels-last  # model and images in NHWC memory format

Random weights and random prompt embeddings (time does not depend on their values), the model's
pre-defined prompts. `--warmup` forwards (with --compile, the first one compiles; its time is printed),
then `--iters` forwards timed with CUDA events (median and p90 ms), then one profiled forward. Written for
the GPU to-do list (benchmarks/gpu_session.sh): the table says which operators an end-to-end speed-up has
to attack, --compile measures what inductor's fusion buys and --channels-last what NHWC activations buy
(no cuDNN layout transposes around the convolutions, and the TCA blocks' (B, H, W, C) view is contiguous
as it is) before the runtime adopts either.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from langbrt import LangBRT, LangBRTConfig
from langbrt.atomic import atomic_write_text
from langbrt.text import PromptBank

PRESETS = {"paper": LangBRTConfig.paper, "small": LangBRTConfig.small, "tiny": LangBRTConfig.tiny}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def random_model(config: LangBRTConfig) -> LangBRT:
    """A model whose prompt bank holds its pre-defined prompts with random unit embeddings (no text encoder)."""
    texts = list(LangBRT(config).predefined_prompts)
    embeddings = torch.nn.functional.normalize(torch.randn(len(texts), config.text_dim), dim=-1)  # (T, D)
    bank = PromptBank.from_state(texts, embeddings, encoder_name=config.text_encoder, dim=config.text_dim)
    return LangBRT(config, prompt_bank=bank)


def table_forward(model: LangBRT, batch: int, compile_model: bool) -> Callable[[torch.Tensor], object]:
    """images -> `forward_table` output with every image asking for all pre-defined prompts; the prompt table is
    built once, on the model's device, so the timed calls are the network alone (as in the torch backend)."""
    parameter = next(model.parameters())
    table = model.prompt_table([model.predefined_prompts] * batch, batch)
    embeddings = table.embeddings.to(parameter.device, parameter.dtype)  # (T, D)
    index = table.predefined_index.to(parameter.device)  # (T,)
    weights = table.weights.to(parameter.device, parameter.dtype)  # (B, T)
    network = torch.compile(model.forward_table) if compile_model else model.forward_table
    return lambda images: network(images, embeddings, index, weights)


def forward_times_ms(forward: Callable[[torch.Tensor], object], images: torch.Tensor, iters: int) -> list[float]:
    """Per-forward CUDA-event times (one event pair per call, one sync at the end)."""
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in events:
        start.record()
        forward(images)
        end.record()
    torch.cuda.synchronize()
    return sorted(start.elapsed_time(end) for start, end in events)


def profile_table(forward: Callable[[torch.Tensor], object], images: torch.Tensor, rows: int) -> str:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        forward(images)
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    parser.add_argument("--precision", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20, help="timed forwards")
    parser.add_argument("--compile", action="store_true", help="run the forward through torch.compile")
    parser.add_argument("--channels-last", action="store_true", help="model and images in channels_last format")
    parser.add_argument("--rows", type=int, default=20, help="operators listed")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("profile_forward: no CUDA device; run this on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    config = PRESETS[args.preset]()
    dtype = DTYPES[args.precision]
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = random_model(config).to("cuda", dtype, memory_format=memory_format).eval()
    images = torch.rand(args.batch, 3, config.image_size, config.image_size, device="cuda", dtype=dtype)
    images = images.contiguous(memory_format=memory_format)  # (B, 3, S, S)
    forward = table_forward(model, args.batch, args.compile)
    with torch.inference_mode():
        started = time.perf_counter()
        forward(images)
        torch.cuda.synchronize()
        first_s = time.perf_counter() - started
        for _ in range(args.warmup - 1):
            forward(images)
        times = forward_times_ms(forward, images, args.iters)
        table = profile_table(forward, images, args.rows)
    median, p90 = times[len(times) // 2], times[min(len(times) - 1, round(0.9 * (len(times) - 1)))]
    header = (f"# {torch.cuda.get_device_name()}, torch {torch.__version__}: {args.preset} preset, {args.precision}, "
              f"batch {args.batch}, {'torch.compile' if args.compile else 'eager'}"
              f"{', channels_last' if args.channels_last else ''}: first forward {first_s:.1f} s, "
              f"then median {median:.2f} ms, p90 {p90:.2f} ms over {args.iters} forwards\n")
    print(header + table)
    if args.out:
        atomic_write_text(args.out, header + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
