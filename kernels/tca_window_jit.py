"""The Triton device functions both fused TCA kernels share (tca_direct_jit.py, tca_folded_jit.py).

A window's tokens are found by index arithmetic on the unpartitioned (B, H, W, C) tensors: the cyclic
shift, the window partition and the padding to whole windows are never materialised (`window_coords`),
and a shifted block's Swin region mask uses the labels of `windows.region_ids` (`same_region`). The
sigmoid has an exact form and a fast one (PTX tanh.approx), each written for the logits the folded
weights prepare (`sigmoid_of_folded`) and for plain logits (`sigmoid`).

Both kernels take PADDED from the launch: at the preset's 64 x 64 latent every window is whole, so no
token needs a validity check and only the shifted block's wrap-around needs index arithmetic (direct
kernel, unshifted: 2 700 -> 2 404 instructions per warp, 183 -> 168 registers).

Importing this module imports triton; it never probes a device. On CPU the kernels run only in Triton's
interpreter (`TRITON_INTERPRET=1` before this import).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def tanh_approx(z):
    """PTX `tanh.approx.f32`: one MUFU instruction, CUDA only; tanh(-inf) = -1."""
    return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [z], dtype=tl.float32, is_pure=True,
                                     pack=1)


@triton.jit
def sigmoid_exp2(z, PTX_MATH: tl.constexpr):
    """1 / (1 + 2^z) in fp32, i.e. sigmoid(-z ln 2); +inf -> 0.

    PTX_MATH (CUDA builds) writes it as ex2.approx.ftz, add, rcp.approx.ftz: three instructions, about
    2 ulp. Triton's exp2 and fast division add range fix-ups around each MUFU, for subnormals a sigmoid
    weight never needs: in the folded kernel's sm_90 fp16 build they cost ~5.7 instructions per score more
    than the tanh form, this ~1.6. The interpreter runs the same maths with Triton's ops.
    """
    if PTX_MATH:
        y = tl.inline_asm_elementwise(
            "{ .reg .f32 e; ex2.approx.ftz.f32 e, $1; add.ftz.f32 e, e, 0f3F800000; rcp.approx.ftz.f32 $0, e; }",
            "=f,f", [z], dtype=tl.float32, is_pure=True, pack=1)
    else:
        y = tl.fdiv(1.0, 1.0 + tl.exp2(z), ieee_rounding=False)
    return y


@triton.jit
def sigmoid_of_folded(z, FAST: tl.constexpr, PTX_MATH: tl.constexpr):
    """sigmoid(s) from the logit z the fold prepared: z = s / 2 with FAST (0.5 tanh(z) + 0.5: one MUFU, one
    FMA), else z = -s log2(e) (`sigmoid_exp2`). The interpreter, which cannot run PTX, computes FAST's
    0.5 tanh(z) + 0.5 = sigmoid(2 z) exactly, so CPU tests check the fast form's logit algebra."""
    if FAST:
        if PTX_MATH:
            y = 0.5 * tanh_approx(z) + 0.5
        else:
            y = sigmoid_exp2(z * -2.8853900817779268, PTX_MATH)  # -2 log2(e)
    else:
        y = sigmoid_exp2(z, PTX_MATH)
    return y


@triton.jit
def sigmoid(s, FAST: tl.constexpr, PTX_MATH: tl.constexpr):
    """sigmoid(s) in fp32: `sigmoid_of_folded` of s scaled here the way the fold scales its logits."""
    if FAST:
        z = 0.5 * s
    else:
        z = s * -1.4426950408889634  # -log2(e)
    return sigmoid_of_folded(z, FAST, PTX_MATH)


@triton.jit
def to_operand(v, op_dtype: tl.constexpr):
    """fp32 `v` as a tl.dot operand of `op_dtype`, where fp16 saturates at +-65504 instead of overflowing.

    Why: the folded kernel's logit channels carry 1 / alpha and the sigmoid's scale, so large inputs or a
    small alpha can push one past fp16's range, and an inf met the zero map channels of padded keys in the
    score dot: 0 * inf = NaN outputs. A saturated channel gives its logit the sign and a magnitude far
    past where the sigmoid is 0 or 1 only while no other channel cancels it: where channels past 65504
    cancel (x or the map features 100x a trained layer's with alpha <= ~0.05), the folded fp16 kernel was
    off by 0.1-0.5 of the output's scale in 4 of 900 fuzzed cases (up to 0.78 in 4 more whose blemish map
    left [0, 1]), where the direct kernel and the fp16 reference stayed within 0.02 (gradient fuzzing,
    2026-11-27); a trained layer's logits are ~5. The
    clamp costs one instruction per value (ptxas folds it into one FMNMX): 18-24 per warp and window in
    the sm_90 fp16 build (936 -> 960 unshifted, 1 033 -> 1 051 shifted, same registers); bf16 has fp32
    range and skips it. cvt.rn.satfinite would be free from sm_80 on, but needs PTX ISA 8.1, above what the
    AOT builds for CUDA 12.0 drivers write (tca_aot), and sm_75 has no packed form at all."""
    if op_dtype == tl.float16:
        v = tl.clamp(v, -65504.0, 65504.0)
    return v.to(op_dtype)


