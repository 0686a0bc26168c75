"""GroupNorm (optionally followed by GELU) as three Triton launches, for inference on CUDA.

Why: PyTorch's CUDA GroupNorm reduces each (image, group) row in one thread block. LangBRT's encoder and
decoder normalise 256x256 and 512x512 maps in 8 groups, so a batch of 8 gives 64 blocks for 132 SMs, each
streaming 0.5-2 MB alone: in the committed H200 profile of an fp16 batch-8 forward
(`benchmarks/results/profile-paper-fp16-b8-NVIDIA-H200-2026-11-26.txt`) those statistics took 27 % of the
GPU time (287 us a call), and the GELU after every GroupNorm of `ResidualConvBlock` another full read and
write of the map.

Layout (x contiguous (N, C, *spatial): the rows of one (image, group) are one contiguous run of
C / G * HW elements):
1. `gn_partial_stats_kernel`, grid (chunks, N*G): each program takes BLOCK consecutive elements of one
   row and writes their count-weighted mean and M2 (sum of squared deviations from that mean, computed
   from the loaded tile: two passes over registers, no cancellation), in fp32, of the shifted data
   x - p, where the pivot p is the row's first element x[n, g * C / G, 0, 0];
2. `gn_finalize_kernel`, grid (N*G,): combines a row's chunks (Chan et al.'s parallel variance) into its
   mean about p, d = mean - p, and 1 / sqrt(var + eps);
3. `gn_apply_kernel`, grid (N*C, HW tiles): y = (x - p) * (rstd w_c) + (b_c - d rstd w_c), then GELU (erf
   form, as nn.GELU), stored in x's dtype.
Why the pivot: a map whose mean is large against its spread (x = 1e4 + N(0, 1)) lost the spread to fp32
rounding twice, in chunk sums of x (a mean off by about one ulp of the mean, times rstd in y) and in
x * scale + shift, whose two terms cancel. x - p is exact for x within a factor 2 of p (Sterbenz) and
as small as the spread, and so are the sums, d and the products. In the interpreter (fp32, offsets 1e2
to 1e5 on a spread of 1) the error against a float64 reference had grown with the offset from 1e-5 to
3e-2, 1 to 5 times PyTorch's GroupNorm's (which also rounds the mean to fp32); it now stays at the
zero-offset one, about 1e-6 (tests/test_group_norm.py). A first element far from the rest costs
roundings at the size of |p - mean|, at most std * sqrt(row size), the size of that element's own y:
measured up to 7 times PyTorch's error in such a row of 72 000 (up to 3 before). The price is one
scalar load (a gather of BLOCK_C in the NHWC kernels) and one subtraction an element in the statistics
and in the apply: for the paper's encoder map on sm_80 and sm_90 (ptxas, fp16 and fp32), 2 to 17 %
more instructions a warp and registers within one of before but for the NHWC apply's (40 -> 48 in
fp16, 32 -> 40 in fp32 on sm_90). On an H100 the fp16 batch-8 forward took 12.0 ms with it against 12.1
before (2026-11-27, benchmarks/results/profile-paper-fp16-b8-NVIDIA-H100-80GB-HBM3-2026-11-27.txt).
The statistics read x once with every SM busy, the apply reads and writes it once: the same traffic as
PyTorch's GroupNorm alone, with the GELU folded in. On an H100 (paper preset, fp16, batch 8) one forward
went from 17.2 to 12.1 ms: the statistics from 4.7 ms (PyTorch's RowwiseMoments, 15 calls) to 0.26, the
normalisation with its GELU 0.69 (benchmarks/results/profile-paper-fp16-b8-NVIDIA-H100-80GB-HBM3-2026-11-26.txt
against its -triton-group-norm- twin). So it is the default for CUDA inference (LANGBRT_GROUP_NORM=auto;
`langbrt.modules.blocks.GroupNorm`).

A channels_last map (memory (N, H, W, C)) takes its own pair, `gn_nhwc_partial_stats_kernel` (grid (pixel
chunks, N): one contiguous (pixels, C) tile per program, reduced per group from registers into the
same (mean, M2) slots) and `gn_nhwc_apply_kernel` (grid (pixel tiles, N): every channel of its pixels,
each with its group's pivot, scale and shift), with the finalize kernel shared and the same pivots (the
group's first channel at the first pixel). Why: in channels_last the convs need no NCHW<->NHWC
transposes (18 % of that H100 forward), but PyTorch's GroupNorm on such a map spent the saving on
strided copies (17.4 ms against NCHW's 17.2). With these kernels the channels_last forward took 10.4 ms
against NCHW's 12.0 on an H100 (2026-11-27, `profile-paper-fp16-b8-channels-last-...` there); the torch
backend takes that layout opt-in (LANGBRT_MEMORY_FORMAT).

Importing this module imports triton; it never probes a device. On CPU the kernels run only in Triton's
interpreter (`TRITON_INTERPRET=1` before this import).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dispatch import cuda_device_guard

STATS_BLOCK = 4096  # elements of a row per statistics program: 32 fp32 registers a thread at 4 warps
APPLY_BLOCK = 1024  # elements of a channel plane per apply program
FINALIZE_BLOCK = 1024  # chunk partials the finalize kernel reads per loop step: 37 registers, no spill (sm_80)
# Grids put the axis that grows with the map (chunks, pixel tiles) first: CUDA allows 2**31 - 1 programs
# there but 65 535 on the second and third axes, which a channels_last 2048 x 2048 map at 32 channels
# (2**22 pixels in tiles of 32) passed.


@triton.jit
def gn_partial_stats_kernel(x_ptr, partial_ptr, row_size, BLOCK: tl.constexpr):
    """Program (chunk, row): (mean, M2) of elements [chunk * BLOCK, (chunk + 1) * BLOCK) of one row, less
    the row's pivot (its first element)."""
    chunk = tl.program_id(0)
    row = tl.program_id(1)
    offsets = chunk * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,)
    inside = offsets < row_size
    row_start = x_ptr + row.to(tl.int64) * row_size
    pivot = tl.load(row_start).to(tl.float32)
    x = tl.load(row_start + offsets, mask=inside, other=0.0).to(tl.float32)  # (BLOCK,)
    x = tl.where(inside, x - pivot, 0.0)
    count = tl.minimum(row_size - chunk * BLOCK, BLOCK).to(tl.float32)
    mean = tl.sum(x, axis=0) / count
    deviation = tl.where(inside, x - mean, 0.0)  # (BLOCK,)
    m2 = tl.sum(deviation * deviation, axis=0)
    slot = partial_ptr + (row.to(tl.int64) * tl.num_programs(0) + chunk) * 2
    tl.store(slot, mean)
    tl.store(slot + 1, m2)


