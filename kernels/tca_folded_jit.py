"""The folded fused TCA kernel (Triton), the default: the attention from weights folded through the maps.

tca_triton.py chooses, launches and registers it; the device functions it shares with the direct kernel
are tca_window_jit.py's.

`tca_folded_fwd_kernel` computes the attention of the direct kernel (tca_direct_jit.py, whose header says
what one program computes and why the whole window lives on chip) from weights folded through the narrow map features
(tca_fold.py): per head the logits are ((1 - m) x QK_h + qk_h) [m~ | 1]^T and the output gains
(A_h [m~ | 1]) VO_h, every per-head matmul over Cm + 1 = 10 channels (tile BLOCK_K = 16) instead of
head_dim, no K / V projection, and 1 / alpha, the logit bias and the sigmoid's scale already in the weights.
Its tiles differ from the direct kernel's in four ways, each measured in the sm_90 build
(`python benchmarks/kernel_resources.py --arch 90 --kernels direct folded`; fp16, tanh sigmoid, 4 warps,
triton 3.8: 1 005 instructions and 120 MMAs per warp per window against 2 404 and 312 unshifted, 1 132
against 2 951 shifted, in 148 / 144 registers against 168 / 176):
- channels come in two tiles of at most one window's tokens (C = 96: 64 + 32, `tca_triton.channel_chunks`),
  so every dot result has M = 64 >= N, Triton stacks the 4 warps along the tokens ([4, 1]: 16 rows each,
  the score tile stays in registers into A [m~ | 1]) and no channel is padding;
- x is used raw and the mask weighting 1 - m scales the (64, 16) projection (x * (1 - m)) QK_h =
  (1 - m) * (x QK_h): 16 multiplies per row instead of C, and x goes to the tensor cores as loaded;
- padded keys are not masked: their row of [m~ | 1] is all zero, ones channel included, so they add
  nothing to A [m~ | 1] whatever their weight;
- the Swin region mask rides in the score dot (half precision): Cm + 1 = 10 of the 16 channels are used,
  so four more carry each token's row and column band bits, which add exactly 0 to the logit of a query
  and key of one region and a logit far past "no weight" otherwise (`_folded_window`). Every window of a
  shifted block runs the same code, with no select per score. Applied as a select in the
  windows that need it, in their own copy of the code, the shifted build ran 1 289 / 1 490 instructions
  in an interior / border window in 167 registers (182 with triton 3.6: two blocks per SM); with the
  mask in the dot every window runs 1 225 in 144 (exact sigmoid; 1 192 in 148 with triton 3.6). Four
  channels of 0 / 1 bits replaced three of +-1 (2026-11-27): those cancelled +-1024 within a region, which
  rounded the real logit by up to ~1e-3 and let a real logit past ~1 420 undo the mask; the bits cost
  5-27 instructions per warp and window (sm_90 fp16, 4 warps: wgmma 1 052 -> 1 069 tanh, 1 151 -> 1 156
  exact; mma.sync 1 156 -> 1 183, 1 249 -> 1 275), in 127 / 141 registers.
  In fp16 the keys' bits became 2^15 (2^30 per band with the query's 2^15) in a tile of their own
  (2026-11-27, `_region_scales`): with the query's 2^15 alone, a real logit past ~22 700 (x 100 with
  alpha 1e-3, or map features 100x the model's) undid the mask, error ~0.85 of the output's scale. The
  second tile costs 8-25 instructions per warp and window and 2 KB of shared memory, no register (sm_90
  fp16, shifted, 4 warps: wgmma 1 069 -> 1 082 tanh, 1 156 -> 1 169 exact; mma.sync 1 183 -> 1 192,
  1 275 -> 1 283; bf16 and unshifted builds unchanged). Timed with both changes on an H100 (2026-11-27,
  autotuned, CUDA graphs, fp16): the exact form 9.0 / 32.9 us at batch 8 / 32 against 9.8 / 33.0 before
  them, the tanh default 7.6 / 30.9 (benchmarks/results/attention-NVIDIA-H100-80GB-HBM3-2026-11-27.json):
  no cost that shows.

The folded kernel's head loop can be software-pipelined (HEAD_STAGES = 2, `tl.range(num_stages=2)`): Triton
then loads the next head's folded weights into shared memory while this head computes. On an H100 (fp16,
batch 8 / 32, 4 warps capped at 128 registers) that ran 9.6 / 35.0 us against 9.3 / 34.5 with mma.sync
and 9.2 / 31.7 against 8.5 / 35.6 with wgmma, and 9.2 / 31.8 against 8.5 / 35.5 with wgmma in a second run,
so the autotuner times both depths (batch 32 takes the pipelined one).

The folded kernel can also run persistent (PROGRAMS_PER_SM > 0, `tca_launch_configs.LaunchConfig.programs_per_sm`):
grid axis 0 then holds about that many programs per SM over the batch, and each walks its image's windows
p, p + P, ..., issuing the next window's loads (`_folded_inputs`, into registers, masked off past the last
window) before this window's maths. Why: one window per program, every program on the GPU loads its window,
computes, then stores, all in step (same work, started together), so HBM idles while the SMs compute;
the H100 ran the plain kernel at 34.5 us for batch 32, 46 % of the memory roofline, where its
instructions alone (1 212 per warp and window, issued at one per cycle per scheduler) take ~10 us and its
bytes ~16 us. The prefetch is written by hand because Triton's
pipeliner takes only innermost loops (the window loop holds the head loop) and, with the heads unrolled
instead, gave each load one shared-memory buffer whose next copy starts only after this window's last use
of it, i.e. at the end of the iteration: no overlap. The cost is registers (sm_90 fp16, triton 3.6: 227
uncapped, 2 programs per SM; capped at 168, 3 per SM with no spill) and a few instructions: per window
the loop runs 1 208 / 1 287 per warp (uncapped / capped) against the plain build's 1 192 / 1 212 (shifted,
exact sigmoid), plus a ~380-instruction prologue per program. Timed on an H100 (fp16, batch 8 / 32), it
lost on both MMA paths: 12.4 / 42.6 us (168 registers, 3 per SM) and 10.9 / 39.8 (uncapped, 2 per SM)
against the plain launch's 9.4 / 34.7 with mma.sync. So the autotuner no longer times it; the sweep keeps
it as a candidate (`benchmarks/kernel_sweep.CANDIDATE_CONFIGS`), and the CPU tests keep it right.

The folded kernel's output projection can also wait for the last head (OUTPUT_AFTER_HEADS,
`tca_launch_configs.LaunchConfig.output_after_heads`): the head loop is unrolled (tl.static_range), each head's
(N, BLOCK_K) mix t_h = A_h [m~ | 1] is kept (4 registers per thread in half precision), and only then is
each channel tile's accumulator sum_h t_h VO_h computed and stored, one tile at a time. The (N, C) fp32
accumulator, 48 registers per thread at C = 96, is then live at the end only, not across every head: the
sm_90 fp16 wgmma build (triton 3.6) takes 84 registers instead of 115-122 (5 blocks per SM, 6 capped at 80
with no spill; the mma.sync build 128 instead of 148). Why it exists: ncu put the plain launch at 25 %
occupancy, limited by registers, and called it latency-bound. Why it is only swept: with 6 blocks per SM
(37.5 % theoretical, 33 % achieved occupancy) an H100 ran it no faster (fp16, exact sigmoid, batch 32:
31.98 us against 31.85 for the best autotuned launch; 9.39 against 8.51 at batch 8): the cycles between
a warp's instructions rose from 9.8 to 14.6 and issue stayed at a third of the slots, so what the warps
wait on is shared by the SM (the MUFU pipe's sigmoids and the L1 traffic of the weights every window
re-reads are the candidates), not hidden by more of them. And each warp waits longer per dot: Triton 3.6
makes a wgmma asynchronous only inside a loop (its TTGIR: the rolled head loop's 6 dots per head are
async, the output projection's waited for only after the loop, so it overlaps the next head), while the
unrolled heads' 18 dots are each synchronous.

Importing this module imports triton; it never probes a device. On CPU the kernels run only in Triton's
interpreter (`TRITON_INTERPRET=1` before this import).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .tca_window_jit import (
    load_channels,
    same_region,
    sigmoid_of_folded,
    store_channels,
    to_operand,
    window_coords,
)


@triton.jit
def _folded_no_weight(FAST: tl.constexpr):
    """The folded logit whose sigmoid is exactly 0: -inf when z = s / 2, +inf when z = -s log2(e)."""
    if FAST:
        z = float("-inf")
    else:
        z = float("inf")
    return z


@triton.jit
def _band_bit(pos, size_padded, SHIFT: tl.constexpr):
    """1.0 for a shifted, padded coordinate in the map's last SHIFT rows (columns), else 0.0.

    Within one window two tokens lie in the same Swin band along an axis exactly when their bits agree:
    a window meets at most two of `windows.region_ids`' three bands per axis (only the last window row
    or column meets more than one: bands 1 and 2, split at size_padded - SHIFT).
    """
    return tl.where(pos >= size_padded - SHIFT, 1.0, 0.0)


@triton.jit
def _region_scales(FAST: tl.constexpr, op_dtype: tl.constexpr):
    """(c, k): a query's region channels carry c, a key's k times its bits, so the score dot gives a key of
    another Swin region c k per differing band, towards "no weight" (+z for 1 / (1 + 2^z), -z for the tanh
    form) and as far as the operands allow, so that no real logit can pull it back.

    fp16: c = k = 2^15 (its largest power of two; 65504 is its largest value), 2^30 per band: a real
    logit channel saturates at +-65504 (`to_operand`), so a real logit stays under 65504 sum_k |[m~ | 1]_k|,
    below 2^30 while the map features stay under ~16 000 / (Cm + 1) (~1 600 for the preset's 9 channels),
    whatever x and alpha are. With c alone (k = 1) a logit past ~22 700 (exact form) undid the mask: x 100
    times a trained layer's with alpha 1e-3 got that far. bf16: c = 2^64, k = 1 (fp32's exponent range;
    c k must stay finite in fp32). Powers of two, so every product is exact."""
    if op_dtype == tl.float16:
        magnitude = 32768.0
        key = 32768.0
    else:
        magnitude = 18446744073709551616.0
        key = 1.0
    if FAST:
        c = -magnitude
    else:
        c = magnitude
    return c, key


@triton.jit
def _folded_inputs(x_ptr, map_ptr, tok, valid, C: tl.constexpr, CM: tl.constexpr, BLOCK_C0: tl.constexpr,
                   BLOCK_C1: tl.constexpr, BLOCK_K: tl.constexpr, op_dtype: tl.constexpr):
    """Every global load of one window's activations: x's channel tiles (x1 is x0 when there is no second
    tile), the map features in BLOCK_K channels and the blemish map m, padding 0.

    Split from the maths (`_folded_window`) so that a program of several windows can issue the next
    window's loads before this window's maths (`tca_folded_fwd_kernel`, PROGRAMS_PER_SM)."""
    x0 = load_channels(x_ptr, tok, valid, tl.arange(0, BLOCK_C0), C, op_dtype)  # (BN, BC0) raw x
    x1 = x0
    if BLOCK_C1 > 0:
        x1 = load_channels(x_ptr, tok, valid, BLOCK_C0 + tl.arange(0, BLOCK_C1), C, op_dtype)  # (BN, BC1)
    kk = tl.arange(0, BLOCK_K)
    mf = tl.load(map_ptr + tok[:, None] * CM + kk[None, :], mask=valid[:, None] & (kk < CM)[None, :], other=0.0)
    m = tl.load(map_ptr + tok * CM, mask=valid, other=0.0)  # (BN,) blemish map, channel 0 of mf
    return x0, x1, mf, m


@triton.jit
def _folded_window(
    x0, x1, mf, m,  # _folded_inputs of this window
    qk_ptr, qk_bias_ptr, vo_ptr, bo_ptr, out_ptr,  # as tca_folded_fwd_kernel
    sr, sc, tok, valid, Hp, Wp,  # window_coords of this window
    C: tl.constexpr, CM: tl.constexpr, NUM_HEADS: tl.constexpr, WINDOW: tl.constexpr, SHIFT: tl.constexpr,
    BLOCK_C0: tl.constexpr, BLOCK_C1: tl.constexpr, BLOCK_K: tl.constexpr, op_dtype: tl.constexpr,
    LOW_PRECISION_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, FAST_SIGMOID: tl.constexpr,
    PTX_MATH: tl.constexpr, HEAD_STAGES: tl.constexpr, OUTPUT_AFTER_HEADS: tl.constexpr,
):
    """tca_folded_fwd_kernel's work for one window whose activations are loaded, up to storing its outputs."""
    c0 = tl.arange(0, BLOCK_C0)
    acc0 = tl.zeros((x0.shape[0], BLOCK_C0), dtype=tl.float32)  # x0 is raw x: the mask scales p below
    if BLOCK_C1 > 0:
        c1 = BLOCK_C0 + tl.arange(0, BLOCK_C1)
        acc1 = tl.zeros((x0.shape[0], BLOCK_C1), dtype=tl.float32)
    kk = tl.arange(0, BLOCK_K)
    # [m~ | 1 | 0...], the ones channel 0 for padded keys: their m~ and ones entries are zero, so whatever
    # their attention weight, A [m~ | 1] gains nothing from them (the reference masks them out). `kv` is
    # the A [m~ | 1] dot's operand (zero on the region channels below), `keys` the score dot's.
    kv = tl.where(kk[None, :] == CM, valid.to(tl.float32)[:, None], mf.to(tl.float32))  # (BN, BK)
    keys = kv
    region_logit = 0.0  # the Swin mask of a shifted block: score-dot channels (half precision) ...
    region_keep = 0  # ... or a select (fp32); neither is read in an unshifted block
    if SHIFT > 0:
        if LOW_PRECISION_DOT:
            # The Swin mask through the tensor cores: per axis two channels after the ones channel (the fold's
            # weights are zero there), a key carrying k b and k (1 - b) for its band bit b, a query c (1 - b)
            # and c b, so the score dot adds c k [b_query != b_key] per axis: exactly 0 within a region, each
            # product c (1 - b_i) k b_j being 0 or c k; c k or 2 c k, a sigmoid weight of 0, across regions
            # (`_region_scales`, which says up to which logit that holds). Every window of a shifted block
            # runs this one code. Within a region every region product is an exact zero, so the fp32
            # accumulation of the real logit is untouched (an earlier +-1 encoding cancelled +-c terms there
            # and lost ~1e-3 of logit to their rounding). In fp16 `kv` keeps zeros there: A times k would
            # overflow in the A [m~ | 1] dot (N k > 65504), and inf times VO_h's zero rows is NaN; bf16's k = 1
            # bits meet those zero rows harmlessly, so there one tile serves both dots.
            # fp32 selects instead (exact at any logit), the cost the header measured.
            c, k = _region_scales(FAST_SIGMOID, op_dtype)
            row_bit = _band_bit(sr, Hp, SHIFT)[:, None]  # (BN, 1)
            col_bit = _band_bit(sc, Wp, SHIFT)[:, None]  # (BN, 1)
            region = kk - CM  # (BK,): region channels 1..4, a band bit then its complement per axis
            is_region = (region >= 1) & (region <= 4)
            complement = region % 2 == 0
            axis_bit = tl.where((region <= 2)[None, :], row_bit, col_bit)  # (BN, BK)
            # b or 1 - b as one FMA per value with per-channel constants (fewer instructions than selects)
            key_bit = axis_bit * tl.where(complement, -1.0, 1.0)[None, :] + tl.where(complement, 1.0, 0.0)[None, :]
            keys = tl.where(is_region[None, :], k * key_bit, kv)  # (BN, BK)
            if op_dtype != tl.float16:
                kv = keys
            region_c = tl.where(is_region, c, 0.0)[None, :]  # (1, BK)
            region_logit = region_c - region_c * key_bit  # (BN, BK): c (1 - key's bit), 0 off the region channels
        else:
            region_keep = same_region(sr, sc, Hp, Wp, WINDOW, SHIFT)  # (BN, BN)
    kv = kv.to(op_dtype)
    keys = keys.to(op_dtype)
    query_keep = 1.0 - m.to(tl.float32)  # (BN,) 1 - m

    if OUTPUT_AFTER_HEADS:
        # Every head's mix first, then each channel tile's output projection from all of them: the fp32
        # accumulators are live for that last step only (this module's header).
        mixes = ()
        for h in tl.static_range(NUM_HEADS):
            mixes = mixes + (_folded_head_mix(h, x0, x1, kv, keys, query_keep, region_logit, region_keep, qk_ptr,
                                              qk_bias_ptr, C, SHIFT, BLOCK_C0, BLOCK_C1, BLOCK_K, op_dtype,
                                              LOW_PRECISION_DOT, DOT_PRECISION, FAST_SIGMOID, PTX_MATH),)
        acc0 = _project_mixes(mixes, vo_ptr, acc0, c0, C, NUM_HEADS, BLOCK_K, op_dtype, DOT_PRECISION)
        store_channels(out_ptr, acc0, bo_ptr, tok, valid, c0, C)
        if BLOCK_C1 > 0:
            acc1 = _project_mixes(mixes, vo_ptr, acc1, c1, C, NUM_HEADS, BLOCK_K, op_dtype, DOT_PRECISION)
            store_channels(out_ptr, acc1, bo_ptr, tok, valid, c1, C)
    else:
        for h in tl.range(NUM_HEADS, num_stages=HEAD_STAGES):
            t = _folded_head_mix(h, x0, x1, kv, keys, query_keep, region_logit, region_keep, qk_ptr, qk_bias_ptr, C,
                                 SHIFT, BLOCK_C0, BLOCK_C1, BLOCK_K, op_dtype, LOW_PRECISION_DOT, DOT_PRECISION,
                                 FAST_SIGMOID, PTX_MATH)
            vo_h = vo_ptr + h * BLOCK_K * C
            vo0 = tl.load(vo_h + kk[:, None] * C + c0[None, :], mask=(c0 < C)[None, :], other=0.0)  # (BK, BC0)
            acc0 = tl.dot(t, vo0.to(op_dtype), acc0, input_precision=DOT_PRECISION)  # (BN, BC0)
            if BLOCK_C1 > 0:
                vo1 = tl.load(vo_h + kk[:, None] * C + c1[None, :], mask=(c1 < C)[None, :], other=0.0)
                acc1 = tl.dot(t, vo1.to(op_dtype), acc1, input_precision=DOT_PRECISION)  # (BN, BC1)
        store_channels(out_ptr, acc0, bo_ptr, tok, valid, c0, C)
        if BLOCK_C1 > 0:
            store_channels(out_ptr, acc1, bo_ptr, tok, valid, c1, C)


