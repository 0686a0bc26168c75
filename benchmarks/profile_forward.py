"""How long one LangBRT forward takes on the GPU and where the time goes: torch.profiler's CUDA kernel table.

    python benchmarks/profile_forward.py --preset paper --precision fp16 --batch 8 --out profile.txt
    python benchmarks/profile_forward.py --compile ...    # the same forward through torch.compile
    python benchmarks/profile_forward.py --channels-last  # model and images in NHWC memory format
    python benchmarks/profile_forward.py --backend-run    # end to end: TorchBackend.run(...).image.cpu()

Random weights and random prompt embeddings (time does not depend on their values), the model's
pre-defined prompts. `--warmup` forwards (with --compile, the first one compiles; its time is printed),
then `--iters` forwards timed with CUDA events (median and p90 ms), then one profiled forward. Written for
the GPU to-do list (benchmarks/gpu_session.sh): the table says which operators an end-to-end speed-up has
to attack, --compile measures what inductor's fusion buys and --channels-last what NHWC activations buy
(no cuDNN layout transposes around the convolutions, and the TCA blocks' (B, H, W, C) view is contiguous
as it is) before the runtime adopts either.

--backend-run times what `langbrt-bench --backend torch` times instead, `TorchBackend.run` on CPU float32
images and the copy of the fp32 image back to the host (p50 and p90 ms), and profiles one such call with CPU
and CUDA activities. Why: the bench measured twice the forward's time or more (26.5 against 12.0 ms at
batch 8 on the H100); the stage table (`RunStage`, the ranges `run` marks) says how many ms of host and
device time each step of a call takes, and the two operator tables which host copies (pin_memory, copy_,
cudaHostAlloc, cudaMemcpyAsync) and kernels fill them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.autograd.profiler_util import FunctionEvent
from torch.profiler import ProfilerActivity, profile, record_function

from langbrt import LangBRT, LangBRTConfig
from langbrt.atomic import atomic_write_text
from langbrt.cli_args import positive_int
from langbrt.runtime.backends.torch_backend import RunStage, TorchBackend
from langbrt.text import PromptBank

PRESETS = {"paper": LangBRTConfig.paper, "small": LangBRTConfig.small, "tiny": LangBRTConfig.tiny}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
CALL_RANGE = "backend.run(images).image.cpu()"  # the whole call langbrt-bench times
COPY_BACK_RANGE = "image.cpu()"
REST_OF_RUN = "run, outside its stages"
STAGE_NOTES = {
    CALL_RANGE: "the whole call, as langbrt-bench times it",
    RunStage.PROMPT_TABLE.value: "prompt de-duplication and embedding lookup, on the host",
    RunStage.TO_DEVICE.value: "pin_memory, host -> device copy, cast to the model dtype",
    RunStage.FORWARD.value: "LangBRT.forward_table (a CUDA graph replay at batch 1)",
    RunStage.FLOAT_OUTPUTS.value: "image, mask and maps cast to float32",
    RunStage.REGROUP_MAPS.value: "maps gathered into each image's prompt order",
    REST_OF_RUN: "input checks, and what no range covers",
    COPY_BACK_RANGE: "device -> host copy of the fp32 image (waits for the queued work)",
}


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


def random_backend(config: LangBRTConfig, device: str, precision: str) -> TorchBackend:
    """`random_model` in a TorchBackend set up as `TorchBackend.load` sets one up (dtype, eval, frozen bank)."""
    model = random_model(config).to(device, DTYPES[precision]).eval()
    model.prompt_bank.freeze()
    return TorchBackend(model, device, precision)


def end_to_end_call(backend: TorchBackend, batch: int) -> Callable[[], torch.Tensor]:
    """One call as langbrt-bench's `time_backend` makes it: CPU float32 images, every pre-defined prompt, the
    fp32 image copied back (which waits for the device); ranges split the copy back from `run`."""
    S = backend.image_size
    images = torch.rand(batch, 3, S, S, generator=torch.Generator().manual_seed(0))  # (B, 3, S, S) on the host
    prompts = [backend.predefined_prompts] * batch

    def call() -> torch.Tensor:
        with record_function(CALL_RANGE):
            out = backend.run(images, prompts)
            with record_function(COPY_BACK_RANGE):
                return out.image.cpu()

    return call


def call_times_ms(call: Callable[[], object], iters: int) -> list[float]:
    """Sorted wall-clock times of `iters` calls; each call ends on the host (`.cpu()`), so no sync is needed."""
    times = []
    for _ in range(iters):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e3)
    return sorted(times)


def median_and_p90(sorted_ms: Sequence[float]) -> tuple[float, float]:
    """The median and 90th percentile (nearest rank) of sorted times, as both modes print them."""
    return sorted_ms[len(sorted_ms) // 2], sorted_ms[min(len(sorted_ms) - 1, round(0.9 * (len(sorted_ms) - 1)))]


@dataclass(frozen=True)
class StageTime:
    """One row of the --backend-run stage table."""

    name: str
    host_ms: float  # wall time on the host inside the range, waits for the device included
    device_ms: float  # kernels and copies the range launched (0 without CUDA activity)


def stage_times(events: Iterable[FunctionEvent]) -> list[StageTime]:
    """The profiled call, its stages in call order, what `run` spent outside them, and the copy back.

    `events`: `profile.events()`. Only host-side events count (a range also appears on the GPU's timeline
    under its name); a range's device time is that of everything launched inside it."""
    host: dict[str, float] = {}
    device: dict[str, float] = {}
    for event in events:
        if event.device_type == DeviceType.CPU and event.name in STAGE_NOTES:
            host[event.name] = host.get(event.name, 0.0) + event.cpu_time_total / 1e3
            device[event.name] = device.get(event.name, 0.0) + event.device_time_total / 1e3
    stages = [stage.value for stage in RunStage]
    missing = [name for name in (CALL_RANGE, COPY_BACK_RANGE, *stages) if name not in host]
    assert not missing, f"ranges missing from the profile: {missing}"
    rest = StageTime(REST_OF_RUN, host[CALL_RANGE] - host[COPY_BACK_RANGE] - sum(host[n] for n in stages),
                     device[CALL_RANGE] - device[COPY_BACK_RANGE] - sum(device[n] for n in stages))
    rows = [StageTime(name, host[name], device[name]) for name in (CALL_RANGE, *stages)]
    return rows + [rest, StageTime(COPY_BACK_RANGE, host[COPY_BACK_RANGE], device[COPY_BACK_RANGE])]


