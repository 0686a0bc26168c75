"""The fused TCA attention kernels themselves (Triton); tca_triton.py chooses, launches and registers them.

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

`tca_folded_fwd_kernel` computes the same attention from weights folded through the narrow map features
(tca_fold.py): the same tile layout with every per-head matmul over Cm + 1 channels instead of head_dim and
no K / V projection.

Importing this module imports triton; it never probes a device. On CPU the kernels run only in Triton's
interpreter (`TRITON_INTERPRET=1` before this import).
"""

from __future__ import annotations

import triton
import triton.language as tl


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
def _window_tokens(win, b, H, W, WINDOW: tl.constexpr, SHIFT: tl.constexpr, BLOCK_N: tl.constexpr):
    """The tokens of window `win` of image `b`: flat (B, H, W) index and validity, each (BN,), and the
    (BN, BN) or (1, BN) mask of the key/query pairs that may attend (same Swin region, real key pixel)."""
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
    return tok, valid, keep


@triton.jit
def _program_window(x_ptr, map_ptr, H, W, C: tl.constexpr, CM: tl.constexpr, WINDOW: tl.constexpr,
                    SHIFT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, op_dtype: tl.constexpr):
    """This program's window (grid axis 0) of its image (axis 1): `_window_tokens`, plus the window's
    queries x * (1 - m) as (BN, BC) matmul operands in `op_dtype`, padding 0."""
    win = tl.program_id(0)
    b = tl.program_id(1)  # int32 offsets: _launch checks B*H*W*max(C, CM) < 2**31
    tok, valid, keep = _window_tokens(win, b, H, W, WINDOW, SHIFT, BLOCK_N)
    cc = tl.arange(0, BLOCK_C)
    x = tl.load(x_ptr + tok[:, None] * C + cc[None, :], mask=valid[:, None] & (cc < C)[None, :], other=0.0)
    m = tl.load(map_ptr + tok * CM, mask=valid, other=0.0).to(tl.float32)  # (BN,) blemish map, channel 0
    q_in = (x.to(tl.float32) * (1.0 - m[:, None])).to(op_dtype)  # (BN, BC) mask-suppressed queries
    return tok, valid, keep, q_in


@triton.jit
def _store_output(out_ptr, acc, bo_ptr, tok, valid, C: tl.constexpr, BLOCK_C: tl.constexpr):
    """acc + bo written to each real token's own (B, H, W, C) position; padded queries are not stored."""
    cc = tl.arange(0, BLOCK_C)
    c_mask = cc < C
    bo = tl.load(bo_ptr + cc, mask=c_mask, other=0.0).to(tl.float32)
    out = acc + bo[None, :]  # (BN, BC)
    tl.store(out_ptr + tok[:, None] * C + cc[None, :], out.to(out_ptr.dtype.element_ty),
             mask=valid[:, None] & c_mask[None, :])


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
    SCORES_3D: tl.constexpr,  # score and A V dots as 3-D dots over a batch of one (MmaChoice.HYBRID)
):
    if LOW_PRECISION_DOT:
        op_dtype = x_ptr.dtype.element_ty
    else:
        op_dtype = tl.float32
    tok, valid, keep, q_in = _program_window(x_ptr, map_ptr, H, W, C, CM, WINDOW, SHIFT, BLOCK_N, BLOCK_C, op_dtype)

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
        s = _matmul(q.to(op_dtype), k_t.to(op_dtype), SCORES_3D, DOT_PRECISION)  # (BN, BN)
        a = _sigmoid(s * inv_alpha + LOGIT_BIAS, FAST_SIGMOID)
        a = tl.where(keep, a, 0.0)  # (BN, BN)
        o = _matmul(a.to(op_dtype), v.to(op_dtype), SCORES_3D, DOT_PRECISION)  # (BN, BD)

        wo_t = tl.load(wo_ptr + cc[None, :] * C + rows[:, None], mask=dc_mask, other=0.0)  # (BD, BC)
        acc = tl.dot(o.to(op_dtype), wo_t.to(op_dtype), acc, input_precision=DOT_PRECISION)  # (BN, BC)

    _store_output(out_ptr, acc, bo_ptr, tok, valid, C, BLOCK_C)


