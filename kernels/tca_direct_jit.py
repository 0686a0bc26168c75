"""The direct fused TCA kernel (Triton), from the nine TCA tensors as the reference computes them.

tca_triton.py chooses, launches and registers it; TensorRT's plugin builds it ahead of time (tca_aot.py).
The default kernel is the folded one (tca_folded_jit.py); the device functions both share are
tca_window_jit.py's.

What one program computes
-------------------------
One program instance handles one (window, batch) pair: the w*w tokens of one shifted window of one image
(a persistent launch of the folded kernel, tca_folded_jit.py, loops over several windows of one image).
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
On Hopper this kernel's half-precision dots are built as mma.sync only: Triton 3.6's wgmma build of it
computes wrong values (tca_choices.MmaChoice, MMA_PATHS); the folded kernel builds wgmma by default.

Warp layout: Triton gives all the dots of a chain one warp layout, picked from the first dot it converts,
and for this kernel's (64, 128) output tile that put the 4 warps side by side along the 128 columns
([1, 4]): every warp holds all 64 rows, the (64, 32) head dots are split 4 ways and the score tile crosses
shared memory on its way into A V. The folded kernel (tca_folded_jit.py) is laid out to avoid that.

Importing this module imports triton; it never probes a device. On CPU the kernels run only in Triton's
interpreter (`TRITON_INTERPRET=1` before this import).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .tca_window_jit import load_channels, sigmoid, store_channels, window_tokens


@triton.jit
def _program_window(x_ptr, map_ptr, H, W, C: tl.constexpr, CM: tl.constexpr, WINDOW: tl.constexpr,
                    SHIFT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, op_dtype: tl.constexpr,
                    PADDED: tl.constexpr):
    """This program's window (grid axis 0) of its image (axis 1): `window_tokens`, plus the window's
    queries x * (1 - m) as (BN, BC) matmul operands in `op_dtype`, padding 0."""
    win = tl.program_id(0)
    b = tl.program_id(1)  # int32 offsets: _launch checks B*H*W*max(C, CM) < 2**31
    tok, valid, keep = window_tokens(win, b, H, W, WINDOW, SHIFT, BLOCK_N, PADDED)
    x = load_channels(x_ptr, tok, valid, tl.arange(0, BLOCK_C), C, tl.float32)  # (BN, BC)
    m = tl.load(map_ptr + tok * CM, mask=valid, other=0.0).to(tl.float32)  # (BN,) blemish map, channel 0
    q_in = (x * (1.0 - m[:, None])).to(op_dtype)  # (BN, BC) mask-suppressed queries
    return tok, valid, keep, q_in


@triton.jit
def tca_fwd_kernel(
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
    PTX_MATH: tl.constexpr,  # CUDA build: MUFU instructions through inline PTX (not in the interpreter)
    PADDED: tl.constexpr,  # H or W is not a multiple of WINDOW (tca_triton.kernel_constants)
):
    if LOW_PRECISION_DOT:
        op_dtype = x_ptr.dtype.element_ty
    else:
        op_dtype = tl.float32
    tok, valid, keep, q_in = _program_window(x_ptr, map_ptr, H, W, C, CM, WINDOW, SHIFT, BLOCK_N, BLOCK_C, op_dtype,
                                             PADDED)

    cc = tl.arange(0, BLOCK_C)
    c_mask = cc < C
    cm = tl.arange(0, BLOCK_CM)
    cm_mask = cm < CM
    mf = tl.load(map_ptr + tok[:, None] * CM + cm[None, :], mask=valid[:, None] & cm_mask[None, :], other=0.0)
    kv_in = mf.to(op_dtype)  # (BN, BCM)

    dd = tl.arange(0, BLOCK_D)
    d_mask = dd < HEAD_DIM
    cd_mask = c_mask[:, None] & d_mask[None, :]  # (BC, BD)
    md_mask = cm_mask[:, None] & d_mask[None, :]  # (BCM, BD)
    dm_mask = d_mask[:, None] & cm_mask[None, :]  # (BD, BCM)
    dc_mask = d_mask[:, None] & c_mask[None, :]  # (BD, BC)
    acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
    for h in range(NUM_HEADS):  # rolled: unrolled, ptxas spilled registers (benchmarks/kernel_resources.py)
        rows = h * HEAD_DIM + dd  # (BD,) this head's channels
        wq_t = tl.load(wq_ptr + rows[None, :] * C + cc[:, None], mask=cd_mask, other=0.0)  # (BC, BD) = Wq_h^T
        wk = tl.load(wk_ptr + rows[:, None] * CM + cm[None, :], mask=dm_mask, other=0.0)  # (BD, BCM) = Wk_h
        wv_t = tl.load(wv_ptr + rows[None, :] * CM + cm[:, None], mask=md_mask, other=0.0)  # (BCM, BD)
        bq = tl.load(bq_ptr + rows, mask=d_mask, other=0.0).to(tl.float32)
        bk = tl.load(bk_ptr + rows, mask=d_mask, other=0.0).to(tl.float32)  # (BD,)
        bv = tl.load(bv_ptr + rows, mask=d_mask, other=0.0).to(tl.float32)
        q = tl.dot(q_in, wq_t.to(op_dtype), input_precision=DOT_PRECISION) + bq[None, :]  # (BN, BD)
        # K_h^T straight from Wk_h m~^T, not tl.trans(K_h): Triton on Hopper miscompiles the transpose of a
        # wgmma result (triton-lang/triton#6124; flash-linear-attention PR #826 works around the same), and
        # transposing a register tile costs a shared-memory round trip anyway. m~ is loaded, so its
        # transpose is the plain case (as K in Triton's fused-attention tutorial).
        k_t = tl.dot(wk.to(op_dtype), tl.trans(kv_in), input_precision=DOT_PRECISION) + bk[:, None]  # (BD, BN)
        v = tl.dot(kv_in, wv_t.to(op_dtype), input_precision=DOT_PRECISION) + bv[None, :]  # (BN, BD)

        inv_alpha = 1.0 / tl.load(alpha_ptr + h).to(tl.float32)
        s = tl.dot(q.to(op_dtype), k_t.to(op_dtype), input_precision=DOT_PRECISION)  # (BN, BN)
        a = sigmoid(s * inv_alpha + LOGIT_BIAS, FAST_SIGMOID, PTX_MATH)
        a = tl.where(keep, a, 0.0)  # (BN, BN)
        o = tl.dot(a.to(op_dtype), v.to(op_dtype), input_precision=DOT_PRECISION)  # (BN, BD)

        wo_t = tl.load(wo_ptr + cc[None, :] * C + rows[:, None], mask=dc_mask, other=0.0)  # (BD, BC)
        acc = tl.dot(o.to(op_dtype), wo_t.to(op_dtype), acc, input_precision=DOT_PRECISION)  # (BN, BC)

    store_channels(out_ptr, acc, bo_ptr, tok, valid, cc, C)