@triton.jit
def _chunk_step(start, row_size, n_chunks, BLOCK: tl.constexpr, CHUNKS: tl.constexpr):
    """The CHUNKS chunk indices from `start` (CHUNKS,), which of them the row has, and each one's element
    count (the last chunk of a row may be short; absent ones count 0), for both passes of the finalize."""
    chunk = start + tl.arange(0, CHUNKS)  # (CHUNKS,)
    present = chunk < n_chunks
    counts = tl.where(present, tl.minimum(row_size - chunk * BLOCK, BLOCK), 0).to(tl.float32)  # (CHUNKS,)
    return chunk, present, counts


@triton.jit
def gn_finalize_kernel(partial_ptr, mean_ptr, rstd_ptr, row_size, n_chunks, eps,
                       BLOCK: tl.constexpr, CHUNKS: tl.constexpr):
    """Program row: its chunks' (mean, M2) combined into the row's mean and 1 / sqrt(var + eps). The means
    are whatever the statistics kernel measured them from (its pivot): the row's mean comes out about it.

    CHUNKS partials at a time, in two passes (the row's mean, then M2 about it): a row of a 4096 x 4096 map
    has up to 16 384 chunks at 4 channels a group, and one tile of them all spilled registers (sm_80).
    """
    row = tl.program_id(0)
    slots = partial_ptr + row.to(tl.int64) * n_chunks * 2
    weighted = tl.zeros((CHUNKS,), tl.float32)  # (CHUNKS,) sum of count * mean per lane
    for start in range(0, n_chunks, CHUNKS):
        chunk, present, counts = _chunk_step(start, row_size, n_chunks, BLOCK, CHUNKS)
        weighted += counts * tl.load(slots + chunk * 2, mask=present, other=0.0)
    mean = tl.sum(weighted, axis=0) / row_size
    spread_sum = tl.zeros((CHUNKS,), tl.float32)  # (CHUNKS,) sum of M2 + count * (mean_chunk - mean)**2
    for start in range(0, n_chunks, CHUNKS):
        chunk, present, counts = _chunk_step(start, row_size, n_chunks, BLOCK, CHUNKS)
        spread = tl.where(present, tl.load(slots + chunk * 2, mask=present, other=0.0) - mean, 0.0)
        spread_sum += tl.load(slots + chunk * 2 + 1, mask=present, other=0.0) + counts * spread * spread
    m2 = tl.sum(spread_sum, axis=0)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, 1.0 / tl.sqrt(m2 / row_size + eps))


