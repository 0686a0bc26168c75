"""Launch the fused TCA kernels at the paper shape once per (kernel, MMA path, dtype, launch config), each alone.

    python benchmarks/kernel_sweep.py --batch 8 32 --out sweep.json

Why a process per variant: the autotuner times every warp count inside one process, and a variant that
faults (an illegal memory access poisons the CUDA context for good) takes the whole process down and hides
which variant it was. Each child launches exactly one variant (kernel and MMA path via LANGBRT_TCA_KERNEL
and LANGBRT_TCA_MMA; warps, register cap, head-loop pipelining and persistence via the launch), checks it
against the fp32 PyTorch reference with the output memory poisoned with NaN first, then, in a second pass
run one child at a time, times it at every batch size as a CUDA-graph replay (GPU time, no launch
overhead); with `--cold-l2` also as the replay of a graph whose calls cycle through copies of the inputs
touching 4x the card's L2 (cold_l2.py: no call finds its inputs in L2 from the call before, which at batch
8 flatters the kernel against the HBM roofline), "cold_median_us" next to "median_us" in the JSON and
"cold @B" columns in the table (about twice the timing pass's time). The variants are every autotuned
launch config and a few candidates the autotuner does not time yet (CANDIDATE_CONFIGS; starred in the
table, "autotuned": false in the JSON). The parent prints ok / wrong / crashed, the max error and the
median times per variant, and rewrites the JSON after every step, so a sweep cut short by its time limit
keeps what it measured; it ends with the fastest correct variant per dtype and batch size and its fraction
of the card's memory roofline (and, with `--cold-l2`, that variant's cold time and fraction)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from bench_attention import CHECK_TOLERANCE, DTYPES, Shape, bytes_moved, card_peaks, cold_input_sets, make_inputs
from cold_l2 import Rotating, l2_cache_bytes

from langbrt.atomic import atomic_write_text
from langbrt.kernels import tca_aot
from langbrt.kernels.tca_choices import MMA_PATHS, KernelChoice, MmaChoice
from langbrt.kernels.tca_launch_configs import LAUNCH_CONFIGS, LaunchConfig
from langbrt.kernels.windows import padded_size

RESULT_PREFIX = "RESULT "
PTX_PREFIX = "PTX "
CHILD_TIMEOUT_S = 150


@dataclass(frozen=True)
class Variant:
    kernel: str  # LANGBRT_TCA_KERNEL
    mma: str  # LANGBRT_TCA_MMA
    dtype: str
    num_warps: int
    maxnreg: int | None = None  # ptxas register cap per thread; None: ptxas decides
    head_stages: int | None = None  # the folded kernel's head-loop pipelining depth; None: the direct kernel
    programs_per_sm: int | None = None  # the folded kernel's persistent launch; None: a program per window
    output_after_heads: bool = False  # the folded kernel's output projection after its last head

    def launch_config(self) -> LaunchConfig:
        return LaunchConfig(self.num_warps, self.maxnreg, self.head_stages, self.programs_per_sm,
                            self.output_after_heads)

    @classmethod
    def of(cls, kernel: str, mma: str, dtype: str, config: LaunchConfig) -> Variant:
        return cls(kernel, mma, dtype, config.num_warps, config.maxnreg, config.head_stages, config.programs_per_sm,
                   config.output_after_heads)

    def child_args(self) -> list[str]:
        """This variant as `--child` arguments (CHILD_FIELDS; 0 for an unset number or False)."""
        return [self.kernel, self.mma, self.dtype, str(self.num_warps), str(self.maxnreg or 0),
                str(self.head_stages or 0), str(self.programs_per_sm or 0), str(int(self.output_after_heads))]

    @classmethod
    def from_child_args(cls, args: list[str]) -> Variant:
        """The inverse of `child_args`; a launch config that cannot exist is a ValueError."""
        kernel, mma, dtype, warps, maxnreg, head_stages, programs_per_sm, output_after_heads = args
        variant = cls(kernel, mma, dtype, int(warps), int(maxnreg) or None, int(head_stages) or None,
                      int(programs_per_sm) or None, bool(int(output_after_heads)))
        variant.launch_config()
        return variant


ALL_KERNELS = tuple(k.value for k in KernelChoice)
ALL_DTYPES = ("fp16", "bf16", "fp32")
CHILD_FIELDS = ("KERNEL", "MMA", "DTYPE", "WARPS", "MAXNREG", "HEAD_STAGES", "PROGRAMS_PER_SM", "OUTPUT_AFTER_HEADS")


@dataclass
class Outcome:
    variant: Variant
    status: str  # "ok" | "wrong" | "crashed" | "timeout"
    max_error: float | None = None
    bound: float | None = None
    median_us: dict[int, float] | None = None  # batch size -> median CUDA-graph replay time
    detail: str = ""
    mma_instructions: dict[str, int] | None = None  # counted in the PTX of the same build
    cold_median_us: dict[int, float] | None = None  # batch size -> the same, calls cycling input sets (--cold-l2)
    input_sets: dict[int, int] | None = None  # batch size -> the input sets those calls cycled through


# Launches the autotuner does not time, swept in fp16 on both MMA paths to see whether they should be.
# Folded, persistent (tca_folded_jit's header): 3 programs per SM at 168 registers and 2 uncapped. Both were
# autotuned until the second H100 sweep of 2026-11-26 timed them slower than the plain launches on both
# paths at batch 8 and 32 (fp16, mma.sync: 12.4 / 42.6 and 10.9 / 39.8 us against 9.4 / 34.7;
# benchmarks/results/kernel-sweep-NVIDIA-H100-80GB-HBM3-2026-11-26-2.json); kept here so a later Triton or
# kernel change that makes them pay shows up. And the output projection after the last head capped at 80
# registers (tca_folded_jit's header): 6 blocks per SM instead of 4 with no spill, yet no faster (H100, exact, wgmma:
# 9.39 / 31.98 us at batch 8 / 32 against 8.51 / 31.85 for the best autotuned launches; H200, tanh: 8.13 /
# 28.91 against 7.29 / 28.66), so it was autotuned for one sweep only. (Two deep capped at 96 registers, 5
# blocks for a 160-256 B spill, ran 39.2 us against 31.8 in the third H100 sweep and was dropped; the head
# loop three deep at 128 registers, a candidate until the fourth sweep, is autotuned now.)
CANDIDATE_CONFIGS = {
    KernelChoice.FOLDED: (LaunchConfig(4, 168, head_stages=1, programs_per_sm=3),
                          LaunchConfig(4, head_stages=1, programs_per_sm=2),
                          LaunchConfig(4, 80, head_stages=1, output_after_heads=True)),
}


def variants(kernels: tuple[str, ...] = ALL_KERNELS, dtypes: tuple[str, ...] = ALL_DTYPES) -> list[Variant]:
    """Each kernel's autotuned launch configs (tca_launch_configs.LAUNCH_CONFIGS) as the autotuner times them
    (`configs_for_dtype`): the 4-warp ones in fp16 and bf16 on each MMA path the kernel builds (MMA_PATHS),
    the wider ones in fp32 (exact FMA maths: the MMA path changes nothing); then the candidates
    (CANDIDATE_CONFIGS) in fp16 on those paths; of `kernels` and `dtypes` only (a device call has 10
    minutes, and a question about one kernel need not wait for the other's rows)."""
    rows = []
    for kernel, configs in LAUNCH_CONFIGS.items():
        rows += [Variant.of(kernel.value, mma.value, dtype, c) for dtype in ("fp16", "bf16")
                 for mma in MMA_PATHS[kernel] for c in configs if c.num_warps == 4]
        rows += [Variant.of(kernel.value, "mma", "fp32", c) for c in configs if c.num_warps >= 8]
    for kernel, configs in CANDIDATE_CONFIGS.items():
        rows += [Variant.of(kernel.value, mma.value, "fp16", c) for mma in MMA_PATHS[kernel] for c in configs]
    return [row for row in rows if row.kernel in kernels and row.dtype in dtypes]


def autotuned(variant: Variant) -> bool:
    """Whether the autotuner times this variant's launch config (else it is a candidate)."""
    return variant.launch_config() in LAUNCH_CONFIGS[KernelChoice(variant.kernel)]


def child_spec(variant: Variant, shape: Shape, fast_sigmoid: bool) -> tca_aot.TCAKernelSpec:
    """The ahead-of-time build of what the child launches at `shape`, whose PTX it counts MMAs in: padded
    only where the map does not split into whole windows, as `tca_triton._launch` decides. (TCAKernelSpec's
    default is the padded build TensorRT's plugin needs, other code: 218 against 205 registers for the
    direct kernel's shifted fp16 sm_90 build with triton 3.6.)"""
    padded = (padded_size(shape.height, shape.window), padded_size(shape.width, shape.window)) != (shape.height,
                                                                                                  shape.width)
    return tca_aot.TCAKernelSpec(variant.dtype, shape.channels, shape.map_channels, shape.heads, shape.window,
                                 shape.shift, num_warps=variant.num_warps, fast_sigmoid=fast_sigmoid,
                                 mma=MmaChoice(variant.mma), kernel=KernelChoice(variant.kernel),
                                 maxnreg=variant.maxnreg, padded=padded, head_stages=variant.head_stages or 1,
                                 programs_per_sm=variant.programs_per_sm, output_after_heads=variant.output_after_heads)


def child(variant: Variant, batches: list[int], time_it: bool, cold_l2: bool = False) -> dict:
    """Run one variant in this process (LANGBRT_TCA_KERNEL, LANGBRT_TCA_MMA and LANGBRT_TCA_SIGMOID already
    set by `main`): check it at every batch size, and with `time_it` time the correct ones, with `cold_l2`
    also on inputs cycled out of L2 (x and the map features copied; the weights shared)."""
    import triton.testing

    from langbrt.kernels import tca_choices, tca_triton, windowed_sigmoid_cross_attention_reference

    shape = Shape.paper()
    args = (shape.heads, shape.window, shape.shift)
    dtype = DTYPES[variant.dtype]
    fast_sigmoid = tca_choices.fast_sigmoid_for(torch.empty(0, dtype=dtype, device="cuda"))  # the form launched
    instructions = None
    if not time_it:  # which instructions this GPU's build uses; printed first, in case the launch faults
        instructions = tca_aot.mma_instructions(tca_aot.compile_tca_kernel(child_spec(variant, shape, fast_sigmoid)))
        print(PTX_PREFIX + json.dumps(instructions), flush=True)
    result: dict = {"max_error": 0.0, "bound": None, "status": "ok", "mma_instructions": instructions}
    medians, cold_medians, sets = {}, {}, {}
    for batch in batches:
        x, mf, params = make_inputs(shape, batch, torch.float32)
        expected = windowed_sigmoid_cross_attention_reference(x, mf, params, *args)  # (B, H, W, C) fp32
        inputs = (x.to(dtype), mf.to(dtype), *(t.to(dtype) for t in params.tensors()))

        def launch(*tensors: torch.Tensor) -> torch.Tensor:  # x, map features, the 9 parameters
            return tca_triton._launch(*tensors, *args, fast_sigmoid, config=variant.launch_config())

        # Poison: free a NaN block of the output's size so the caching allocator hands it to the launch.
        poison = torch.full_like(inputs[0], float("nan"))
        del poison
        got = launch(*inputs).float()
        torch.cuda.synchronize()
        err = (got - expected).abs().max().item()  # NaN if any element was left unwritten
        bound = CHECK_TOLERANCE[variant.dtype] * expected.abs().max().item()
        if not err <= bound:  # NaN-safe
            return result | {"max_error": err, "bound": bound, "status": "wrong", "detail": f"batch {batch}"}
        result["max_error"], result["bound"] = max(result["max_error"], err), bound
        if time_it:
            medians[batch] = 1e3 * triton.testing.do_bench_cudagraph(Rotating(launch, [inputs]), rep=200,
                                                                     return_mode="median")
        if time_it and cold_l2:
            l2_bytes = l2_cache_bytes(torch.cuda.get_device_properties())
            cold_sets = cold_input_sets(inputs, bytes_moved(shape, batch, dtype.itemsize), l2_bytes)
            sets[batch] = len(cold_sets)
            cold_medians[batch] = 1e3 * triton.testing.do_bench_cudagraph(Rotating(launch, cold_sets), rep=200,
                                                                          return_mode="median")
    cold = {"cold_median_us": cold_medians, "input_sets": sets} if cold_l2 else {}
    return result | ({"median_us": medians} | cold if time_it else {})


def run_child(variant: Variant, batches: list[int], time_it: bool, sigmoid: str, cold_l2: bool = False) -> Outcome:
    command = [sys.executable, __file__, "--child", *variant.child_args(), "--batch", *map(str, batches),
               "--sigmoid", sigmoid]
    command += ["--time"] if time_it else []
    command += ["--cold-l2"] if time_it and cold_l2 else []
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Outcome(variant, "timeout", detail=f"no result in {CHILD_TIMEOUT_S} s")
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        errors = [line for line in proc.stderr.splitlines() if "Error" in line or "error" in line]
        ptx = [line for line in proc.stdout.splitlines() if line.startswith(PTX_PREFIX)]
        return Outcome(variant, "crashed", detail=(errors[-1] if errors else proc.stderr.strip()[-300:]),
                       mma_instructions=json.loads(ptx[-1].removeprefix(PTX_PREFIX)) if ptx else None)
    data = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    median, cold, sets = ({int(b): t for b, t in data[key].items()} if key in data else None
                          for key in ("median_us", "cold_median_us", "input_sets"))
    return Outcome(variant, data["status"], data["max_error"], data["bound"], median,
                   detail=data.get("detail", ""), mma_instructions=data.get("mma_instructions"),
                   cold_median_us=cold, input_sets=sets)


def sweep(todo: list[Variant], batches: list[int], jobs: int, report: Callable[[list[Outcome]], None],
          sigmoid: str, cold_l2: bool = False) -> list[Outcome]:
    """Compile and check every variant in parallel, then time the correct ones one at a time (with `cold_l2`
    on cold inputs too); `report` gets the outcomes so far after the checks and after each timing (a sweep
    cut short keeps them)."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        checked = list(pool.map(lambda v: run_child(v, batches, False, sigmoid), todo))
    print_table(checked, batches, cold=cold_l2)
    report(checked)
    timed = []
    for i, before in enumerate(checked):
        after = run_child(before.variant, batches, True, sigmoid, cold_l2) if before.status == "ok" else before
        after.mma_instructions = before.mma_instructions
        timed.append(after)
        print_table([after], batches, header=False, cold=cold_l2)
        report(timed + checked[i + 1:])
    return timed


def print_table(outcomes: list[Outcome], batches: list[int], header: bool = True, cold: bool = False) -> None:
    """A line per outcome; `cold`: a "cold @B" column per batch size after the warm ones (--cold-l2)."""
    if header:
        times = " ".join(f"{f'us @{b}':>9}" for b in batches)
        times += "".join(f" {f'cold @{b}':>9}" for b in batches) if cold else ""
        print(f"{'kernel':7} {'mma':6} {'dtype':5} {'maxnreg':>7} {'warps':>5} {'stages':>6} {'per SM':>6} "
              f"{'after':>5} {'status':8} {'max err':>10} {'bound':>10} {times}  mma instructions, detail")
    for o in outcomes:
        err = f"{o.max_error:10.3g}" if o.max_error is not None else f"{'-':>10}"
        bound = f"{o.bound:10.3g}" if o.bound is not None else f"{'-':>10}"
        times = " ".join(f"{o.median_us[b]:9.2f}" if o.median_us else f"{'-':>9}" for b in batches)
        times += "".join(f" {o.cold_median_us[b]:9.2f}" if o.cold_median_us else f" {'-':>9}"
                         for b in batches) if cold else ""
        v = o.variant
        kernel = v.kernel if autotuned(v) else v.kernel + "*"  # * a candidate, not autotuned
        print(f"{kernel:7} {v.mma:6} {v.dtype:5} {v.maxnreg or '-':>7} {v.num_warps:5d} {v.head_stages or '-':>6} "
              f"{v.programs_per_sm or '-':>6} {'yes' if v.output_after_heads else '-':>5} {o.status:8} {err} "
              f"{bound} {times}  {o.mma_instructions or ''} {o.detail}")


@dataclass(frozen=True)
class Best:
    """The fastest correct variant of one dtype at one batch size, against the card's memory roofline."""

    dtype: str
    batch: int
    variant: Variant
    autotuned: bool
    median_us: float
    gb_per_s: float
    fraction_peak_bandwidth: float | None  # None: a card bench_attention.PEAKS does not know
    cold_median_us: float | None = None  # the same variant on inputs cycled out of L2; None: not timed so
    cold_fraction_peak_bandwidth: float | None = None


def best_variants(outcomes: list[Outcome], batches: list[int], card: str) -> list[Best]:
    """Per dtype and batch size, the fastest variant that was checked right, and its roofline fraction
    (bytes as bench_attention.bytes_moved counts them): the question each sweep is run to answer; with its
    cold-L2 time where it has one (the fastest is picked on the warm times, which every sweep has)."""
    shape, best = Shape.paper(), []
    for dtype in dict.fromkeys(o.variant.dtype for o in outcomes):
        for batch in batches:
            timed = [o for o in outcomes if o.variant.dtype == dtype and o.status == "ok" and o.median_us
                     and batch in o.median_us]
            if not timed:
                continue
            fastest = min(timed, key=lambda o: o.median_us[batch])
            n_bytes = bytes_moved(shape, batch, DTYPES[dtype].itemsize)
            bandwidth = n_bytes / (fastest.median_us[batch] * 1e-6)
            peak, _ = card_peaks(card, dtype)
            cold_us = (fastest.cold_median_us or {}).get(batch)
            cold_fraction = n_bytes / (cold_us * 1e-6) / peak if cold_us and peak else None
            best.append(Best(dtype, batch, fastest.variant, autotuned(fastest.variant), fastest.median_us[batch],
                             bandwidth / 1e9, bandwidth / peak if peak else None, cold_us, cold_fraction))
    return best


def print_best(best: list[Best]) -> None:
    for b in best:
        v = b.variant
        fraction = f"{100 * b.fraction_peak_bandwidth:.1f} % of peak" if b.fraction_peak_bandwidth else "peak unknown"
        if b.cold_median_us:
            cold = f"{100 * b.cold_fraction_peak_bandwidth:.1f} %" if b.cold_fraction_peak_bandwidth else "peak unknown"
            fraction += f"; cold L2 {b.cold_median_us:.2f} us, {cold}"
        print(f"fastest {b.dtype} @{b.batch}: {b.median_us:.2f} us, {b.gb_per_s:.0f} GB/s ({fraction}): {v.kernel} "
              f"{v.mma} {v.num_warps} warps, maxnreg {v.maxnreg or '-'}, head stages {v.head_stages or '-'}, "
              f"{v.programs_per_sm or '-'} per SM, output {'after' if v.output_after_heads else 'with'} each head"
              f"{'' if b.autotuned else ' (a candidate, not autotuned)'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32], help="batch sizes of the paper-shape launch")
    parser.add_argument("--jobs", type=int, default=8, help="children compiling at once")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--kernels", nargs="+", choices=ALL_KERNELS, default=list(ALL_KERNELS),
                        help="sweep these kernels only (default: both)")
    parser.add_argument("--dtypes", nargs="+", choices=ALL_DTYPES, default=list(ALL_DTYPES),
                        help="sweep these dtypes only (default: all three)")
    parser.add_argument("--sigmoid", choices=("auto", "exact", "tanh"), default="auto",
                        help="the sigmoid form every variant computes: auto (default: the model's, tanh in half "
                        "precision and exact in fp32), exact, or tanh (0.5 tanh.approx(s / 2) + 0.5)")
    parser.add_argument("--cold-l2", action="store_true",
                        help="also time each variant on inputs cycled out of L2 (copies touching 4x the card's "
                        "L2): cold_median_us in the JSON, 'cold @B' columns; about doubles the timing pass")
    parser.add_argument("--child", nargs=len(CHILD_FIELDS), metavar=CHILD_FIELDS,
                        help=argparse.SUPPRESS)
    parser.add_argument("--time", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("kernel_sweep: no CUDA device; run this on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    if args.child:
        variant = Variant.from_child_args(args.child)
        os.environ.update(LANGBRT_TCA_KERNEL=variant.kernel, LANGBRT_TCA_MMA=variant.mma,  # read at each launch
                          LANGBRT_TCA_SIGMOID=args.sigmoid)
        print(RESULT_PREFIX + json.dumps(child(variant, args.batch, args.time, args.cold_l2)))
        return 0

    import triton

    header = {"card": torch.cuda.get_device_name(), "date": dt.datetime.now().isoformat(timespec="seconds"),
              "torch": torch.__version__, "triton": triton.__version__, "batches": args.batch,
              "shape": asdict(Shape.paper()), "sigmoid": args.sigmoid,
              "cold_l2": args.cold_l2,
              "l2_cache_bytes": l2_cache_bytes(torch.cuda.get_device_properties()) if args.cold_l2 else None}

    def write(outcomes: list[Outcome]) -> None:
        """The JSON report of `outcomes` (rows not timed yet have no median_us), replacing the last one."""
        if args.out:
            rows = [asdict(o.variant) | {"autotuned": autotuned(o.variant)}
                    | {k: v for k, v in asdict(o).items() if k != "variant"} for o in outcomes]
            fastest = [asdict(b) for b in best_variants(outcomes, args.batch, header["card"])]
            atomic_write_text(args.out, json.dumps(header | {"fastest": fastest, "rows": rows}, indent=2) + "\n")

    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    outcomes = sweep(variants(tuple(args.kernels), tuple(args.dtypes)), args.batch, args.jobs, write, args.sigmoid,
                     args.cold_l2)
    print_best(best_variants(outcomes, args.batch, header["card"]))
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
