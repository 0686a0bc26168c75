"""The TCA attention as ONE fused Triton kernel launch, plus a recompute-based backward.

What one program computes
-------------------------
One program instance handles one (window, batch) pair: the w*w tokens of one shifted window of one image.
It gathers those tokens straight from the unpartitioned (B, H, W, C) / (B, H, W, Cm) tensors by index
arithmetic (cyclic shift, window partition and padding are never materialised), then for every head h

    Q_h = (x * (1 - m)) Wq_h^T + bq_h        (N, d)   m = map_features[..., 0]
    K_h = m~ Wk_h^T + bk_h,  V_h = m~ Wv_h^T + bv_h
    A_h = sigmoid(Q_h K_h^T / alpha_h - log(w*w)) * keep          (N, N)
    acc += (A_h V_h) Wo[:, head h]^T                               (N, C)

and writes acc + bo back to the token's own (B, H, W, C) position. `keep` is the Swin shift-region mask
(same labels as `windows.region_ids`) and-ed with "the key is a real pixel"; padded queries are not stored.

Tile layout and why
-------------------
The whole window lives on chip: a (BLOCK_N, BLOCK_C) query-input tile, a (BLOCK_N, BLOCK_CM) map tile, one
(BLOCK_N, BLOCK_N) score tile per head and a (BLOCK_N, BLOCK_C) fp32 output accumulator. With w = 8 that is
N = 64 tokens: a flash-style loop over key blocks with an online softmax buys nothing at that size, and
sigmoid attention needs no row max / row sum at all. Heads are a loop inside the program so the output
projection can accumulate across heads without writing the (N, C) head outputs to memory; the loop is kept
rolled (not tl.static_range): unrolled, the build spills registers and is slower (H200, fp16, batch 32:
114 us against 100 us). Computing all heads at once instead (one projection dot for every head, head-batched
3-D dots for the scores and A V) was slower still (122 us): 48 KiB of shared memory and spills at every width.
Offsets are int32 (64-bit address tensors cost two registers per element). Every
extent is padded to a power of two >= 16 (tl.dot's minimum) and masked: C = 96 -> 128, Cm = 9 -> 16,
head_dim 32 stays 32. Matmuls take fp16/bf16 operands when the inputs are half precision (fp32 accumulate)
and exact fp32 ("ieee") operands for fp32 inputs, so the fp32 path matches the reference, not TF32.
On Hopper the half-precision dots are built as mma.sync, not wgmma: Triton 3.6's wgmma build of this kernel
computes wrong values (measured on an H200; see MmaChoice).

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
import os
import threading
from collections.abc import Iterator, Mapping
from enum import Enum
from types import MappingProxyType

import torch
import triton
import triton.language as tl

from .dispatch import choice_from_env
from .reference import TCAParams, logit_bias, windowed_sigmoid_cross_attention_reference
from .windows import padded_size

OP_NAME = "langbrt::tca_attention"
MIN_DOT_EXTENT = 16  # tl.dot needs every matmul dimension >= 16


def _interpreting() -> bool:
    """True when triton.jit builds interpreter kernels (read at decoration time, i.e. at this import)."""
    knobs = getattr(triton, "knobs", None)  # triton >= 3.4
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_INTERPRETING = _interpreting()


# Warp counts the autotuner times (per grid size: `grid_bucket`). Measured on an H200 at the paper shape,
# mma.sync build (benchmarks/kernel_sweep.py, CUDA-graph replay): fp16 24.5 / 38.1 / 59.8 us at batch 8 and
# 99.5 / 156 / 237 us at batch 32 at 4 / 8 / 16 warps (bf16 the same), fp32 at batch 8 594 / 292 / 469 us.
# 4 warps wins for half precision although ptxas reports a small spill there (~200 B at 255 registers): two
# blocks fit per SM, against one at 8 warps. One pipeline stage: nothing in the head loop is worth prefetching.
NUM_WARPS_CHOICES = (4, 8, 16)
NUM_STAGES = 1


class MmaChoice(str, Enum):
    """Which tensor-core instructions the half-precision matmuls use on Hopper (sm_90). fp32 uses exact FMA
    maths and other GPUs have no wgmma, so there every choice builds the same instructions.

    MMA (default): the dots are built with Triton's `DISABLE_MMA_V3` set, i.e. mma.sync as on Ampere.
    WGMMA: Triton's own choice on Hopper, warpgroup MMA. With triton 3.6 on an H200 (2026-11-26,
    benchmarks/results/kernel-sweep-NVIDIA-H200-2026-11-26.json) that build is WRONG (max error 102-204
    against a bound of 0.3 at 4 and 8 warps, fp16 and bf16) or faults (illegal memory access at 16 warps),
    while compute-sanitizer reports no bad access: a miscompile, not an out-of-bounds index in this kernel.
    Unrolling the head loop does not help (still wrong), while a variant that ran the score and A V dots as
    3-D mma.sync dots with only the projections on wgmma was right: the bad build is that of the two dots
    whose B operands (K^T, V) the kernel computes and stores to shared memory itself.
    Kept selectable (LANGBRT_TCA_MMA=wgmma) to re-test on newer Tritons.
    HYBRID: wgmma for the four projections, mma.sync for the score and A V dots, which the kernel then writes
    as 3-D dots over a batch of one (Triton has no batched wgmma, so it builds those with mma.sync on Hopper
    too). Why it may pay: a warpgroup MMA reads its B operand (the weight tiles) from shared memory once per
    warpgroup, where mma.sync makes every warp load it, and shared memory is the kernel's busiest unit
    (benchmarks/results/ncu-*.txt). Not yet run on a GPU: benchmarks/kernel_sweep.py checks it first.
    """

    MMA = "mma"
    WGMMA = "wgmma"
    HYBRID = "hybrid"


MMA_ENV_VAR = "LANGBRT_TCA_MMA"
DEFAULT_MMA = MmaChoice.MMA


def mma_choice() -> MmaChoice:
    """The MMA path from LANGBRT_TCA_MMA (default DEFAULT_MMA); a bad value is one clear error."""
    return choice_from_env(MMA_ENV_VAR, MmaChoice, DEFAULT_MMA)


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
    with _ENV_LOCK:
        previous = os.environ.get(_TRITON_NO_WGMMA)
        os.environ[_TRITON_NO_WGMMA] = "1"
        try:
            yield
        finally:
            if previous is None:
                del os.environ[_TRITON_NO_WGMMA]
            else:
                os.environ[_TRITON_NO_WGMMA] = previous


_TRITON_NO_WGMMA = "DISABLE_MMA_V3"
_ENV_LOCK = threading.Lock()


def _autotune_configs() -> list[triton.Config]:
    """The launch configs the autotuner times; a single one under the interpreter, where timing is slow."""
    if _INTERPRETING:
        return [triton.Config({}, num_warps=4, num_stages=1)]
    return [triton.Config({}, num_warps=nw, num_stages=NUM_STAGES) for nw in NUM_WARPS_CHOICES]


@triton.jit
def _sigmoid(s, FAST: tl.constexpr):
    """sigmoid(s) in fp32; FAST uses one `tanh.approx.f32` (sigmoid(s) = 0.5 tanh(s/2) + 0.5), CUDA only."""
    if FAST:
        t = tl.inline_asm_elementwise(
            "tanh.approx.f32 $0, $1;", "=f,f", [0.5 * s], dtype=tl.float32, is_pure=True, pack=1
        )
        y = 0.5 * t + 0.5
    else:
        y = tl.sigmoid(s)
    return y


@triton.jit
def _matmul(a, b, AS_3D: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """a @ b in fp32, (M, K) x (K, N) -> (M, N); AS_3D computes it as a (1, M, K) x (1, K, N) dot, which
    Triton builds with mma.sync even where it would pick wgmma for a 2-D dot."""
    if AS_3D:
        c = tl.dot(tl.reshape(a, (1, a.shape[0], a.shape[1])), tl.reshape(b, (1, b.shape[0], b.shape[1])),
                   input_precision=DOT_PRECISION)  # (1, M, N)
        c = tl.reshape(c, (a.shape[0], b.shape[1]))
    else:
        c = tl.dot(a, b, input_precision=DOT_PRECISION)  # (M, N)
    return c


@triton.jit
def _region_band(pos, size_padded, WINDOW: tl.constexpr, SHIFT: tl.constexpr):
    """Swin band (0, 1, 2) of a shifted, padded coordinate; the same slices as `windows.region_ids`."""
    band = tl.where(pos >= size_padded - WINDOW, 1, 0)
    return tl.where(pos >= size_padded - SHIFT, 2, band)


@triton.jit
def _tca_fwd_kernel(
    x_ptr, map_ptr,  # (B, H, W, C), (B, H, W, CM), contiguous
    wq_ptr, bq_ptr, wk_ptr, bk_ptr,  # (C, C) (C,) (C, CM) (C,)
    wv_ptr, bv_ptr, wo_ptr, bo_ptr,  # (C, CM) (C,) (C, C) (C,)
    alpha_ptr,  # (NUM_HEADS,)
    H, W,  # int32; the batch is the grid's second axis
    out_ptr,  # (B, H, W, C), contiguous
    C: tl.constexpr, CM: tl.constexpr, LOGIT_BIAS: tl.constexpr,  # LOGIT_BIAS = -log(WINDOW * WINDOW)
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, WINDOW: tl.constexpr, SHIFT: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_CM: tl.constexpr, BLOCK_D: tl.constexpr,
    LOW_PRECISION_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, FAST_SIGMOID: tl.constexpr,
    SCORES_3D: tl.constexpr,  # score and A V dots as 3-D dots over a batch of one (MmaChoice.HYBRID)
):
    win = tl.program_id(0)
    b = tl.program_id(1)  # int32 offsets: _launch checks B*H*W*max(C, CM) < 2**31
    if LOW_PRECISION_DOT:
        op_dtype = x_ptr.dtype.element_ty
    else:
        op_dtype = tl.float32

    # Token coordinates: window-local (n // w, n % w) -> shifted padded map -> source pixel.
    Hp = tl.cdiv(H, WINDOW) * WINDOW
    Wp = tl.cdiv(W, WINDOW) * WINDOW
    n_win_w = Wp // WINDOW
    n = tl.arange(0, BLOCK_N)  # (BN,)
    sr = (win // n_win_w) * WINDOW + n // WINDOW  # row in the shifted, padded map
    sc = (win % n_win_w) * WINDOW + n % WINDOW
    hr = sr + SHIFT  # torch.roll(-shift): shifted position r holds source row (r + shift) % Hp
    hr = tl.where(hr >= Hp, hr - Hp, hr)
    hc = sc + SHIFT
    hc = tl.where(hc >= Wp, hc - Wp, hc)
    valid = (n < WINDOW * WINDOW) & (hr < H) & (hc < W)  # (BN,) real pixel, not padding
    tok = (b * H + hr) * W + hc  # (BN,) flat token index into (B, H, W)

    keep = valid[None, :]  # (1, BN) padded keys never contribute
    if SHIFT > 0:
        region = _region_band(sr, Hp, WINDOW, SHIFT) * 3 + _region_band(sc, Wp, WINDOW, SHIFT)  # (BN,)
        keep = keep & (region[:, None] == region[None, :])  # (BN, BN)

    cc = tl.arange(0, BLOCK_C)
    c_mask = cc < C
    cm = tl.arange(0, BLOCK_CM)
    cm_mask = cm < CM
    x = tl.load(x_ptr + tok[:, None] * C + cc[None, :], mask=valid[:, None] & c_mask[None, :], other=0.0)
    mf = tl.load(map_ptr + tok[:, None] * CM + cm[None, :], mask=valid[:, None] & cm_mask[None, :], other=0.0)
    m = tl.load(map_ptr + tok * CM, mask=valid, other=0.0).to(tl.float32)  # (BN,) blemish map, channel 0
    q_in = (x.to(tl.float32) * (1.0 - m[:, None])).to(op_dtype)  # (BN, BC) mask-suppressed queries
    kv_in = mf.to(op_dtype)  # (BN, BCM)

    dd = tl.arange(0, BLOCK_D)
    d_mask = dd < HEAD_DIM
    cd_mask = c_mask[:, None] & d_mask[None, :]  # (BC, BD)
    md_mask = cm_mask[:, None] & d_mask[None, :]  # (BCM, BD)
    dc_mask = d_mask[:, None] & c_mask[None, :]  # (BD, BC)
    acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
    for h in range(NUM_HEADS):  # rolled: unrolled, ptxas spilled registers (benchmarks/kernel_resources.py)
        rows = h * HEAD_DIM + dd  # (BD,) this head's channels
        wq_t = tl.load(wq_ptr + rows[None, :] * C + cc[:, None], mask=cd_mask, other=0.0)  # (BC, BD) = Wq_h^T
        wk_t = tl.load(wk_ptr + rows[None, :] * CM + cm[:, None], mask=md_mask, other=0.0)  # (BCM, BD)
        wv_t = tl.load(wv_ptr + rows[None, :] * CM + cm[:, None], mask=md_mask, other=0.0)  # (BCM, BD)
        bq = tl.load(bq_ptr + rows, mask=d_mask, other=0.0).to(tl.float32)
        bk = tl.load(bk_ptr + rows, mask=d_mask, other=0.0).to(tl.float32)
        bv = tl.load(bv_ptr + rows, mask=d_mask, other=0.0).to(tl.float32)
        q = tl.dot(q_in, wq_t.to(op_dtype), input_precision=DOT_PRECISION) + bq[None, :]  # (BN, BD)
        k = tl.dot(kv_in, wk_t.to(op_dtype), input_precision=DOT_PRECISION) + bk[None, :]  # (BN, BD)
        v = tl.dot(kv_in, wv_t.to(op_dtype), input_precision=DOT_PRECISION) + bv[None, :]  # (BN, BD)

        inv_alpha = 1.0 / tl.load(alpha_ptr + h).to(tl.float32)
        s = _matmul(q.to(op_dtype), tl.trans(k.to(op_dtype)), SCORES_3D, DOT_PRECISION)  # (BN, BN)
        a = _sigmoid(s * inv_alpha + LOGIT_BIAS, FAST_SIGMOID)
        a = tl.where(keep, a, 0.0)  # (BN, BN)
        o = _matmul(a.to(op_dtype), v.to(op_dtype), SCORES_3D, DOT_PRECISION)  # (BN, BD)

        wo_t = tl.load(wo_ptr + cc[None, :] * C + rows[:, None], mask=dc_mask, other=0.0)  # (BD, BC)
        acc = tl.dot(o.to(op_dtype), wo_t.to(op_dtype), acc, input_precision=DOT_PRECISION)  # (BN, BC)

    bo = tl.load(bo_ptr + cc, mask=c_mask, other=0.0).to(tl.float32)
    out = acc + bo[None, :]
    tl.store(out_ptr + tok[:, None] * C + cc[None, :], out.to(out_ptr.dtype.element_ty),
             mask=valid[:, None] & c_mask[None, :])


def grid_bucket(n_programs: int) -> int:
    """Which autotuner a launch of `n_programs` programs uses: one per power-of-two grid size.

    The best width depends on how many waves the grid makes, and Triton keys its autotuner on kernel
    arguments only, not on the grid (whose second axis is the batch). With one autotuner for all batches,
    the first call's batch decides for every later one: on an H200 the bf16 benchmark, tuned at batch 1
    (64 programs), picked 8 warps, which at batch 32 took 160 us against 98 us for 4 warps.
    """
    return n_programs.bit_length()


@functools.cache
def _autotuned_kernel(bucket: int) -> triton.runtime.Autotuner:
    """The autotuner for one `grid_bucket`, built on first use; it times `_autotune_configs` once per key."""
    del bucket  # only the cache key: every bucket tunes the same configs
    return triton.autotune(configs=_autotune_configs(),
                           key=["H", "W", "C", "CM", "NUM_HEADS", "WINDOW", "SHIFT"])(_tca_fwd_kernel)


def _block(extent: int) -> int:
    """Tile extent for a dimension: the next power of two, at least tl.dot's minimum."""
    return max(MIN_DOT_EXTENT, 1 << (extent - 1).bit_length())