@triton.jit
def gn_apply_kernel(x_ptr, y_ptr, mean_ptr, rstd_ptr, weight_ptr, bias_ptr, C, plane_size, channels_per_group,
                    AFFINE: tl.constexpr, GELU: tl.constexpr, BLOCK: tl.constexpr):
    """Program (plane, tile): one tile of channel plane n * C + c, normalised, scaled, shifted, GELU'd.
    mean_ptr holds each row's mean about its pivot, the row's first element (gn_partial_stats_kernel)."""
    plane = tl.program_id(0)
    row = plane // channels_per_group  # n * G + c // channels_per_group
    pivot = tl.load(x_ptr + row.to(tl.int64) * plane_size * channels_per_group).to(tl.float32)
    scale = tl.load(rstd_ptr + row)
    shift = -tl.load(mean_ptr + row) * scale
    if AFFINE:
        c = plane % C
        w = tl.load(weight_ptr + c).to(tl.float32)
        scale = scale * w
        shift = shift * w + tl.load(bias_ptr + c).to(tl.float32)
    offsets = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,)
    inside = offsets < plane_size
    start = plane.to(tl.int64) * plane_size
    y = (tl.load(x_ptr + start + offsets, mask=inside, other=0.0).to(tl.float32) - pivot) * scale + shift
    if GELU:
        y = 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))  # nn.GELU(): the erf form
    tl.store(y_ptr + start + offsets, y.to(y_ptr.dtype.element_ty), mask=inside)