@triton.jit
def _project_mixes(mixes, vo_ptr, acc, c, C: tl.constexpr, NUM_HEADS: tl.constexpr, BLOCK_K: tl.constexpr,
                   op_dtype: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """acc + sum_h mixes[h] VO_h[:, c]: the output projection of channels `c` from every head's (BN, BK) mix,
    (BN, len(c)) fp32."""
    kk = tl.arange(0, BLOCK_K)
    for h in tl.static_range(NUM_HEADS):
        vo = tl.load(vo_ptr + h * BLOCK_K * C + kk[:, None] * C + c[None, :], mask=(c < C)[None, :], other=0.0)
        acc = tl.dot(mixes[h], vo.to(op_dtype), acc, input_precision=DOT_PRECISION)  # (BN, BC)
    return acc


@triton.jit
def _folded_head_mix(h, x0, x1, kv, keys, query_keep, region_logit, region_keep, qk_ptr, qk_bias_ptr,
                     C: tl.constexpr, SHIFT: tl.constexpr, BLOCK_C0: tl.constexpr, BLOCK_C1: tl.constexpr,
                     BLOCK_K: tl.constexpr, op_dtype: tl.constexpr, LOW_PRECISION_DOT: tl.constexpr,
                     DOT_PRECISION: tl.constexpr, FAST_SIGMOID: tl.constexpr, PTX_MATH: tl.constexpr):
    """Head h's mix A_h [m~ | 1], (BN, BK) in op_dtype: its logits ((1 - m) x QK_h + qk_h) [m~ | 1]^T, their
    sigmoid, and the weights times [m~ | 1]. One helper for the rolled head loop and the unrolled one of
    OUTPUT_AFTER_HEADS, which differ only in when the mix meets VO_h."""
    c0 = tl.arange(0, BLOCK_C0)
    kk = tl.arange(0, BLOCK_K)
    qk_h = qk_ptr + h * C * BLOCK_K
    qk0 = tl.load(qk_h + c0[:, None] * BLOCK_K + kk[None, :], mask=(c0 < C)[:, None], other=0.0)  # (BC0, BK)
    p = tl.dot(x0, qk0.to(op_dtype), input_precision=DOT_PRECISION)  # (BN, BK) = x QK_h
    if BLOCK_C1 > 0:
        c1 = BLOCK_C0 + tl.arange(0, BLOCK_C1)
        qk1 = tl.load(qk_h + c1[:, None] * BLOCK_K + kk[None, :], mask=(c1 < C)[:, None], other=0.0)
        p = tl.dot(x1, qk1.to(op_dtype), p, input_precision=DOT_PRECISION)
    qk_bias = tl.load(qk_bias_ptr + h * BLOCK_K + kk).to(tl.float32)  # (BK,)
    if SHIFT > 0 and LOW_PRECISION_DOT:
        p = p * query_keep[:, None] + (qk_bias[None, :] + region_logit)  # and the region channels
    else:
        p = p * query_keep[:, None] + qk_bias[None, :]  # (x * (1 - m)) QK_h + qk_h
    s = tl.dot(to_operand(p, op_dtype), tl.trans(keys), input_precision=DOT_PRECISION)  # (BN, BN)
    if SHIFT > 0 and not LOW_PRECISION_DOT:
        s = tl.where(region_keep, s, _folded_no_weight(FAST_SIGMOID))
    a = sigmoid_of_folded(s, FAST_SIGMOID, PTX_MATH)  # (BN, BN)
    # |A_h [m~ | 1]| <= N max |m~|: the model's m~ is a [0, 1] map and a [-1, 1] position code
    return tl.dot(a.to(op_dtype), kv, input_precision=DOT_PRECISION).to(op_dtype)  # (BN, BK) = A_h [m~ | 1]


@triton.jit
def tca_folded_fwd_kernel(
    x_ptr, map_ptr,  # (B, H, W, C), (B, H, W, CM), contiguous
    qk_ptr, qk_bias_ptr, vo_ptr, bo_ptr,  # (NUM_HEADS, C, BLOCK_K) (NUM_HEADS, BLOCK_K) (NUM_HEADS, BLOCK_K, C) (C,)
    H, W,  # int32; the batch is the grid's second axis
    out_ptr,  # (B, H, W, C), contiguous
    C: tl.constexpr, CM: tl.constexpr, NUM_HEADS: tl.constexpr, WINDOW: tl.constexpr, SHIFT: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_C0: tl.constexpr, BLOCK_C1: tl.constexpr,  # channel chunks; BLOCK_C1 = 0: none
    BLOCK_K: tl.constexpr,  # CM + 1 (+ REGION_CHANNELS if shifted) padded; the fold's weights are 0 there
    LOW_PRECISION_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, FAST_SIGMOID: tl.constexpr,
    PTX_MATH: tl.constexpr,  # CUDA build: MUFU instructions through inline PTX (not in the interpreter)
    PADDED: tl.constexpr,  # H or W is not a multiple of WINDOW (tca_triton.kernel_constants)
    HEAD_STAGES: tl.constexpr,  # 1: plain head loop; 2: the next head's weights load during this head's maths
    OUTPUT_AFTER_HEADS: tl.constexpr,  # heads unrolled, the output projection after the last (HEAD_STAGES 1)
    PROGRAMS_PER_SM: tl.constexpr,  # 0: one program per window; > 0: a program loops over windows, prefetching
):
    """The same attention from the folded weights (tca_fold.py): per head, the logits are
    ((1 - m) x QK_h + qk_h) [m~ | 1]^T and the output gains (A_h [m~ | 1]) VO_h, over BLOCK_K channels.

    The fold already holds 1 / alpha_h, the logit bias -log(w*w) and the scale of the sigmoid's form
    (`sigmoid_of_folded`), so the logits need no arithmetic before the sigmoid; a shifted block's
    Swin mask is four more channels of the score dot (`_folded_window`).
    PROGRAMS_PER_SM > 0 makes the kernel persistent: the launch sizes grid axis 0 so about that many
    programs fit each SM at once (`tca_launch_configs.persistent_programs`), program p of an image computes its
    windows p, p + P, p + 2P, ... (P = programs per image), and issues each next window's loads before
    this window's maths (this module's header says why).
    """
    if LOW_PRECISION_DOT:
        op_dtype = x_ptr.dtype.element_ty
    else:
        op_dtype = tl.float32
    win = tl.program_id(0)
    b = tl.program_id(1)  # int32 offsets: _launch checks B*H*W*max(C, CM) < 2**31
    sr, sc, tok, valid, Hp, Wp = window_coords(win, b, H, W, WINDOW, SHIFT, BLOCK_N, PADDED)
    x0, x1, mf, m = _folded_inputs(x_ptr, map_ptr, tok, valid, C, CM, BLOCK_C0, BLOCK_C1, BLOCK_K, op_dtype)
    if PROGRAMS_PER_SM == 0:
        _folded_window(x0, x1, mf, m, qk_ptr, qk_bias_ptr, vo_ptr, bo_ptr, out_ptr, sr, sc, tok, valid, Hp, Wp,
                       C, CM, NUM_HEADS, WINDOW, SHIFT, BLOCK_C0, BLOCK_C1, BLOCK_K, op_dtype, LOW_PRECISION_DOT,
                       DOT_PRECISION, FAST_SIGMOID, PTX_MATH, HEAD_STAGES, OUTPUT_AFTER_HEADS)
    else:
        n_windows = (Hp // WINDOW) * (Wp // WINDOW)
        stride = tl.num_programs(0)
        w = win
        # A while loop, not tl.range(win, n_windows, stride): triton 3.6's interpreter cannot take a range
        # with program-dependent bounds (its program ids are 1-element arrays, which numpy 2 will not turn
        # into an int); compiled, Triton pipelines neither.
        while w < n_windows:
            sr, sc, tok, valid, Hp, Wp = window_coords(w, b, H, W, WINDOW, SHIFT, BLOCK_N, PADDED)
            # The next window's loads (off past the image's last window) are in flight during this one's maths.
            _, _, next_tok, next_valid, _, _ = window_coords(w + stride, b, H, W, WINDOW, SHIFT, BLOCK_N, PADDED)
            next_x0, next_x1, next_mf, next_m = _folded_inputs(
                x_ptr, map_ptr, next_tok, next_valid & (w + stride < n_windows), C, CM, BLOCK_C0, BLOCK_C1,
                BLOCK_K, op_dtype)
            _folded_window(x0, x1, mf, m, qk_ptr, qk_bias_ptr, vo_ptr, bo_ptr, out_ptr, sr, sc, tok, valid, Hp,
                           Wp, C, CM, NUM_HEADS, WINDOW, SHIFT, BLOCK_C0, BLOCK_C1, BLOCK_K, op_dtype,
                           LOW_PRECISION_DOT, DOT_PRECISION, FAST_SIGMOID, PTX_MATH, HEAD_STAGES,
                           OUTPUT_AFTER_HEADS)
            x0, x1, mf, m = next_x0, next_x1, next_mf, next_m
            w += stride