def format_stage_table(rows: Sequence[StageTime]) -> str:
    """Host and device ms per stage, the whole call first; the stages below it add up to it."""
    width = max(len(row.name) for row in rows) + 2
    lines = [f"{'stage':<{width}}{'host ms':>10}{'device ms':>11}  what"]
    for i, row in enumerate(rows):
        name = row.name if i == 0 else f"  {row.name}"
        lines.append(f"{name:<{width}}{row.host_ms:>10.2f}{row.device_ms:>11.2f}  {STAGE_NOTES[row.name]}")
    return "\n".join(lines)


def backend_run_report(backend: TorchBackend, preset: str, batch: int, warmup: int, iters: int, rows: int) -> str:
    """Time `iters` end-to-end calls after `warmup`, then profile one: the header line, the stage table and
    the operator tables by host time and by device time (without CUDA, by host time only)."""
    call = end_to_end_call(backend, batch)
    on_cuda = torch.device(backend.device).type == "cuda"
    started = time.perf_counter()
    call()
    first_s = time.perf_counter() - started
    for _ in range(warmup - 1):
        call()
    times = call_times_ms(call, iters)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities) as prof:
        call()
    p50, p90 = median_and_p90(times)
    device_name = torch.cuda.get_device_name(backend.device) if on_cuda else "CPU"
    header = (f"# {device_name}, torch {torch.__version__}: {preset} preset, {backend.precision}, batch {batch}, "
              f"TorchBackend.run(CPU float32 images).image.cpu(): first call {first_s:.1f} s, then p50 {p50:.2f} ms, "
              f"p90 {p90:.2f} ms over {iters} calls; one profiled call (profiling adds host time) by stage:")
    averages = prof.key_averages()
    sorts = {"host": "cpu_time_total"} | ({"device": "cuda_time_total"} if on_cuda else {})
    tables = [f"operators by {what} time:\n{averages.table(sort_by=key, row_limit=rows, max_name_column_width=60)}"
              for what, key in sorts.items()]
    return "\n\n".join([header + "\n" + format_stage_table(stage_times(prof.events())), *tables])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    parser.add_argument("--precision", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--batch", type=positive_int, default=8)
    parser.add_argument("--warmup", type=positive_int, default=3, help="untimed forwards, the first included")
    parser.add_argument("--iters", type=positive_int, default=20, help="timed forwards")
    parser.add_argument("--compile", action="store_true", help="run the forward through torch.compile")
    parser.add_argument("--channels-last", action="store_true", help="model and images in channels_last format")
    parser.add_argument("--rows", type=positive_int, default=20, help="operators listed")
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--backend-run", action="store_true",
                        help="time and profile TorchBackend.run(CPU images).image.cpu(), as langbrt-bench does, "
                        "instead of the forward alone")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.backend_run and (args.compile or args.channels_last):
        parser.error("--backend-run times the torch backend as the runtime runs it: no --compile or --channels-last")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("profile_forward: no CUDA device; run this on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    config = PRESETS[args.preset]()
    if args.backend_run:
        backend = random_backend(config, "cuda", args.precision)
        report = backend_run_report(backend, args.preset, args.batch, args.warmup, args.iters, args.rows)
        print(report)
        if args.out:
            atomic_write_text(args.out, report + "\n")
        return 0
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
    median, p90 = median_and_p90(times)
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
