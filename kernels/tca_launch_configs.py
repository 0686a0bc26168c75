"""The launch configurations the fused TCA kernels are autotuned over, and the pruning and grid rules the
autotuner follows: which warp counts, register caps, head-loop pipelining and persistent launches are
timed, and the H100 / H200 measurements that put each one on (or off) the list.

Apart from the launch (tca_triton) because benchmarks/kernel_sweep.py and the AOT build (tca_aot) read
the same table: a config the sweep finds faster joins LAUNCH_CONFIGS here, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from .tca_choices import KernelChoice

# Warp counts the autotuner times for the direct kernel (per grid size: `grid_bucket`). Measured on an H200
# at the paper shape, mma.sync build (benchmarks/kernel_sweep.py, CUDA-graph replay): fp16 24.5 / 38.1 /
# 59.8 us at batch 8 and 99.5 / 156 / 237 us at batch 32 at 4 / 8 / 16 warps (bf16 the same), fp32 at batch
# 8 594 / 292 / 469 us. 4 warps wins for half precision: two blocks fit per SM (183 registers, sm_90),
# against one at 8 warps. One pipeline stage for the kernel as a whole (the folded kernel's head loop sets
# its own: LaunchConfig.head_stages).
NUM_WARPS_CHOICES = (4, 8, 16)
NUM_STAGES = 1


@dataclass(frozen=True)
class LaunchConfig:
    """One launch the autotuner times: the block's width, a ptxas cap on registers per thread (None:
    ptxas's choice), which trades spills for more resident blocks, and for the folded kernel how deep its
    head loop is software-pipelined (`head_stages`, its HEAD_STAGES; None for the direct kernel, which has
    no such switch) and whether it runs persistent (`programs_per_sm`, its PROGRAMS_PER_SM: about that many
    programs per SM, each looping over windows and loading the next one during this one's maths; None:
    one program per window), and whether its output projection waits for the last head
    (`output_after_heads`, its OUTPUT_AFTER_HEADS: the head loop unrolled, each head's (N, BLOCK_K) mix kept
    until then, so the (N, C) fp32 accumulator is live only at the end; tca_folded_jit's header)."""

    num_warps: int
    maxnreg: int | None = None
    head_stages: int | None = None
    programs_per_sm: int | None = None
    output_after_heads: bool = False

    def __post_init__(self) -> None:
        if self.programs_per_sm is not None and (self.head_stages is None or self.programs_per_sm < 1):
            raise ValueError(f"{self}: programs_per_sm is the folded kernel's (with head_stages) and at least 1")
        if self.output_after_heads and self.head_stages != 1:
            raise ValueError(f"{self}: output_after_heads is the folded kernel's and unrolls its head loop "
                             "(head_stages 1: nothing to pipeline)")

    def kernel_arguments(self) -> dict[str, int]:
        """The constexpr arguments this config sets on top of `kernel_constants`."""
        if self.head_stages is None:
            return {}
        return {"HEAD_STAGES": self.head_stages, "PROGRAMS_PER_SM": self.programs_per_sm or 0,
                "OUTPUT_AFTER_HEADS": self.output_after_heads}

    def triton_config(self) -> triton.Config:
        return triton.Config(self.kernel_arguments(), num_warps=self.num_warps, num_stages=NUM_STAGES,
                             maxnreg=self.maxnreg)


def persistent_programs(programs_per_sm: int, sm_count: int, windows_per_image: int, batch: int) -> int:
    """Programs per image (grid axis 0) of a persistent launch: as many as keep `programs_per_sm` on each
    SM over the whole batch, without a second wave (rounded down), at least one, at most one per window."""
    return max(1, min(windows_per_image, programs_per_sm * sm_count // batch))


def configs_for_dtype(configs: list[triton.Config], named_args: dict, **kwargs: object) -> list[triton.Config]:
    """The autotuner's early prune: half precision times the 4-warp configs, fp32 the wider ones.

    Why: the autotuner builds every config it times on a shape's first call. Every measurement so far put
    half precision at 4 warps (H100 batch 32, fp16: direct 73-83 us against 137 / 215 at 8 / 16 warps,
    folded 34.5-38.5 against 57.3 at 8) and fp32's FMA maths at 8 or more (H200, direct, batch 8: 594 us at
    4 warps against 292 / 469), so the others only cost start-up time. Triton keys its tuning cache on
    the tensors' dtypes too, so each dtype gets its own pick."""
    half = named_args["x_ptr"].dtype in (torch.float16, torch.bfloat16)
    return [c for c in configs if (c.num_warps == 4) == half] or configs


def grid_bucket(n_programs: int) -> int:
    """Which autotuner a launch of `n_programs` programs uses: one per power-of-two grid size.

    The best width depends on how many waves the grid makes, and Triton keys its autotuner on kernel
    arguments only, not on the grid (whose second axis is the batch). With one autotuner for all batches,
    the first call's batch decides for every later one: on an H200 the bf16 benchmark, tuned at batch 1
    (64 programs), picked 8 warps, which at batch 32 took 160 us against 98 us for 4 warps.
    """
    return n_programs.bit_length()


# What the autotuner times per kernel. DIRECT: the widths above, and 4 warps capped at 168 registers: the
# GPU image's triton 3.6 builds the 4-warp kernel in 178 (unshifted) / 209 (shifted) registers at the
# preset's shape, 2 blocks per SM; capped, 3 fit for an 8-24 B spill (H100, batch 32: 73.0 us against 82.5
# uncapped). FOLDED: 4 warps, plain (148 registers in the sm_90 half builds, 3 blocks per SM) and capped at
# 128 (4 blocks for a 16-32 B spill: 34.5 against 38.5 us), each with its head loop plain and
# software-pipelined (tca_folded_jit's header), and pipelined three deep at 128 (the preset's 3 heads' weights
# all in flight: the fastest at batch 32 in four sweeps, by 0.1-1 %: H100 exact 31.76 / 31.85 us against
# 31.8 / 31.87 two deep, H200 tanh 28.66 against 28.94); and 8 warps for fp32's FMA maths (half precision
# at 8 warps: each warp computes as much as at 4, since the dots put the warps' rows along the window's 64
# tokens; 57.3 us). The persistent launches (programs_per_sm) and the output projection after the last head
# (output_after_heads) lost to these on an H100 and are only swept (tca_folded_jit's header).
LAUNCH_CONFIGS = {
    KernelChoice.DIRECT: (*(LaunchConfig(nw) for nw in NUM_WARPS_CHOICES), LaunchConfig(4, maxnreg=168)),
    KernelChoice.FOLDED: (*(LaunchConfig(4, maxnreg, head_stages) for head_stages in (1, 2) for maxnreg in (None, 128)),
                          LaunchConfig(4, 128, head_stages=3), LaunchConfig(8, head_stages=1)),
}