@functools.lru_cache(maxsize=64)
def kernel_constants(channels: int, map_channels: int, num_heads: int, window_size: int, shift: int,
                     low_precision_dot: bool, *, fast_sigmoid: bool, mma: MmaChoice) -> Mapping[str, object]:
    """The constexpr arguments of `_tca_fwd_kernel`, shared by the launch here and the AOT build (tca_aot).

    Of the MMA path only the dot shapes HYBRID asks for are among them: whether 2-D dots use wgmma Triton
    takes from its environment at build time (`mma_build_scope`). Cached and read-only: every launch needs
    them, and a model calls the op with a handful of shapes.
    """
    return MappingProxyType(dict(
        C=channels, CM=map_channels, LOGIT_BIAS=logit_bias(window_size),
        NUM_HEADS=num_heads, HEAD_DIM=channels // num_heads, WINDOW=window_size, SHIFT=shift,
        BLOCK_N=_block(window_size * window_size), BLOCK_C=_block(channels), BLOCK_CM=_block(map_channels),
        BLOCK_D=_block(channels // num_heads),
        LOW_PRECISION_DOT=low_precision_dot, DOT_PRECISION="tf32" if low_precision_dot else "ieee",
        FAST_SIGMOID=fast_sigmoid, SCORES_3D=mma is MmaChoice.HYBRID,
    ))


def _launch(
    x: torch.Tensor, map_features: torch.Tensor,
    q_weight: torch.Tensor, q_bias: torch.Tensor, k_weight: torch.Tensor, k_bias: torch.Tensor,
    v_weight: torch.Tensor, v_bias: torch.Tensor, out_weight: torch.Tensor, out_bias: torch.Tensor,
    alpha: torch.Tensor, num_heads: int, window_size: int, shift: int, fast_sigmoid: bool,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Checks arguments, makes inputs contiguous and launches the kernel once; returns (B, H, W, C).

    `num_warps` skips the autotuner and launches that width (benchmarks/kernel_sweep.py tries each one).
    """
    B, H, W, C = x.shape
    Cm = map_features.shape[-1]
    assert map_features.shape[:3] == (B, H, W), (x.shape, map_features.shape)
    assert C % num_heads == 0, (C, num_heads)
    assert 0 <= shift < window_size, (shift, window_size)
    assert alpha.numel() == num_heads, (alpha.shape, num_heads)
    if B * H * W * max(C, Cm) >= 2**31:
        raise ValueError(f"the Triton TCA kernel indexes with int32: {tuple(x.shape)} is too large, split the batch")
    if x.device.type != "cuda" and not _INTERPRETING:
        raise RuntimeError(
            "the Triton TCA kernel needs CUDA tensors (or TRITON_INTERPRET=1 set before "
            "langbrt.kernels.tca_triton is imported); set LANGBRT_ATTENTION=reference to use the PyTorch path"
        )
    half = x.dtype in (torch.float16, torch.bfloat16)
    low_precision_dot = half and not (_INTERPRETING and x.dtype == torch.bfloat16)  # no bf16 maths on CPU

    tensors = [t.contiguous() for t in (x, map_features, q_weight, q_bias, k_weight, k_bias,
                                        v_weight, v_bias, out_weight, out_bias, alpha)]
    out = torch.empty((B, H, W, C), dtype=x.dtype, device=x.device)  # (B, H, W, C)
    n_windows = (padded_size(H, window_size) // window_size) * (padded_size(W, window_size) // window_size)
    kernel, launch_options = _autotuned_kernel(grid_bucket(n_windows * B)), {}
    if num_warps is not None:
        kernel, launch_options = _tca_fwd_kernel, {"num_warps": num_warps, "num_stages": NUM_STAGES}
    mma = mma_choice()
    constants = kernel_constants(C, Cm, num_heads, window_size, shift, low_precision_dot, mma=mma,
                                 fast_sigmoid=bool(fast_sigmoid) and x.device.type == "cuda" and not _INTERPRETING)
    # Triton launches on the current CUDA device: make that x's device (x on cuda:1 while cuda:0 is current).
    device_guard = torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
    with device_guard, mma_build_scope(mma):
        kernel[(n_windows, B)](*tensors, H, W, out, **constants, **launch_options)
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
        alpha: torch.Tensor, num_heads: int, window_size: int, shift: int, fast_sigmoid: bool,
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
    fast_sigmoid: bool = False,
) -> torch.Tensor:
    """Fused TCA attention: x (B, H, W, C), map_features (B, H, W, Cm) -> (B, H, W, C) in x's dtype.

    Same contract as `windowed_sigmoid_cross_attention_reference`; differentiable in x, map_features and
    every tensor of `params` (alpha included) through a recompute-based backward. `fast_sigmoid` swaps
    tl.sigmoid for PTX `tanh.approx.f32` in the forward (CUDA only; ignored in the interpreter).
    """
    return _TCAFunction.apply(x, map_features, num_heads, window_size, shift, fast_sigmoid, *params.tensors())


__all__ = ["OP_NAME", "windowed_sigmoid_cross_attention_triton"]