@triton.jit
def region_band(pos, size_padded, WINDOW: tl.constexpr, SHIFT: tl.constexpr):
    """Swin band (0, 1, 2) of a shifted, padded coordinate; the same slices as `windows.region_ids`."""
    band = tl.where(pos >= size_padded - WINDOW, 1, 0)
    return tl.where(pos >= size_padded - SHIFT, 2, band)


@triton.jit
def padded_extent(size, WINDOW: tl.constexpr, PADDED: tl.constexpr):
    """`size` rounded up to whole windows; `size` itself when the launch promised it already is."""
    if PADDED:
        size = tl.cdiv(size, WINDOW) * WINDOW
    return size


@triton.jit
def window_coords(win, b, H, W, WINDOW: tl.constexpr, SHIFT: tl.constexpr, BLOCK_N: tl.constexpr,
                   PADDED: tl.constexpr):
    """The tokens of window `win` of image `b`: their (BN,) row and column in the shifted, padded map, flat
    (B, H, W) index and validity (a real pixel, not padding), plus the padded map's height and width.

    PADDED: H or W is not a multiple of WINDOW, so some tokens may be padding; without it every token of
    a window is a real pixel and the loads and stores need no per-row validity.
    """
    # Token coordinates: window-local (n // w, n % w) -> shifted padded map -> source pixel.
    Hp = padded_extent(H, WINDOW, PADDED)
    Wp = padded_extent(W, WINDOW, PADDED)
    n_win_w = Wp // WINDOW
    n = tl.arange(0, BLOCK_N)  # (BN,)
    sr = (win // n_win_w) * WINDOW + n // WINDOW  # row in the shifted, padded map
    sc = (win % n_win_w) * WINDOW + n % WINDOW
    hr = sr + SHIFT  # torch.roll(-shift): shifted position r holds source row (r + shift) % Hp
    hc = sc + SHIFT
    if SHIFT > 0:
        hr = tl.where(hr >= Hp, hr - Hp, hr)
        hc = tl.where(hc >= Wp, hc - Wp, hc)
    valid = n < WINDOW * WINDOW  # (BN,) real pixel, not padding
    if PADDED:
        valid = valid & (hr < H) & (hc < W)
    tok = (b * H + hr) * W + hc  # (BN,) flat token index into (B, H, W)
    return sr, sc, tok, valid, Hp, Wp


@triton.jit
def same_region(sr, sc, Hp, Wp, WINDOW: tl.constexpr, SHIFT: tl.constexpr):
    """(BN, BN) Swin shift mask: query and key lie in the same region (the labels of `windows.region_ids`)."""
    region = region_band(sr, Hp, WINDOW, SHIFT) * 3 + region_band(sc, Wp, WINDOW, SHIFT)  # (BN,)
    return region[:, None] == region[None, :]


@triton.jit
def window_tokens(win, b, H, W, WINDOW: tl.constexpr, SHIFT: tl.constexpr, BLOCK_N: tl.constexpr,
                   PADDED: tl.constexpr):
    """`window_coords`' flat index and validity, each (BN,), and the (BN, BN) or (1, BN) mask of the
    key/query pairs that may attend (same Swin region, real key pixel)."""
    sr, sc, tok, valid, Hp, Wp = window_coords(win, b, H, W, WINDOW, SHIFT, BLOCK_N, PADDED)
    keep = valid[None, :]  # (1, BN) padded keys never contribute
    if SHIFT > 0:
        keep = keep & same_region(sr, sc, Hp, Wp, WINDOW, SHIFT)  # (BN, BN)
    return tok, valid, keep


@triton.jit
def load_channels(ptr, tok, valid, c, C: tl.constexpr, op_dtype: tl.constexpr):
    """The (BN, len(c)) tile of channels `c` of the window's tokens from a (B, H, W, C) tensor, padding 0."""
    x = tl.load(ptr + tok[:, None] * C + c[None, :], mask=valid[:, None] & (c < C)[None, :], other=0.0)
    return x.to(op_dtype)


@triton.jit
def store_channels(out_ptr, acc, bo_ptr, tok, valid, c, C: tl.constexpr):
    """acc + bo[c] written to channels `c` of each real token's own (B, H, W, C) position."""
    bo = tl.load(bo_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    tl.store(out_ptr + tok[:, None] * C + c[None, :], (acc + bo[None, :]).to(out_ptr.dtype.element_ty),
             mask=valid[:, None] & (c < C)[None, :])
