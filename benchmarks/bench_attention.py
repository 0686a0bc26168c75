"""Time the fused Triton TCA kernel against the PyTorch reference (eager and torch.compile) on one GPU.

    python benchmarks/bench_attention.py --batch-sizes 1 8 32 --dtypes fp16 bf16 --check
    python benchmarks/bench_attention.py --kernels direct folded ...   # both fused kernels side by side

Shape: the paper preset's latent (64x64, C=96, 3 heads, 8x8 windows, 9 map channels) in a shifted block.
Each row reports the median and p90 of per-iteration CUDA-event timings, the achieved bandwidth and
throughput from the formulas below, and their fraction of the card's peak (null for unknown cards).
Every implementation is timed twice: called from Python (what a caller sees, launch overhead included) and
as the replay of a CUDA graph of `--calls-per-graph` back-to-back calls (default 10), per call ("+graph"
rows: GPU time, which is what the roofline is about; as `triton.testing.do_bench_cudagraph` and the sweep
time it). A graph of one call (`--calls-per-graph 1`, what the runtime's batch-1 CUDA graphs get, and how
the H100 table of 2026-11-26 was measured) adds the graph's own launch, ~3 us on the H100 against a 34 us
kernel. Those calls all read the same inputs, still in L2 from the call before where they fit (H100: 50 MB;
a call moves 13 MB at batch 8 in fp16, 53 MB at batch 32), so at small batches their GB/s overstate what
HBM delivers. `--cold-l2` adds a third row per implementation, "+graph-cold": a graph whose calls cycle
through enough copies of x and the map features (input_sets in the JSON) to touch 4x the card's L2 between
two reads of one copy (cold_l2.py), at least `--calls-per-graph` calls in whole cycles; the weights and
alpha are shared by the copies (small, they sit in L2 as in the model).
`--kernels` picks the fused kernels to time (LANGBRT_TCA_KERNEL values; default the default kernel, row
"triton"; another kernel's rows are "triton-<kernel>"). Results are printed as a table and written as JSON
with the card, date and software versions.

Bytes moved (the minimum a fused forward must move; what the kernel is measured against):
    bytes = e * (B*H*W*(C + Cm)          read x and the map features
                 + 2*C*C + 2*C*Cm + 4*C + heads   read Wq, Wo, Wk, Wv, the four biases and alpha once
                 + B*H*W*C)              write the output
FLOPs (2 per multiply-add, over the B*Hp*Wp padded tokens, N = w*w keys per window):
    per token = 2*C*C (Q proj) + 2*2*C*Cm (K, V proj) + 2*N*C (Q K^T, all heads) + 2*N*C (A V) + 2*C*C (out proj)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from cold_l2 import graph_calls, input_sets, l2_cache_bytes, rotation

from langbrt.atomic import atomic_write_text
from langbrt.config import LangBRTConfig
from langbrt.kernels import TCAParams, windowed_sigmoid_cross_attention_reference
from langbrt.kernels.dispatch import environ_set
from langbrt.kernels.tca_choices import DEFAULT_KERNEL, KERNEL_ENV_VAR, KernelChoice, fast_sigmoid_for
from langbrt.kernels.windows import padded_size

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
COLD = "+graph-cold"  # the suffix of a row whose graph cycles through copies of the inputs (--cold-l2)
CHECK_TOLERANCE = {"fp32": 1e-4, "fp16": 3e-3, "bf16": 2e-2}  # x max |reference|, vs an fp32 reference

# (substring of torch.cuda.get_device_name, HBM bytes/s, dense fp16/bf16 FLOP/s); the first match wins.
PEAKS: tuple[tuple[str, float, float], ...] = (
    ("H200", 4.8e12, 989e12),
    ("H100 80GB HBM3", 3.35e12, 989e12),  # H100 SXM
    ("H100 SXM", 3.35e12, 989e12),
)


@dataclass(frozen=True)
class Shape:
    height: int
    width: int
    channels: int
    map_channels: int
    heads: int
    window: int
    shift: int

    @classmethod
    def paper(cls) -> Shape:
        """The TCA attention of the paper preset's shifted blocks."""
        cfg = LangBRTConfig.paper()
        return cls(cfg.latent_size, cfg.latent_size, cfg.embed_dim, cfg.map_feature_dim, cfg.num_heads,
                   cfg.window_size, cfg.window_size // 2)


@dataclass(frozen=True)
class Row:
    impl: str
    batch: int
    dtype: str
    median_ms: float
    p90_ms: float
    gb_per_s: float
    tflop_per_s: float
    fraction_peak_bandwidth: float | None
    fraction_peak_flops: float | None
    kernel: str | None = None  # the fused kernel (LANGBRT_TCA_KERNEL) of a triton row
    sigmoid: str | None = None  # the sigmoid form a triton row computed: "exact" or "tanh" (SigmoidChoice)
    input_sets: int | None = None  # the copies of x and the map features a +graph-cold row cycled through


def bytes_moved(shape: Shape, batch: int, element_size: int) -> int:
    pixels = batch * shape.height * shape.width
    C, Cm = shape.channels, shape.map_channels
    weights = 2 * C * C + 2 * C * Cm + 4 * C + shape.heads
    return element_size * (pixels * (C + Cm) + weights + pixels * C)


def flops(shape: Shape, batch: int) -> int:
    tokens = batch * padded_size(shape.height, shape.window) * padded_size(shape.width, shape.window)
    C, Cm, N = shape.channels, shape.map_channels, shape.window * shape.window
    return tokens * (2 * C * C + 4 * C * Cm + 2 * N * C + 2 * N * C + 2 * C * C)


def card_peaks(name: str, dtype: str) -> tuple[float | None, float | None]:
    """(bytes/s, FLOP/s) peaks of the card; FLOP/s only for fp16/bf16 (tensor-core dense peak)."""
    for key, bandwidth, tensor_flops in PEAKS:
        if key in name:
            return bandwidth, (tensor_flops if dtype in ("fp16", "bf16") else None)
    return None, None


def make_inputs(shape: Shape, batch: int, dtype: torch.dtype, seed: int = 0, device: str = "cuda"):
    """Random x, map features and parameters on `device`, scaled so the sigmoid is not saturated."""
    g = torch.Generator().manual_seed(seed)
    C, Cm = shape.channels, shape.map_channels

    def r(*size: int, fan_in: int = 4) -> torch.Tensor:
        return (torch.randn(*size, generator=g) / fan_in**0.5).to(device, dtype)

    params = TCAParams(r(C, C, fan_in=C), r(C), r(C, Cm, fan_in=Cm), r(C), r(C, Cm, fan_in=Cm), r(C),
                       r(C, C, fan_in=C), r(C), (torch.rand(shape.heads, generator=g) + 0.5).to(device, dtype))
    x = torch.randn(batch, shape.height, shape.width, C, generator=g).to(device, dtype)  # (B, H, W, C)
    map_features = torch.rand(batch, shape.height, shape.width, Cm, generator=g).to(device, dtype)  # (B, H, W, Cm)
    return x, map_features, params


def cuda_event_times_ms(fn: Callable[..., torch.Tensor], fn_args: tuple, warmup: int, iters: int) -> list[float]:
    """Per-iteration times of fn(*fn_args) from CUDA events (one pair per iteration, one sync at the end)."""
    for _ in range(warmup):
        fn(*fn_args)
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in events:
        start.record()
        fn(*fn_args)
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]


