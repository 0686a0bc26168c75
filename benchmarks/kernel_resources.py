"""What ptxas makes of the fused TCA kernel for real GPUs, measured on any machine (no GPU needed).

    python benchmarks/kernel_resources.py                       # sm_80 and sm_90, all dtypes and warp counts
    python benchmarks/kernel_resources.py --arch 90 --dtypes fp16 --out -

For the paper preset's TCA attention (C=96, 3 heads, 8x8 windows, 9 map channels; unshifted and shifted)
it compiles the kernels (`--kernels`; default the direct one, `tca_fwd_kernel`, which TensorRT's plugin
calls) ahead of time for each compute capability, dtype and warp count, as a launch from Python builds
them (pointers 16-byte aligned), and reports per thread the registers and the stack bytes (stack > 0:
registers spilled to local memory), per block the shared memory, whether TensorRT's AOT launcher can call
the build (argument order, no scratch, shared memory within 48 KiB), the blocks per SM the register file
allows, how Triton laid the warps over the dots' results, and the instructions one warp executes per
window (`tca_aot.instruction_mix`: in total, tensor-core, MUFU, global / shared memory, spill, barrier).
The builds are those a launch at the preset's 64 x 64 latent makes (whole windows: no padding checks;
TensorRT's plugin builds for any size).
These are static facts of the compiled code, not timings: they say which builds and launch configs are
worth timing on a GPU. Writes JSON (default benchmarks/results/kernel-resources-<date>.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import triton

from langbrt.atomic import atomic_write_text
from langbrt.config import LangBRTConfig
from langbrt.kernels import tca_triton
from langbrt.kernels.tca_aot import (
    DTYPES,
    TCAKernelSpec,
    check_tensorrt_contract,
    compile_tca_kernel,
    instruction_mix,
    kernel_resources,
    mma_warp_layouts,
)
from langbrt.kernels.tca_choices import KernelChoice, MmaChoice

REGISTERS_PER_SM = 65536  # sm_80 and sm_90
MAX_THREADS_PER_SM = 2048
REGISTER_ALLOCATION_UNIT = 256  # registers per warp are allocated in these units (sm_80, sm_90)
WARP_SIZE = 32


def register_allocation(registers_per_thread: int) -> int:
    """The registers one warp holds on the SM for a build of `registers_per_thread`: rounded up to the
    allocation unit, so 84 registers per thread take 88 (5 blocks of 4 warps per SM, not 6)."""
    return -(-registers_per_thread * WARP_SIZE // REGISTER_ALLOCATION_UNIT) * REGISTER_ALLOCATION_UNIT


@dataclass(frozen=True)
class ResourceRow:
    kernel: str
    mma: str  # the MMA path it was built for (tca_choices.MmaChoice)
    arch: int
    dtype: str
    window: int
    shift: int
    num_warps: int
    head_stages: int  # the folded kernel's head-loop pipelining depth (1 for the direct kernel)
    maxnreg: int | None  # ptxas register cap (None: ptxas's choice)
    programs_per_sm: int | None  # the folded kernel's persistent build (None: a program per window)
    output_after_heads: bool  # the folded kernel's output projection after its last head
    sigmoid: str  # "tanh" (TensorRT's plugin) or "exact" (the model's default)
    registers: int
    stack_bytes: int
    shared_bytes: int
    blocks_per_sm_by_registers: int
    tensorrt_aot_ok: bool
    tensorrt_aot_problem: str | None
    mma_warp_layouts: list[str]  # e.g. ["v2 [4, 1]"]: warps stacked along the window's tokens
    instructions_per_warp: dict[str, int]  # tca_aot.instruction_mix, per window (the head loop NUM_HEADS times)


SIGMOIDS = {"tanh": True, "exact": False}  # --sigmoid name -> TCAKernelSpec.fast_sigmoid


def paper_specs(kernels: list[str], dtypes: list[str], warps: list[int], sigmoids: list[str],
                head_stages: list[int], maxnreg: Sequence[int | None] = (None,),
                programs_per_sm: Sequence[int | None] = (None,), mma: str | None = None,
                output_after_heads: Sequence[bool] = (False,),
                windows: Sequence[int | None] = (None,)) -> list[TCAKernelSpec]:
    """The paper preset's kernels; `mma` None builds each on its default path (tca_choices.DEFAULT_MMA);
    `windows` other than None (the preset's 8) build the same attention with wider windows."""
    cfg = LangBRTConfig.paper()
    folded = KernelChoice.FOLDED.value
    latent = cfg.latent_size
    # padded: whether the preset's 64 x 64 latent splits into whole windows (as the launch decides)
    return [TCAKernelSpec(dtype, cfg.embed_dim, cfg.map_feature_dim, cfg.num_heads, window, shift,
                          num_warps=nw, fast_sigmoid=SIGMOIDS[sigmoid], kernel=KernelChoice(kernel),
                          padded=latent % window != 0, head_stages=stages, maxnreg=cap, programs_per_sm=persistent,
                          mma=MmaChoice(mma) if mma else None, output_after_heads=after)
            for window in (w or cfg.window_size for w in windows)
            for kernel in kernels for sigmoid in sigmoids for dtype in dtypes
            for shift in (0, window // 2) for nw in warps for cap in maxnreg
            for stages in (head_stages if kernel == folded else [1])
            for persistent in (programs_per_sm if kernel == folded else [None])
            for after in (output_after_heads if kernel == folded else [False])
            if not (after and stages != 1)]


def measure(spec: TCAKernelSpec, arch: int) -> ResourceRow:
    compiled = compile_tca_kernel(spec, arch)
    res = kernel_resources(compiled)
    threads = compiled.block_threads
    by_registers = (REGISTERS_PER_SM // (register_allocation(res.registers) * compiled.spec.num_warps)
                    if res.registers else MAX_THREADS_PER_SM // threads)
    try:
        check_tensorrt_contract(compiled)
        problem = None
    except ValueError as err:
        problem = str(err)
    sigmoid = "tanh" if spec.fast_sigmoid else "exact"
    return ResourceRow(spec.kernel.value, spec.mma_path.value, arch, spec.dtype, spec.window_size, spec.shift,
                       spec.num_warps,
                       spec.head_stages, spec.maxnreg, spec.programs_per_sm, spec.output_after_heads, sigmoid,
                       res.registers,
                       res.stack_bytes, res.static_shared_bytes + res.dynamic_shared_bytes, by_registers,
                       problem is None, problem, mma_warp_layouts(compiled),
                       instruction_mix(compiled, spec.num_heads, 1 if spec.programs_per_sm else None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compute capabilities, e.g. 90")
    parser.add_argument("--kernels", nargs="+", choices=[k.value for k in KernelChoice], default=["direct"],
                        help="which kernels (LANGBRT_TCA_KERNEL values); default direct, the one TensorRT calls")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--mma", choices=[m.value for m in MmaChoice], default=None,
                        help="the MMA path to build on (LANGBRT_TCA_MMA values); default: each kernel's own")
    parser.add_argument("--warps", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--sigmoid", nargs="+", choices=list(SIGMOIDS), default=["tanh"],
                        help="sigmoid forms: tanh (TensorRT's plugin, the default) and / or exact (the model's)")
    parser.add_argument("--head-stages", type=int, nargs="+", default=[1],
                        help="the folded kernel's head-loop pipelining depths (tca_launch_configs.LaunchConfig)")
    parser.add_argument("--maxnreg", type=int, nargs="+", default=[0],
                        help="ptxas register caps per thread; 0: none (default)")
    parser.add_argument("--programs-per-sm", type=int, nargs="+", default=[0],
                        help="the folded kernel's persistent builds (tca_launch_configs.LaunchConfig); 0: a program "
                        "per window (default)")
    parser.add_argument("--output-after-heads", type=int, nargs="+", choices=(0, 1), default=[0],
                        help="the folded kernel's output projection after its last head (1), with each head (0, "
                        "default), or both: 0 1 (tca_launch_configs.LaunchConfig; head stages 1 only)")
    parser.add_argument("--windows", type=int, nargs="+", default=[0],
                        help="window sizes; 0: the preset's 8 (default). Wider windows show where the builds stop "
                        "fitting a GPU's shared memory (dispatch.MAX_KERNEL_WINDOW)")
    parser.add_argument("--out", default=None, help="JSON path, or - for stdout only "
                        "(default benchmarks/results/kernel-resources-<date>.json)")
    args = parser.parse_args(argv)

    rows = [measure(spec, arch) for arch in args.arch
            for spec in paper_specs(args.kernels, args.dtypes, args.warps, args.sigmoid, args.head_stages,
                                    [n or None for n in args.maxnreg], [n or None for n in args.programs_per_sm],
                                    args.mma, [bool(n) for n in args.output_after_heads],
                                    [n or None for n in args.windows])]
    print(f"{'kernel':>6} {'mma':>5} {'arch':>5} {'dtype':>5} {'sigmoid':>7} {'win':>3} {'shift':>5} {'warps':>5} "
          f"{'stages':>6} "
          f"{'maxnreg':>7} {'per SM':>6} {'after':>5} {'regs':>5} "
          f"{'stack B':>8} {'smem B':>7} {'blk/SM':>6} {'TRT AOT':>7} {'instr/warp':>10} {'MMA':>5} {'MUFU':>5} "
          f"{'mma warps':>10}")
    for r in rows:
        mix = r.instructions_per_warp
        print(f"{r.kernel:>6} {r.mma:>5} sm_{r.arch:<2} {r.dtype:>5} {r.sigmoid:>7} {r.window:>3} {r.shift:>5} "
              f"{r.num_warps:>5} "
              f"{r.head_stages:>6} {r.maxnreg or '-':>7} {r.programs_per_sm or '-':>6} "
              f"{'yes' if r.output_after_heads else '-':>5} {r.registers:>5} "
              f"{r.stack_bytes:>8} {r.shared_bytes:>7} {r.blocks_per_sm_by_registers:>6} "
              f"{'ok' if r.tensorrt_aot_ok else 'no':>7} {mix['total']:>10} {mix['tensor_core']:>5} {mix['mufu']:>5} "
              f"{' '.join(r.mma_warp_layouts) or '-':>10}")
    report = {
        "benchmark": "kernel_resources",
        "date": dt.date.today().isoformat(),
        "kernels": {k.value: tca_triton._JIT_KERNELS[k].__name__ for k in map(KernelChoice, args.kernels)},
        "shape": "paper preset TCA attention: C=96, Cm=9, 3 heads, window 8 (or each row's window) on a 64 x 64 latent",
        "instructions_per_warp": "SASS of one program (one window), each head-loop body counted NUM_HEADS times; "
                                 "a persistent build's window loop once (per window, plus its prologue)",
        "triton": triton.__version__,
        "ptxas": triton.knobs.nvidia.ptxas.version,
        "rows": [asdict(r) for r in rows],
    }
    text = json.dumps(report, indent=2) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.out or f"benchmarks/results/kernel-resources-{report['date']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