@triton.jit
def gn_nhwc_partial_stats_kernel(x_ptr, partial_ptr, hw, C, channels_per_group, GROUPS: tl.constexpr,
                                 BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Program (pixel chunk, image) of a channels_last map: (mean, M2) of BLOCK_P pixels for every group.

    The (BLOCK_P, C) tile is one contiguous run of memory, read once by the whole block; each group's share
    (its channels_per_group columns) is reduced from registers, less the group's pivot: its first channel
    at pixel 0, the same element as the NCHW kernels' pivot.
    """
    chunk = tl.program_id(0)
    n = tl.program_id(1)
    pixels = chunk * BLOCK_P + tl.arange(0, BLOCK_P)  # (BLOCK_P,)
    channels = tl.arange(0, BLOCK_C)  # (BLOCK_C,) BLOCK_C >= C, a power of two
    inside = (pixels < hw)[:, None] & (channels < C)[None, :]  # (BLOCK_P, BLOCK_C)
    offsets = n.to(tl.int64) * hw * C + pixels[:, None] * C + channels[None, :]  # (BLOCK_P, BLOCK_C)
    group_of = channels // channels_per_group  # (BLOCK_C,)
    pivot = tl.load(x_ptr + n.to(tl.int64) * hw * C + group_of * channels_per_group, mask=channels < C,
                    other=0.0).to(tl.float32)  # (BLOCK_C,) each channel's group pivot
    x = tl.load(x_ptr + offsets, mask=inside, other=0.0).to(tl.float32) - pivot[None, :]  # (BLOCK_P, BLOCK_C)
    count = (tl.minimum(hw - chunk * BLOCK_P, BLOCK_P) * channels_per_group).to(tl.float32)
    for g in tl.static_range(GROUPS):
        member = inside & (group_of == g)[None, :]  # (BLOCK_P, BLOCK_C): group g's real values
        mean = tl.sum(tl.sum(tl.where(member, x, 0.0), axis=1), axis=0) / count
        deviation = tl.where(member, x - mean, 0.0)
        m2 = tl.sum(tl.sum(deviation * deviation, axis=1), axis=0)
        slot = partial_ptr + ((n * GROUPS + g).to(tl.int64) * tl.num_programs(0) + chunk) * 2
        tl.store(slot, mean)
        tl.store(slot + 1, m2)


@triton.jit
def gn_nhwc_apply_kernel(x_ptr, y_ptr, mean_ptr, rstd_ptr, weight_ptr, bias_ptr, hw, C, channels_per_group,
                         GROUPS: tl.constexpr, AFFINE: tl.constexpr, GELU: tl.constexpr,
                         BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Program (pixel tile, image) of a channels_last map: every channel of BLOCK_P pixels normalised,
    scaled, shifted and GELU'd, with one pivot, scale and shift per channel gathered from its group's
    statistics (mean_ptr: each row's mean about its pivot, gn_nhwc_partial_stats_kernel)."""
    n = tl.program_id(1)
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # (BLOCK_P,)
    channels = tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    real = channels < C
    group_of = channels // channels_per_group  # (BLOCK_C,)
    rows = n * GROUPS + group_of  # (BLOCK_C,) each channel's (image, group) row
    pivot = tl.load(x_ptr + n.to(tl.int64) * hw * C + group_of * channels_per_group, mask=real,
                    other=0.0).to(tl.float32)  # (BLOCK_C,) each channel's group pivot
    scale = tl.load(rstd_ptr + rows, mask=real, other=0.0)
    shift = -tl.load(mean_ptr + rows, mask=real, other=0.0) * scale
    if AFFINE:
        w = tl.load(weight_ptr + channels, mask=real, other=0.0).to(tl.float32)
        scale = scale * w
        shift = shift * w + tl.load(bias_ptr + channels, mask=real, other=0.0).to(tl.float32)
    inside = (pixels < hw)[:, None] & real[None, :]  # (BLOCK_P, BLOCK_C)
    offsets = n.to(tl.int64) * hw * C + pixels[:, None] * C + channels[None, :]  # (BLOCK_P, BLOCK_C)
    x = tl.load(x_ptr + offsets, mask=inside, other=0.0).to(tl.float32)  # (BLOCK_P, BLOCK_C)
    y = (x - pivot[None, :]) * scale[None, :] + shift[None, :]
    if GELU:
        y = 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))  # nn.GELU(): the erf form
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=inside)


def _finalize_chunks(n_chunks: int) -> int:
    """Partials the finalize kernel reads per step: all of a row's, up to FINALIZE_BLOCK (a power of two)."""
    return min(triton.next_power_of_2(n_chunks), FINALIZE_BLOCK)