def cuda_graph_times_ms(fn: Callable[..., torch.Tensor], arg_sets: list[tuple], warmup: int, iters: int,
                        calls_per_graph: int = 1) -> list[float] | str:
    """Per-call times of a CUDA graph of `calls_per_graph` calls, call i being fn(*arg_sets[i % k]) (each
    replay's time divided by the calls), or why it could not be captured."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up (autotuning, compilation) off the capture stream
        for _ in range(3):
            fn(*arg_sets[0])
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for fn_args in rotation(arg_sets, calls_per_graph):
                fn(*fn_args)
    except RuntimeError as err:
        return f"capture failed: {str(err).splitlines()[0]}"
    return [t / calls_per_graph for t in cuda_event_times_ms(graph.replay, (), warmup, iters)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def check(kernel: Callable, shape: Shape, batch: int, dtype_name: str) -> str | None:
    """None when the kernel matches the fp32 reference at this batch/dtype, else a one-line reason."""
    x, mf, params = make_inputs(shape, batch, torch.float32)
    args = (shape.heads, shape.window, shape.shift)
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, *args)
    dtype = DTYPES[dtype_name]
    got = kernel(x.to(dtype), mf.to(dtype), TCAParams(*(t.to(dtype) for t in params.tensors())), *args)
    err = (got.float() - expected).abs().max().item()
    bound = CHECK_TOLERANCE[dtype_name] * expected.abs().max().item()
    return None if err <= bound else f"batch {batch} {dtype_name}: max error {err:.3g} > {bound:.3g}"


def fused_kernel(kernel: str | None) -> contextlib.AbstractContextManager:
    """LANGBRT_TCA_KERNEL set to `kernel` (None: left alone) while a triton row is timed; the launch reads
    it when it is called, or captured into a CUDA graph."""
    return contextlib.nullcontext() if kernel is None else environ_set(KERNEL_ENV_VAR, kernel)


def sigmoid_form(kernel: Callable, form: str | None) -> Callable:
    """The fused kernel computing sigmoid `form` ("exact" / "tanh"); None: the form the model would pick
    for the inputs (LANGBRT_TCA_SIGMOID, tca_choices.SigmoidChoice)."""
    return kernel if form is None else functools.partial(kernel, fast_sigmoid=form == "tanh")


def form_suffix(form: str | None) -> str:
    """A triton row's name suffix for a sigmoid form asked for explicitly ("" for the model's default)."""
    return f"-{form}" if form else ""


def triton_row_name(kernel: str) -> str:
    return "triton" if kernel == DEFAULT_KERNEL.value else f"triton-{kernel}"


def run(args: argparse.Namespace) -> int:
    import triton

    from langbrt.kernels.tca_triton import windowed_sigmoid_cross_attention_triton as kernel

    shape = Shape.paper()
    card = torch.cuda.get_device_name()
    l2_bytes = l2_cache_bytes(torch.cuda.get_device_properties())
    if args.check:
        failures = []
        forms = [None, *args.sigmoid_forms]
        for name in args.kernels:
            with fused_kernel(name):
                failures += [f"{name}{form_suffix(form)}, {f}" for form in forms for b in args.batch_sizes
                             for d in args.dtypes if (f := check(sigmoid_form(kernel, form), shape, b, d))]
        if failures:
            print("kernel does not match the reference: " + "; ".join(failures), file=sys.stderr)
            return 1
        print(f"check: {', '.join(args.kernels)} match the reference for every batch size and dtype")

    compiled_reference = torch.compile(windowed_sigmoid_cross_attention_reference, dynamic=False)
    # name -> (callable, fused kernel, sigmoid form asked for: None = the model's default for the inputs)
    impls: dict[str, tuple[Callable, str | None, str | None]] = {
        triton_row_name(k) + form_suffix(form): (sigmoid_form(kernel, form), k, form)
        for form in (None, *args.sigmoid_forms) for k in args.kernels}
    impls |= {"eager": (windowed_sigmoid_cross_attention_reference, None, None),
              "compile": (compiled_reference, None, None)}
    out = args.out or Path("benchmarks/results") / f"attention-{slug(card)}-{dt.date.today().isoformat()}.json"
    report = {
        "card": card, "date": dt.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
        "triton": triton.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "shape": asdict(shape), "warmup": args.warmup, "iters": args.iters, "calls_per_graph": args.calls_per_graph,
        "l2_cache_bytes": l2_bytes,
        "formulas": {"bytes": "e*(B*H*W*(2C+Cm) + 2C^2 + 2C*Cm + 4C + heads)",
                     "flops": "B*Hp*Wp*(4C^2 + 4C*Cm + 4*w*w*C)"},
        "rows": [], "failures": {},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{card}: H=W={shape.height} C={shape.channels} Cm={shape.map_channels} heads={shape.heads} "
          f"window={shape.window} shift={shape.shift}")
    print(HEADER)
    with torch.no_grad():
        for dtype_name in args.dtypes:
            for batch in args.batch_sizes:
                x, mf, params = make_inputs(shape, batch, DTYPES[dtype_name])
                n_bytes, n_flops = bytes_moved(shape, batch, x.element_size()), flops(shape, batch)
                peak_bw, peak_flops = card_peaks(card, dtype_name)
                call_args = (x, mf, params, shape.heads, shape.window, shape.shift)
                cold_sets = cold_input_sets(call_args, n_bytes, l2_bytes) if args.cold_l2 else []
                default_form = "tanh" if fast_sigmoid_for(x) else "exact"
                for impl_name, (impl, kernel_name, form) in impls.items():
                    with fused_kernel(kernel_name):
                        timings = time_all_ways(impl_name, impl, call_args, cold_sets, args)
                    for name, times in timings.items():
                        if isinstance(times, str):
                            report["failures"][f"{name} batch {batch} {dtype_name}"] = times
                            print(f"{name:14} {batch:5d} {dtype_name:5} {times}")
                            continue
                        median = statistics.median(times)
                        bw, fl = n_bytes / (median * 1e-3), n_flops / (median * 1e-3)
                        row = Row(name, batch, dtype_name, median, percentile(times, 0.9), bw / 1e9, fl / 1e12,
                                  bw / peak_bw if peak_bw else None, fl / peak_flops if peak_flops else None,
                                  kernel_name, (form or default_form) if kernel_name else None,
                                  len(cold_sets) if name.endswith(COLD) else None)
                        report["rows"].append(asdict(row))
                        print_row(row)
                # written after every batch size, so a run cut short still leaves what it measured
                atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print_speedups(report["rows"])
    print(f"wrote {out}")
    return 0


def cold_input_sets(call_args: tuple, bytes_per_call: int, l2_bytes: int) -> list[tuple]:
    """call_args and copies of it with their own x and map features (the first two arguments; the rest,
    weights included, shared): as many sets as cold_l2.input_sets asks for an L2 of `l2_bytes`."""
    x, mf, *shared = call_args
    copies = input_sets(bytes_per_call, l2_bytes) - 1
    return [call_args] + [(x.clone(), mf.clone(), *shared) for _ in range(copies)]  # x (B, H, W, C), mf (B, H, W, Cm)


def time_all_ways(impl_name: str, impl: Callable, call_args: tuple, cold_sets: list[tuple],
                  args: argparse.Namespace) -> dict[str, list[float] | str]:
    """Called from Python, replayed from a CUDA graph and, given `cold_sets`, from a graph cycling through
    them (whole cycles, at least --calls-per-graph calls); a failure becomes its one-line reason."""
    timings: dict[str, list[float] | str] = {}
    graph_timer = functools.partial(cuda_graph_times_ms, calls_per_graph=args.calls_per_graph)
    ways = [(impl_name, cuda_event_times_ms, call_args), (f"{impl_name}+graph", graph_timer, [call_args])]
    if cold_sets:
        cold_timer = functools.partial(cuda_graph_times_ms,
                                       calls_per_graph=graph_calls(args.calls_per_graph, len(cold_sets)))
        ways.append((impl_name + COLD, cold_timer, cold_sets))
    for name, timer, timer_args in ways:
        try:
            timings[name] = timer(impl, timer_args, args.warmup, args.iters)
        except Exception as err:  # e.g. an inductor failure: keep timing the other rows
            timings[name] = f"failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return timings


def print_speedups(rows: list[dict]) -> None:
    """The issue's goals, read off the rows: kernel vs eager and vs torch.compile, same timing mode."""
    median = {(r["impl"], r["batch"], r["dtype"]): r["median_ms"] for r in rows}
    for (impl, batch, dtype), ms in sorted(median.items()):
        if not impl.startswith("triton"):
            continue
        name, _, graph = impl.partition("+")
        mode = f"+{graph}" if graph else ""
        ratios = [f"{base}: {median[(base + mode, batch, dtype)] / ms:.2f}x" for base in ("eager", "compile")
                  if (base + mode, batch, dtype) in median]
        print(f"speed-up of {name}{mode or ' (called)'} at batch {batch} {dtype}: " + ", ".join(ratios))


