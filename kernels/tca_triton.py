"""The fused TCA attention for PyTorch: which Triton kernel and MMA path run, their launch, the custom op and
a recompute-based backward.

The kernels (`tca_jit.py`): one program per (window, image) computes the whole windowed sigmoid
cross-attention of that window, from the unpartitioned (B, H, W, C) tensors to the output projection, in
one launch per TCA block (a persistent launch of the folded kernel, `LaunchConfig.programs_per_sm`: a
program per group of an image's windows). `tca_fwd_kernel` reads the nine TCA tensors as the reference does;
`tca_folded_fwd_kernel` (LANGBRT_TCA_KERNEL=folded) reads weights folded through the narrow map
features (tca_fold.py). On Hopper the folded kernel's half-precision dots are wgmma (DEFAULT_MMA), the
direct kernel's mma.sync only: Triton 3.6's wgmma build of the direct kernel computes wrong values
(MmaChoice, MMA_PATHS). In half precision on CUDA the sigmoid is the tanh form by default (SigmoidChoice).

Backward recomputes: `_TCAFunction.backward` re-runs the PyTorch reference and differentiates it with
`torch.func.vjp` (grad-enabled whatever the ambient mode, like `torch.enable_grad()` + `autograd.grad`, but
traceable by dynamo, so `torch.compile(fullgraph=True)` of a training step keeps one graph). Training thus
pays the reference's memory during backward only, and the forward saves nothing beyond its inputs; a fused
backward kernel can replace it later behind the same API.

Importing this module imports triton and registers the op `langbrt::tca_attention`; it never probes a
device. On CPU the kernel runs only in Triton's interpreter (`TRITON_INTERPRET=1` before this import).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

import torch
import triton

from langbrt.errors import LangBRTInputError

from .dispatch import choice_from_env, cuda_device_guard, environ_set
from .reference import TCAParams, logit_bias, windowed_sigmoid_cross_attention_reference
from .tca_fold import LogitFold, folded_weights
from .tca_jit import tca_folded_fwd_kernel, tca_fwd_kernel
from .windows import padded_size

OP_NAME = "langbrt::tca_attention"
MIN_DOT_EXTENT = 16  # tl.dot needs every matmul dimension >= 16
# The folded kernel of a shifted block carries the Swin region of each token in this many channels past
# the map channels and the ones channel: its row and column band signs and a constant (tca_jit._folded_window).
REGION_CHANNELS = 3


def _interpreting() -> bool:
    """True when triton.jit builds interpreter kernels (read at decoration time, i.e. at this import)."""
    knobs = getattr(triton, "knobs", None)  # triton >= 3.4
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_INTERPRETING = _interpreting()


def check_device(device: torch.device) -> None:
    """The kernel runs on CUDA, or anywhere in Triton's interpreter; elsewhere, one line saying what to do."""
    if device.type != "cuda" and not _INTERPRETING:
        raise LangBRTInputError(
            "the Triton TCA kernel needs a CUDA device (or TRITON_INTERPRET=1 set before "
            "langbrt.kernels.tca_triton is imported); set LANGBRT_ATTENTION=reference to use the PyTorch path"
        )


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
    until then, so the (N, C) fp32 accumulator is live only at the end; tca_jit's header)."""

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


