"""Which kernel, MMA path and sigmoid form a TCA launch uses, and where it may run: the LANGBRT_TCA_*
switches, their defaults and the measurements behind each default.

Kept apart from the launch (tca_triton) so the loaders can check a user's switches at start-up
(`dispatch.check_impl_runs`) and the benchmarks can name variants without reading launch code. Every
switch is read from the environment at each call, not at import, so a process can change it between
launches (the benchmarks and tests do), and a bad value is one clear error line.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from enum import Enum

import torch
import triton

from langbrt.errors import LangBRTInputError

from .dispatch import choice_from_env, environ_set


def _interpreting() -> bool:
    """True when triton.jit builds interpreter kernels (read at decoration time, i.e. at this import)."""
    knobs = getattr(triton, "knobs", None)  # triton >= 3.4
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# Read once: triton.jit decides interpreter or compiled kernels when the tca_*_jit modules are imported. Tests patch it.
INTERPRETING = _interpreting()


def check_device(device: torch.device) -> None:
    """The kernel runs on CUDA, or anywhere in Triton's interpreter; elsewhere, one line saying what to do."""
    if device.type != "cuda" and not INTERPRETING:
        raise LangBRTInputError(
            "the Triton TCA kernel needs a CUDA device (or TRITON_INTERPRET=1 set before "
            "langbrt.kernels.tca_triton is imported); set LANGBRT_ATTENTION=reference to use the PyTorch path"
        )


class KernelChoice(str, Enum):
    """Which kernel computes the attention (LANGBRT_TCA_KERNEL).

    FOLDED (default): `tca_folded_fwd_kernel`, from weights folded through the narrow map features
    (`tca_fold.py`): per head, every matmul over Cm + 1 channels instead of head_dim and no K / V
    projection, laid out so the warps stack along the window (tca_folded_jit's header). Its sm_90 build executes
    under half the instructions per window of DIRECT in fewer registers, and on an H100 (triton 3.6, paper
    shape, fp16, shifted) it ran in 34.5 us at batch 32 against DIRECT's 73.0, 9.3 against 20.4 at batch 8
    (`benchmarks/results/kernel-sweep-NVIDIA-H100-80GB-HBM3-2026-11-26.json`). A fold that overflows fp16
    (`FoldedTCAWeights.finite`) runs DIRECT instead.
    DIRECT: `tca_fwd_kernel`, from the nine TCA tensors as the reference does; the one TensorRT's AOT
    plugin bakes in (tca_aot), whose node carries those tensors, not a fold.
    """

    DIRECT = "direct"
    FOLDED = "folded"


KERNEL_ENV_VAR = "LANGBRT_TCA_KERNEL"
DEFAULT_KERNEL = KernelChoice.FOLDED


def kernel_choice() -> KernelChoice:
    """The kernel from LANGBRT_TCA_KERNEL (default DEFAULT_KERNEL); a bad value is one clear error."""
    return choice_from_env(KERNEL_ENV_VAR, KernelChoice, DEFAULT_KERNEL)


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
        return x.dtype in (torch.float16, torch.bfloat16) and x.device.type == "cuda" and not INTERPRETING
    return choice is SigmoidChoice.TANH