def _affine(weight: torch.Tensor | None, bias: torch.Tensor | None,
            x: torch.Tensor) -> tuple[bool, torch.Tensor, torch.Tensor]:
    """(AFFINE, weight, bias) for the apply kernels: F.group_norm takes either alone (a missing weight is
    ones, a missing bias zeros); with neither, x stands in for both pointers, which AFFINE=False never reads."""
    if weight is None and bias is None:
        return False, x, x
    C = x.shape[1]
    weight = torch.ones(C, dtype=x.dtype, device=x.device) if weight is None else weight  # (C,)
    bias = torch.zeros(C, dtype=x.dtype, device=x.device) if bias is None else bias  # (C,)
    return True, weight, bias


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4-D map stored (N, H, W, C) in memory that the NHWC kernels can read as one run per image (a
    plain-contiguous map goes to the NCHW kernels, which is also what a 1x1 map or C = 1 is)."""
    return x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def group_norm_triton(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                      eps: float, *, gelu: bool = False) -> torch.Tensor:
    """F.group_norm(x, num_groups, weight, bias, eps), then F.gelu if `gelu`: x (N, C, *) -> same shape,
    dtype and memory format (channels_last maps take the NHWC kernels, anything else is made contiguous).
    No autograd: callers use it for inference only (`langbrt.modules.blocks.GroupNorm`)."""
    N, C = x.shape[:2]
    if C % num_groups:
        raise ValueError(f"{C} channels do not split into {num_groups} groups")
    if is_channels_last(x):
        return _group_norm_nhwc(x, num_groups, weight, bias, eps, gelu)
    x = x.contiguous()
    plane_size = x[0, 0].numel()
    rows, row_size = N * num_groups, C // num_groups * plane_size
    n_chunks = triton.cdiv(row_size, STATS_BLOCK)
    partial = torch.empty((rows, n_chunks, 2), dtype=torch.float32, device=x.device)  # (mean, M2) per chunk
    mean = torch.empty(rows, dtype=torch.float32, device=x.device)  # about each row's pivot
    rstd = torch.empty_like(mean)
    y = torch.empty_like(x)
    with cuda_device_guard(x.device):
        gn_partial_stats_kernel[(n_chunks, rows)](x, partial, row_size, BLOCK=STATS_BLOCK)
        gn_finalize_kernel[(rows,)](partial, mean, rstd, row_size, n_chunks, eps, BLOCK=STATS_BLOCK,
                                    CHUNKS=_finalize_chunks(n_chunks))
        affine, weight, bias = _affine(weight, bias, x)
        gn_apply_kernel[(N * C, triton.cdiv(plane_size, APPLY_BLOCK))](
            x, y, mean, rstd, weight, bias, C, plane_size, C // num_groups,
            AFFINE=affine, GELU=gelu, BLOCK=APPLY_BLOCK)
    return y


def _group_norm_nhwc(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                     eps: float, gelu: bool) -> torch.Tensor:
    """`group_norm_triton` for a channels_last (N, C, H, W) map: tiles of whole pixels, every channel."""
    N, C, H, W = x.shape
    hw, channels_per_group = H * W, C // num_groups
    block_c = triton.next_power_of_2(C)
    stats_p = max(1, STATS_BLOCK // block_c)  # pixels per statistics program: ~STATS_BLOCK elements
    apply_p = max(1, APPLY_BLOCK // block_c)
    n_chunks = triton.cdiv(hw, stats_p)
    partial = torch.empty((N * num_groups, n_chunks, 2), dtype=torch.float32, device=x.device)  # (mean, M2)
    mean = torch.empty(N * num_groups, dtype=torch.float32, device=x.device)  # about each row's pivot
    rstd = torch.empty_like(mean)
    y = torch.empty_like(x)  # channels_last too
    with cuda_device_guard(x.device):
        gn_nhwc_partial_stats_kernel[(n_chunks, N)](x, partial, hw, C, channels_per_group, GROUPS=num_groups,
                                                    BLOCK_P=stats_p, BLOCK_C=block_c)
        # A chunk of the row (image, group) holds stats_p pixels x channels_per_group values.
        gn_finalize_kernel[(N * num_groups,)](partial, mean, rstd, hw * channels_per_group, n_chunks, eps,
                                              BLOCK=stats_p * channels_per_group,
                                              CHUNKS=_finalize_chunks(n_chunks))
        affine, weight, bias = _affine(weight, bias, x)
        gn_nhwc_apply_kernel[(triton.cdiv(hw, apply_p), N)](
            x, y, mean, rstd, weight, bias, hw, C, channels_per_group,
            GROUPS=num_groups, AFFINE=affine, GELU=gelu, BLOCK_P=apply_p, BLOCK_C=block_c)
    return y