@functools.cache
def _sm_count(device: torch.device) -> int:
    """The SMs a persistent launch fills: the GPU's; 1 under the interpreter, so a CPU test's programs
    each loop over several windows."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


class MmaChoice(str, Enum):
    """Which tensor-core instructions the half-precision matmuls use on Hopper (sm_90). fp32 uses exact FMA
    maths and other GPUs have no wgmma, so there every choice builds the same instructions.

    MMA (the direct kernel's only path, MMA_PATHS): the dots are built with Triton's `DISABLE_MMA_V3` set, i.e. mma.sync
    as on Ampere.
    WGMMA (the folded kernel's default, DEFAULT_MMA): Triton's own choice on Hopper, warpgroup MMA. With
    triton 3.6 on an H200 (2026-11-26, benchmarks/results/kernel-sweep-NVIDIA-H200-2026-11-26.json), before
    the change below, that build was WRONG (max error 102-204 against a bound of 0.3 at 4 and 8 warps, fp16
    and bf16) or faulted (illegal memory access at 16 warps), while compute-sanitizer reported no bad access:
    a miscompile, not an out-of-bounds index in this kernel.
    Unrolling the head loop does not help (still wrong), while a variant that ran the score and A V dots as
    3-D mma.sync dots with only the projections on wgmma was right: the bad build is that of the two dots
    whose B operands (K^T, V) the kernel computes itself. That matches a known Triton bug on Hopper,
    tl.trans of a wgmma result (triton-lang/triton#6124, worked around in flash-linear-attention PR #826),
    which the kernel measured then had (S = Q tl.trans(K)). Both kernels now avoid the pattern (the direct
    one computes K^T as Wk_h m~^T; the folded one transposes no dot result). On an H100 (triton 3.6,
    benchmarks/results/kernel-sweep-NVIDIA-H100-80GB-HBM3-2026-11-26.json and its -2 rerun) the folded
    kernel's WGMMA build is right (fp16 and bf16, every GPU test) and the faster, the direct kernel's still
    wrong (max error 98-378) or faulting, so the direct kernel no longer builds it. (A third
    path, wgmma projections with the score and A V dots written as 3-D dots of batch one so they stay
    mma.sync, was removed untested: Triton puts a 3-D dot's warps on its batch dimension, so every warp
    computed every score, 4x the sigmoids per warp in the sm_90 build.)
    """

    MMA = "mma"
    WGMMA = "wgmma"


MMA_ENV_VAR = "LANGBRT_TCA_MMA"


@contextlib.contextmanager
def mma_build_scope(mma: MmaChoice) -> Iterator[None]:
    """Hold Triton's DISABLE_MMA_V3 set while a launch compiles the kernel, for MmaChoice.MMA only.

    Triton reads the variable when it compiles and keys its cache on it, so the kernel is built and found
    again the same way, and other Triton kernels (torch.compile's) built outside this scope keep wgmma.
    The variable is process-wide, so scopes are serialised by a lock: without it, one thread leaving its
    scope would unset the variable under another thread's launch, which would then look up (or build) the
    wgmma kernel. A Triton build of some other kernel in another thread meanwhile also skips wgmma: slower,
    never wrong. torch.compile cannot bypass the scope: the op is opaque to it (`_register_op`).
    """
    if mma is not MmaChoice.MMA:
        yield
        return
    with _ENV_LOCK, environ_set(_TRITON_NO_WGMMA, "1"):
        yield


_TRITON_NO_WGMMA = "DISABLE_MMA_V3"
_ENV_LOCK = threading.Lock()


def configs_for_dtype(configs: list[triton.Config], named_args: dict, **kwargs: object) -> list[triton.Config]:
    """The autotuner's early prune: half precision times the 4-warp configs, fp32 the wider ones.

    Why: the autotuner builds every config it times on a shape's first call. Every measurement so far put
    half precision at 4 warps (H100 batch 32, fp16: direct 73-83 us against 137 / 215 at 8 / 16 warps,
    folded 34.5-38.5 against 57.3 at 8) and fp32's FMA maths at 8 or more (H200, direct, batch 8: 594 us at
    4 warps against 292 / 469), so the others only cost start-up time. Triton keys its tuning cache on
    the tensors' dtypes too, so each dtype gets its own pick."""
    half = named_args["x_ptr"].dtype in (torch.float16, torch.bfloat16)
    return [c for c in configs if (c.num_warps == 4) == half] or configs


def _autotune_configs(kernel: KernelChoice) -> list[triton.Config]:
    """The launch configs the autotuner times; the first alone under the interpreter, where timing is slow."""
    configs = LAUNCH_CONFIGS[kernel][:1] if _INTERPRETING else LAUNCH_CONFIGS[kernel]
    return [config.triton_config() for config in configs]


def grid_bucket(n_programs: int) -> int:
    """Which autotuner a launch of `n_programs` programs uses: one per power-of-two grid size.

    The best width depends on how many waves the grid makes, and Triton keys its autotuner on kernel
    arguments only, not on the grid (whose second axis is the batch). With one autotuner for all batches,
    the first call's batch decides for every later one: on an H200 the bf16 benchmark, tuned at batch 1
    (64 programs), picked 8 warps, which at batch 32 took 160 us against 98 us for 4 warps.
    """
    return n_programs.bit_length()


class KernelChoice(str, Enum):
    """Which kernel computes the attention (LANGBRT_TCA_KERNEL).

    FOLDED (default): `tca_folded_fwd_kernel`, from weights folded through the narrow map features
    (`tca_fold.py`): per head, every matmul over Cm + 1 channels instead of head_dim and no K / V
    projection, laid out so the warps stack along the window (tca_jit's header). Its sm_90 build executes
    under half the instructions per window of DIRECT in fewer registers, and on an H100 (triton 3.6, paper
    shape, fp16, shifted) it ran in 34.5 us at batch 32 against DIRECT's 73.0, 9.3 against 20.4 at batch 8
    (`benchmarks/results/kernel-sweep-NVIDIA-H100-80GB-HBM3-2026-11-26.json`). A fold that overflows fp16
    (`FoldedTCAWeights.finite`) runs DIRECT instead.
    DIRECT: `tca_fwd_kernel`, from the nine TCA tensors as the reference does; the one TensorRT's AOT
    plugin bakes in (tca_aot), whose node carries those tensors, not a fold.
    """

    DIRECT = "direct"
    FOLDED = "folded"


class SigmoidChoice(str, Enum):
    """Which form of the sigmoid the kernels compute when the caller does not say (LANGBRT_TCA_SIGMOID).

    EXACT: 1 / (1 + 2^z) with PTX ex2.approx and rcp.approx (about 2 ulp in fp32): two MUFU instructions
    per attention weight.
    TANH: 0.5 tanh.approx(s / 2) + 0.5: one MUFU instruction and one FMA. PTX documents tanh.approx.f32 to a
    maximum relative error of 2^-11, so a weight in [0, 1] is off by at most 2^-12 = 2.4e-4, half an fp16
    unit at 0.5; an H100 measured 3.9e-6 on [-12, 12] (`benchmarks/probe_tanh_approx.py`). The kernels round every
    weight to the inputs' half precision for the A V dot right after, which costs up to 2.4e-4 (fp16) or
    2e-3 (bf16) itself, so in half precision the tanh form adds at most one more such rounding.
    AUTO (default): TANH for fp16 / bf16 inputs on CUDA, EXACT for fp32 (whose kernel matches the reference
    to 1e-4) and in Triton's interpreter. Why: the exact form's second MUFU per weight is the largest
    single cost at serving batch sizes (H200, paper shape, fp16, CUDA graphs: 9.4 against 7.4 us at batch
    8, 30.2 against 29.2 at batch 32; `benchmarks/results/attention-NVIDIA-H200-2026-11-26-2.json`), and
    TensorRT's plugin has computed the tanh form from the start. The backward recomputes the exact form.
    Not a further form: tanh.approx.f16x2 (two weights per PTX instruction, in half precision) does not halve
    the MUFU work on Hopper: Triton 3.6's ptxas builds it for sm_90 as two MUFU.TANH.F16, and the folded
    kernel's fp16 build keeps 97 MUFU and 1 041 / 1 137 instructions per warp and window (unshifted /
    shifted), as with tanh.approx.f32 (`benchmarks/kernel_resources.py --arch 90`, prototyped 2026-11-26).
    """

    AUTO = "auto"
    EXACT = "exact"
    TANH = "tanh"


SIGMOID_ENV_VAR = "LANGBRT_TCA_SIGMOID"


def sigmoid_choice() -> SigmoidChoice:
    """The form from LANGBRT_TCA_SIGMOID (default AUTO); a bad value is one clear error."""
    return choice_from_env(SIGMOID_ENV_VAR, SigmoidChoice, SigmoidChoice.AUTO)


def fast_sigmoid_for(x: torch.Tensor) -> bool:
    """Whether a launch on `x` computes the tanh form when its caller does not say (`SigmoidChoice`)."""
    choice = sigmoid_choice()
    if choice is SigmoidChoice.AUTO:
        return x.dtype in (torch.float16, torch.bfloat16) and x.device.type == "cuda" and not _INTERPRETING
    return choice is SigmoidChoice.TANH


KERNEL_ENV_VAR = "LANGBRT_TCA_KERNEL"
DEFAULT_KERNEL = KernelChoice.FOLDED
_JIT_KERNELS = {KernelChoice.DIRECT: tca_fwd_kernel, KernelChoice.FOLDED: tca_folded_fwd_kernel}
# Tensor arguments that are fp32 whatever the inputs' dtype (tca_fold keeps the folded biases in fp32);
# every other one has the inputs' dtype. Ahead-of-time builds (tca_aot) type the pointers from this.
FP32_ARGUMENTS = {KernelChoice.DIRECT: (), KernelChoice.FOLDED: ("qk_bias_ptr", "bo_ptr")}

# What the autotuner times per kernel. DIRECT: the widths above, and 4 warps capped at 168 registers: the
# GPU image's triton 3.6 builds the 4-warp kernel in 178 (unshifted) / 209 (shifted) registers at the
# preset's shape, 2 blocks per SM; capped, 3 fit for an 8-24 B spill (H100, batch 32: 73.0 us against 82.5
# uncapped). FOLDED: 4 warps, plain (148 registers in the sm_90 half builds, 3 blocks per SM) and capped at
# 128 (4 blocks for a 16-32 B spill: 34.5 against 38.5 us), each with its head loop plain and
# software-pipelined (tca_jit's header), and pipelined three deep at 128 (the preset's 3 heads' weights
# all in flight: the fastest at batch 32 in four sweeps, by 0.1-1 %: H100 exact 31.76 / 31.85 us against
# 31.8 / 31.87 two deep, H200 tanh 28.66 against 28.94); and 8 warps for fp32's FMA maths (half precision
# at 8 warps: each warp computes as much as at 4, since the dots put the warps' rows along the window's 64
# tokens; 57.3 us). The persistent launches (programs_per_sm) and the output projection after the last head
# (output_after_heads) lost to these on an H100 and are only swept (tca_jit's header).
LAUNCH_CONFIGS = {
    KernelChoice.DIRECT: (*(LaunchConfig(nw) for nw in NUM_WARPS_CHOICES), LaunchConfig(4, maxnreg=168)),
    KernelChoice.FOLDED: (*(LaunchConfig(4, maxnreg, head_stages) for head_stages in (1, 2) for maxnreg in (None, 128)),
                          LaunchConfig(4, 128, head_stages=3), LaunchConfig(8, head_stages=1)),
}


def kernel_choice() -> KernelChoice:
    """The kernel from LANGBRT_TCA_KERNEL (default DEFAULT_KERNEL); a bad value is one clear error."""
    return choice_from_env(KERNEL_ENV_VAR, KernelChoice, DEFAULT_KERNEL)


# The MMA paths each kernel may build. The direct kernel's wgmma build was wrong in all three H100 sweeps
# (triton 3.6: max error 98-378 against a bound of 0.3) and faulted in its GPU tests (illegal memory access,
# benchmarks/results/gpu-session-NVIDIA-H100-80GB-HBM3-2026-11-26-3.log), so it has one path: mma.sync.
MMA_PATHS = {KernelChoice.DIRECT: (MmaChoice.MMA,), KernelChoice.FOLDED: (MmaChoice.MMA, MmaChoice.WGMMA)}

# Each kernel's MMA path when LANGBRT_TCA_MMA is unset. Per kernel because one kernel's wgmma build can be
# right while the other's is wrong (H100, triton 3.6: folded right, direct wrong).
# The folded kernel's wgmma build was the faster in both H100 sweeps (fp16, best autotuned config per batch:
# 8.5 against 9.3-9.4 us at batch 8, 31.7 / 31.8 against 34.5 / 34.7 at 32 with its head loop pipelined),
# and its GPU tests pass on it (paper shape forward + backward in fp32/fp16/bf16, fast sigmoid,
# torch.compile), benchmarks/results/gpu-session-NVIDIA-H100-80GB-HBM3-2026-11-26-2.log.
DEFAULT_MMA = {KernelChoice.DIRECT: MmaChoice.MMA, KernelChoice.FOLDED: MmaChoice.WGMMA}


def mma_choice(kernel: KernelChoice) -> MmaChoice:
    """`kernel`'s MMA path: LANGBRT_TCA_MMA, else DEFAULT_MMA[kernel]; a bad value is one clear error.

    A path `kernel` may not build (MMA_PATHS) is an error when LANGBRT_TCA_KERNEL asked for that kernel, and
    gives way to the kernel's own path when the kernel is the folded one's fallback (fp16 overflow of the
    fold): LANGBRT_TCA_MMA=wgmma was meant for the folded kernel, and the direct kernel's wgmma build is wrong.
    """
    requested = choice_from_env(MMA_ENV_VAR, MmaChoice, DEFAULT_MMA[kernel])
    if requested in MMA_PATHS[kernel]:
        return requested
    if kernel_choice() is kernel:
        paths = ", ".join(path.value for path in MMA_PATHS[kernel])
        raise LangBRTInputError(f"{MMA_ENV_VAR}={requested.value} cannot build the {kernel.value} kernel (its "
                                f"wgmma build computes wrong values with triton 3.6); use {paths} or "
                                f"{KERNEL_ENV_VAR}={DEFAULT_KERNEL.value}")
    return DEFAULT_MMA[kernel]


@functools.cache
def _autotuned_kernel(kernel: KernelChoice, bucket: int) -> triton.runtime.Autotuner:
    """The autotuner of `kernel` for one `grid_bucket`, built on first use; it times `_autotune_configs`
    once per key."""
    del bucket  # only the cache key: every bucket tunes the same configs
    return triton.autotune(configs=_autotune_configs(kernel), key=["H", "W", "C", "CM", "NUM_HEADS", "WINDOW", "SHIFT"],
                           prune_configs_by={"early_config_prune": configs_for_dtype})(_JIT_KERNELS[kernel])


def _block(extent: int) -> int:
    """Tile extent for a dimension: the next power of two, at least tl.dot's minimum."""
    return max(MIN_DOT_EXTENT, 1 << (extent - 1).bit_length())


def channel_chunks(channels: int, tokens_per_window: int) -> tuple[int, int]:
    """The folded kernel's two channel tiles (BLOCK_C0, BLOCK_C1), BLOCK_C1 = 0 for none: together they
    cover `channels`, and where C <= 2 * (window tokens) neither is wider than a window's tokens.

    Why two tiles: Triton gives every dot of a chain of dots the warp layout it picks for the first one it
    converts, and for an M x N result with M < N that is the warps side by side along N. One (64, 128)
    output projection (C = 96 padded) thus put the 4 warps across columns for every dot of the kernel,
    and the (64, 16) dots, too narrow for 4 warps, were computed twice (216 instead of 120 MMAs per warp
    and window, sm_90, `benchmarks/kernel_resources.py`). With tiles of at most 64 columns every
    result has M >= N, the warps stack along the window's tokens, and C = 96 needs no padding (64 + 32).
    """
    first = max(MIN_DOT_EXTENT, min(_block(tokens_per_window), 1 << (channels.bit_length() - 1)))
    rest = channels - first
    return first, (_block(rest) if rest > 0 else 0)


@functools.lru_cache(maxsize=64)
def kernel_constants(channels: int, map_channels: int, num_heads: int, window_size: int, shift: int,
                     low_precision_dot: bool, *, fast_sigmoid: bool, padded: bool = True,
                     kernel: KernelChoice = KernelChoice.DIRECT, ptx_math: bool = True) -> Mapping[str, object]:
    """The constexpr arguments of `kernel`'s jit function, shared by the launch here and the AOT build
    (tca_aot): the window and dot settings both kernels take, plus the tile sizes of its own weights.

    `ptx_math`: a CUDA build, whose sigmoids are inline PTX MUFU instructions; False for the interpreter,
    which evaluates the same forms with Triton's ops.
    `padded`: the map's height or width is not a multiple of the window (`windows.padded_size`); a build
    without it assumes every window is all real pixels and checks no token's validity.
    The MMA path is not among them: whether dots use wgmma Triton takes from its environment at build time
    (`mma_build_scope`). Cached and read-only: every launch needs them, and a model calls the op with a
    handful of shapes.
    """
    block_n = _block(window_size * window_size)
    constants = dict(
        C=channels, CM=map_channels, NUM_HEADS=num_heads, WINDOW=window_size, SHIFT=shift, BLOCK_N=block_n,
        LOW_PRECISION_DOT=low_precision_dot, DOT_PRECISION="tf32" if low_precision_dot else "ieee",
        FAST_SIGMOID=fast_sigmoid, PTX_MATH=ptx_math, PADDED=padded,
    )
    if kernel is KernelChoice.FOLDED:
        block_c0, block_c1 = channel_chunks(channels, block_n)
        constants.update(BLOCK_C0=block_c0, BLOCK_C1=block_c1, BLOCK_K=folded_block_k(map_channels, shift > 0))
    else:
        constants.update(LOGIT_BIAS=logit_bias(window_size), HEAD_DIM=channels // num_heads,
                         BLOCK_C=_block(channels), BLOCK_CM=_block(map_channels),
                         BLOCK_D=_block(channels // num_heads))
    return MappingProxyType(constants)


def folded_block_k(map_channels: int, shifted: bool) -> int:
    """The folded kernel's per-head width: the map channels and the ones channel, padded for tl.dot; a
    shifted block's kernel also carries the Swin mask in `REGION_CHANNELS` more (tca_jit._folded_window)."""
    return _block(map_channels + 1 + (REGION_CHANNELS if shifted else 0))


@functools.lru_cache(maxsize=64)
def folded_logits(map_channels: int, window_size: int, shift: int, fast_sigmoid: bool) -> LogitFold:
    """What `tca_folded_fwd_kernel` expects folded into its logits: the logit bias, and the scale of its
    form of the sigmoid (tca_jit._sigmoid_of_folded): 1/2 for 0.5 tanh(s / 2) + 0.5 when `fast_sigmoid`,
    -log2(e) for 1 / (1 + 2^(-s log2 e)) otherwise."""
    scale = 0.5 if fast_sigmoid else -math.log2(math.e)
    return LogitFold(folded_block_k(map_channels, shift > 0), scale=scale, bias=logit_bias(window_size))


def check_arguments(x: torch.Tensor, map_features: torch.Tensor, tensors: tuple[torch.Tensor, ...], num_heads: int,
                    window_size: int, shift: int) -> None:
    """One ValueError naming what does not fit, before any launch. Why: the kernels index the nine tensors
    from x's C and the map's Cm alone, so a mismatched weight was read past its end (silently wrong values,
    or an illegal access on a GPU), no map channel (Cm = 0) crashed the interpreter with a segfault, and
    the asserts these checks replace vanish under `python -O`."""
    if x.dim() != 4 or map_features.dim() != 4 or map_features.shape[:3] != x.shape[:3]:
        raise ValueError(f"the TCA attention takes x (B, H, W, C) and map_features (B, H, W, Cm), got "
                         f"{tuple(x.shape)} and {tuple(map_features.shape)}")
    if not (x.is_floating_point() and map_features.is_floating_point()):
        raise ValueError(f"the TCA attention takes floating-point inputs, got {x.dtype} and {map_features.dtype}")
    C, Cm = x.shape[-1], map_features.shape[-1]
    if Cm < 1:
        raise ValueError("map_features has no channel: channel 0 is the blemish map the queries are weighted by")
    if num_heads < 1 or C % num_heads:
        raise ValueError(f"{C} channels do not split into {num_heads} heads")
    if window_size < 1 or not 0 <= shift < window_size:
        raise ValueError(f"window {window_size} with shift {shift}: need window >= 1 and 0 <= shift < window")
    names = ("q_weight", "q_bias", "k_weight", "k_bias", "v_weight", "v_bias", "out_weight", "out_bias")
    shapes = ((C, C), (C,), (C, Cm), (C,), (C, Cm), (C,), (C, C), (C,))
    for name, t, shape in zip(names, tensors[:-1], shapes, strict=True):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} is {tuple(t.shape)}, expected {shape} for C={C}, Cm={Cm}, {num_heads} heads")
    if tensors[-1].numel() != num_heads:
        raise ValueError(f"alpha is {tuple(tensors[-1].shape)}, expected one temperature per head ({num_heads})")


def _launch(
    x: torch.Tensor, map_features: torch.Tensor,
    q_weight: torch.Tensor, q_bias: torch.Tensor, k_weight: torch.Tensor, k_bias: torch.Tensor,
    v_weight: torch.Tensor, v_bias: torch.Tensor, out_weight: torch.Tensor, out_bias: torch.Tensor,
    alpha: torch.Tensor, num_heads: int, window_size: int, shift: int, fast_sigmoid: bool | None,
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """Checks arguments, makes inputs contiguous and launches the kernel once; returns (B, H, W, C).

    `fast_sigmoid` None: LANGBRT_TCA_SIGMOID's form for these inputs (`fast_sigmoid_for`), read here at
    each launch like the other switches, inside the op torch.compile leaves opaque (read in traced code,
    a bad value would surface as a dynamo error, not its one line).
    `config` skips the autotuner and launches that config of the kernel that runs (one of its
    LAUNCH_CONFIGS or any other); benchmarks/kernel_sweep.py and the GPU tests try each.
    """
    check_arguments(x, map_features, (q_weight, q_bias, k_weight, k_bias, v_weight, v_bias, out_weight, out_bias,
                                      alpha), num_heads, window_size, shift)
    B, H, W, C = x.shape
    Cm = map_features.shape[-1]
    if B * H * W * max(C, Cm) >= 2**31:
        raise ValueError(f"the Triton TCA kernel indexes with int32: {tuple(x.shape)} is too large, split the batch")
    check_device(x.device)
    half = x.dtype in (torch.float16, torch.bfloat16)
    low_precision_dot = half and not (_INTERPRETING and x.dtype == torch.bfloat16)  # no bf16 maths on CPU

    which = kernel_choice()
    ptx_math = x.device.type == "cuda" and not _INTERPRETING
    fast = fast_sigmoid_for(x) if fast_sigmoid is None else bool(fast_sigmoid)
    if which is KernelChoice.FOLDED:
        params = TCAParams(q_weight, q_bias, k_weight, k_bias, v_weight, v_bias, out_weight, out_bias, alpha)
        folded = folded_weights(params, num_heads, x.dtype, folded_logits(Cm, window_size, shift, fast))
        if not folded.finite:  # the fold overflowed fp16; the direct kernel divides by alpha in fp32
            which = KernelChoice.DIRECT
    if which is KernelChoice.FOLDED:
        tensors = [x.contiguous(), map_features.contiguous(), *folded.tensors()]
    else:
        tensors = [t.contiguous() for t in (x, map_features, q_weight, q_bias, k_weight, k_bias,
                                            v_weight, v_bias, out_weight, out_bias, alpha)]
    mma = mma_choice(which)  # after the fallback: the direct kernel runs on its own MMA path
    Hp, Wp = padded_size(H, window_size), padded_size(W, window_size)
    constants = kernel_constants(C, Cm, num_heads, window_size, shift, low_precision_dot, fast_sigmoid=fast,
                                 padded=(Hp, Wp) != (H, W), kernel=which, ptx_math=ptx_math)
    out = torch.empty((B, H, W, C), dtype=x.dtype, device=x.device)  # (B, H, W, C)
    n_windows = (Hp // window_size) * (Wp // window_size)
    kernel, launch_options = _autotuned_kernel(which, grid_bucket(n_windows * B)), {}
    if config is not None:
        if (config.head_stages is None) != (which is KernelChoice.DIRECT):
            raise ValueError(f"{config} does not fit the {which.value} kernel: only the folded one has head_stages "
                             "(a folded call whose fold overflows fp16 runs the direct kernel)")
        kernel = _JIT_KERNELS[which]
        launch_options = {"num_warps": config.num_warps, "num_stages": NUM_STAGES, "maxnreg": config.maxnreg,
                          **config.kernel_arguments()}

    def grid(meta: Mapping[str, object]) -> tuple[int, int]:
        """(programs per image, B): one per window, or a persistent launch's count (the config's)."""
        programs_per_sm = meta.get("PROGRAMS_PER_SM", 0)
        if not programs_per_sm:
            return n_windows, B
        return persistent_programs(programs_per_sm, _sm_count(x.device), n_windows, B), B

    with cuda_device_guard(x.device), mma_build_scope(mma):
        kernel[grid](*tensors, H, W, out, **constants, **launch_options)
    return out


def _register_op():
    """Register the forward as the custom op `torch.ops.langbrt.tca_attention`.

    torch.compile and torch.export see one opaque node and call it at run time, so every launch goes through
    `_launch` and its MMA build scope. (A `triton_op` would let inductor build the kernel itself, outside that
    scope: on Hopper the wgmma build, which computes wrong results with triton 3.6; see MmaChoice.)
    """

    @torch.library.custom_op(OP_NAME, mutates_args=())
    def tca_attention(
        x: torch.Tensor, map_features: torch.Tensor,
        q_weight: torch.Tensor, q_bias: torch.Tensor, k_weight: torch.Tensor, k_bias: torch.Tensor,
        v_weight: torch.Tensor, v_bias: torch.Tensor, out_weight: torch.Tensor, out_bias: torch.Tensor,
        alpha: torch.Tensor, num_heads: int, window_size: int, shift: int, fast_sigmoid: bool | None,
    ) -> torch.Tensor:
        return _launch(x, map_features, q_weight, q_bias, k_weight, k_bias, v_weight, v_bias, out_weight,
                       out_bias, alpha, num_heads, window_size, shift, fast_sigmoid)

    @tca_attention.register_fake
    def _(x: torch.Tensor, *_args: object) -> torch.Tensor:
        return x.new_empty(x.shape)  # (B, H, W, C), contiguous like the kernel's output

    return tca_attention


_tca_attention_op = _register_op()


class _TCAFunction(torch.autograd.Function):
    """Fused kernel forward; backward by recomputing the reference (exact sigmoid) and differentiating it."""

    @staticmethod
    def forward(ctx, x, map_features, num_heads, window_size, shift, fast_sigmoid, *tensors):
        ctx.save_for_backward(x, map_features, *tensors)
        ctx.config = (num_heads, window_size, shift)
        # Traced (torch.compile, torch.export), the registered op keeps the launch opaque; eager, calling
        # `_launch` directly skips the op's Python dispatch, ~13 us of CPU per call (2-core CI box).
        launch = _tca_attention_op if torch.compiler.is_compiling() else _launch
        return launch(x, map_features, *tensors, num_heads, window_size, shift, fast_sigmoid)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, map_features, *tensors = ctx.saved_tensors
        needs = ctx.needs_input_grad
        inputs = (x, map_features, *tensors)
        wanted = (needs[0], needs[1], *needs[6:])  # skip num_heads, window_size, shift, fast_sigmoid
        wanted_idx = [i for i, w in enumerate(wanted) if w]

        def reference_of_wanted(*wanted_inputs: torch.Tensor) -> torch.Tensor:
            full = list(inputs)
            for i, t in zip(wanted_idx, wanted_inputs, strict=True):
                full[i] = t
            return windowed_sigmoid_cross_attention_reference(
                full[0], full[1], TCAParams(*full[2:]), *ctx.config
            )  # (B, H, W, C)

        # torch.func.vjp rather than autograd.grad: dynamo traces it, so torch.compile keeps one graph.
        _, vjp_fn = torch.func.vjp(reference_of_wanted, *(inputs[i] for i in wanted_idx))
        grads = iter(vjp_fn(grad_out))
        result = [next(grads) if w else None for w in wanted]
        return (result[0], result[1], None, None, None, None, *result[2:])


def windowed_sigmoid_cross_attention_triton(
    x: torch.Tensor,
    map_features: torch.Tensor,
    params: TCAParams,
    num_heads: int,
    window_size: int,
    shift: int,
    *,
    fast_sigmoid: bool | None = None,
) -> torch.Tensor:
    """Fused TCA attention: x (B, H, W, C), map_features (B, H, W, Cm) -> (B, H, W, C) in x's dtype.

    Same contract as `windowed_sigmoid_cross_attention_reference`; differentiable in x, map_features and
    every tensor of `params` (alpha included) through a recompute-based backward. `fast_sigmoid` computes
    the forward's sigmoid as 0.5 tanh(s / 2) + 0.5 with PTX `tanh.approx.f32` (on CUDA; the interpreter
    evaluates the same form exactly); None: LANGBRT_TCA_SIGMOID's choice for these inputs (`SigmoidChoice`:
    by default the tanh form in half precision on CUDA, the exact one otherwise).

    Under autocast every input is cast to the autocast dtype first, as autocast would cast a matmul's: the
    kernel then runs in half precision (an fp32 LayerNorm output would otherwise pick its fp32 build, 8x
    slower), and the backward's recomputed reference, which runs outside autocast, sees one dtype (bf16 maps
    beside an fp32 x and fp32 weights made it fail). The casts are differentiable: gradients come back in
    each input's own dtype.
    """
    tensors = params.tensors()
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, map_features, tensors = x.to(dtype), map_features.to(dtype), tuple(t.to(dtype) for t in tensors)
    return _TCAFunction.apply(x, map_features, num_heads, window_size, shift, fast_sigmoid, *tensors)


__all__ = ["OP_NAME", "windowed_sigmoid_cross_attention_triton"]