HEADER = (f"{'impl':14} {'batch':>5} {'dtype':5} {'median ms':>10} {'p90 ms':>9} {'GB/s':>8} {'TFLOP/s':>8} "
          f"{'%peak BW':>8} {'%peak FLOP':>10}")


def percent(fraction: float | None, width: int) -> str:
    return f"{100 * fraction:{width}.2f}" if fraction is not None else f"{'-':>{width}}"


def print_row(row: Row) -> None:
    print(f"{row.impl:14} {row.batch:5d} {row.dtype:5} {row.median_ms:10.4f} {row.p90_ms:9.4f} "
          f"{row.gb_per_s:8.1f} {row.tflop_per_s:8.2f} {percent(row.fraction_peak_bandwidth, 8)} "
          f"{percent(row.fraction_peak_flops, 10)}")


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower().replace("nvidia ", "")).strip("-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32], help="batch sizes to time")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp16", "bf16"],
                        help="input dtypes to time")
    parser.add_argument("--warmup", type=int, default=25, help="untimed iterations before timing")
    parser.add_argument("--iters", type=int, default=200, help="timed iterations per row")
    parser.add_argument("--calls-per-graph", type=int, default=10,
                        help="calls captured in each +graph row's CUDA graph; times are per call (1: one call)")
    parser.add_argument("--cold-l2", action="store_true",
                        help="also time each implementation as a graph whose calls cycle through copies of the "
                        "inputs 4x the L2 size in all (rows <impl>+graph-cold): no call finds its inputs in L2")
    parser.add_argument("--check", action="store_true", help="verify the kernel against the reference first")
    parser.add_argument("--kernels", nargs="+", choices=[k.value for k in KernelChoice], default=[DEFAULT_KERNEL.value],
                        help="fused kernels to time (LANGBRT_TCA_KERNEL values; default: the default kernel)")
    parser.add_argument("--sigmoid-forms", nargs="+", choices=("exact", "tanh"), default=[],
                        help="also time each kernel computing these sigmoid forms (rows <kernel>-exact, "
                        "<kernel>-tanh); the plain rows compute the model's default form (tanh in half precision)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default benchmarks/results/attention-<gpu>-<date>.json)")
    args = parser.parse_args(argv)
    if args.calls_per_graph < 1:
        parser.error(f"--calls-per-graph must be at least 1, not {args.calls_per_graph}")
    if not torch.cuda.is_available():
        print("bench_attention: no CUDA device; run this on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