@triton.jit
def tca_folded_fwd_kernel(
    x_ptr, map_ptr,  # (B, H, W, C), (B, H, W, CM), contiguous
    qk_ptr, qk_bias_ptr, vo_ptr, bo_ptr,  # (NUM_HEADS, C, CM + 1) (NUM_HEADS, CM + 1) (NUM_HEADS, CM + 1, C) (C,)
    H, W,  # int32; the batch is the grid's second axis
    out_ptr,  # (B, H, W, C), contiguous
    C: tl.constexpr, CM: tl.constexpr, LOGIT_BIAS: tl.constexpr,  # LOGIT_BIAS = -log(WINDOW * WINDOW)
    NUM_HEADS: tl.constexpr, WINDOW: tl.constexpr, SHIFT: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,  # BLOCK_K: CM + 1 padded
    LOW_PRECISION_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, FAST_SIGMOID: tl.constexpr,
    SCORES_3D: tl.constexpr,  # score and A [m~ | 1] dots as 3-D dots over a batch of one (MmaChoice.HYBRID)
):
    """The same attention from the folded weights (tca_fold.py): per head, the scores are
    (x~ QK_h + qk_h) [m~ | 1]^T and the output gains (A_h [m~ | 1]) VO_h, all over BLOCK_K channels."""
    if LOW_PRECISION_DOT:
        op_dtype = x_ptr.dtype.element_ty
    else:
        op_dtype = tl.float32
    tok, valid, keep, q_in = _program_window(x_ptr, map_ptr, H, W, C, CM, WINDOW, SHIFT, BLOCK_N, BLOCK_C, op_dtype)

    cc = tl.arange(0, BLOCK_C)
    c_mask = cc < C
    kk = tl.arange(0, BLOCK_K)
    k_mask = kk < CM + 1  # the map channels and the ones channel that carries the biases
    mf = tl.load(map_ptr + tok[:, None] * CM + kk[None, :], mask=valid[:, None] & (kk < CM)[None, :], other=0.0)
    kv = tl.where(kk[None, :] == CM, 1.0, mf.to(tl.float32)).to(op_dtype)  # (BN, BK) [m~ | 1 | 0...]

    qk_mask = c_mask[:, None] & k_mask[None, :]  # (BC, BK)
    vo_mask = k_mask[:, None] & c_mask[None, :]  # (BK, BC)
    acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
    for h in range(NUM_HEADS):  # rolled, as in tca_fwd_kernel
        qk = tl.load(qk_ptr + h * C * (CM + 1) + cc[:, None] * (CM + 1) + kk[None, :], mask=qk_mask,
                     other=0.0)  # (BC, BK) = QK_h
        qk_bias = tl.load(qk_bias_ptr + h * (CM + 1) + kk, mask=k_mask, other=0.0).to(tl.float32)  # (BK,)
        p = tl.dot(q_in, qk.to(op_dtype), input_precision=DOT_PRECISION) + qk_bias[None, :]  # (BN, BK)
        s = _matmul(p.to(op_dtype), tl.trans(kv), SCORES_3D, DOT_PRECISION)  # (BN, BN) = Q_h K_h^T / alpha_h
        a = _sigmoid(s + LOGIT_BIAS, FAST_SIGMOID)
        a = tl.where(keep, a, 0.0)  # (BN, BN)
        t = _matmul(a.to(op_dtype), kv, SCORES_3D, DOT_PRECISION)  # (BN, BK) = A_h [m~ | 1]
        vo = tl.load(vo_ptr + h * (CM + 1) * C + kk[:, None] * C + cc[None, :], mask=vo_mask,
                     other=0.0)  # (BK, BC) = VO_h
        acc = tl.dot(t.to(op_dtype), vo.to(op_dtype), acc, input_precision=DOT_PRECISION)  # (BN, BC)

    _store_output(out_ptr, acc, bo_ptr, tok, valid, C, BLOCK_C)
