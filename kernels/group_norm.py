"""GroupNorm (optionally followed by GELU) as three Triton launches, for inference on CUDA.

Why: PyTorch's CUDA GroupNorm reduces each (image, group) row in one thread block. LangBRT's encoder and
decoder normalise 256x256 and 512x512 maps in 8 groups, so a batch of 8 gives 64 blocks for 132 SMs, each
streaming 0.5-2 MB alone: in the committed H200 profile of an fp16 batch-8 forward
(`benchmarks/results/profile-paper-fp16-b8-NVIDIA-H200-2026-11-26.txt`) those statistics took 27 % of the
GPU time (287 us a call), and the GELU after every GroupNorm of `ResidualConvBlock` another full read and
write of the map.

Layout (x contiguous (N, C, *spatial): the rows of one (image, group) are one contiguous run of
C / G * HW elements):
1. `gn_partial_stats_kernel`, grid (N*G, chunks): each program takes BLOCK consecutive elements of one
   row and writes their count-weighted mean and M2 (sum of squared deviations from that mean, computed
   from the loaded tile: two passes over registers, no cancellation), in fp32;
2. `gn_finalize_kernel`, grid (N*G,): combines a row's chunks (Chan et al.'s parallel variance) into its
   mean and 1 / sqrt(var + eps);
3. `gn_apply_kernel`, grid (N*C, HW tiles): y = x * (rstd w_c) + (b_c - mean rstd w_c), then GELU (erf
   form, as nn.GELU), stored in x's dtype.
The statistics read x once with every SM busy, the apply reads and writes it once: the same traffic as
PyTorch's GroupNorm alone, with the GELU folded in. On an H100 (paper preset, fp16, batch 8) one forward
went from 17.2 to 12.1 ms: the statistics from 4.7 ms (PyTorch's RowwiseMoments, 15 calls) to 0.26, the
normalisation with its GELU 0.69 (benchmarks/results/profile-paper-fp16-b8-NVIDIA-H100-80GB-HBM3-2026-11-26.txt
against its -triton-group-norm- twin). So it is the default for CUDA inference (LANGBRT_GROUP_NORM=auto;
`langbrt.modules.blocks.GroupNorm`).

Importing this module imports triton; it never probes a device. On CPU the kernels run only in Triton's
interpreter (`TRITON_INTERPRET=1` before this import).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

STATS_BLOCK = 4096  # elements of a row per statistics program: 32 fp32 registers a thread at 4 warps
APPLY_BLOCK = 1024  # elements of a channel plane per apply program


@triton.jit
def gn_partial_stats_kernel(x_ptr, partial_ptr, row_size, BLOCK: tl.constexpr):
    """Program (row, chunk): (mean, M2) of elements [chunk * BLOCK, (chunk + 1) * BLOCK) of one row."""
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    offsets = chunk * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,)
    inside = offsets < row_size
    x = tl.load(x_ptr + row.to(tl.int64) * row_size + offsets, mask=inside, other=0.0).to(tl.float32)
    count = tl.minimum(row_size - chunk * BLOCK, BLOCK).to(tl.float32)
    mean = tl.sum(x, axis=0) / count
    deviation = tl.where(inside, x - mean, 0.0)  # (BLOCK,)
    m2 = tl.sum(deviation * deviation, axis=0)
    slot = partial_ptr + (row * tl.num_programs(1) + chunk) * 2
    tl.store(slot, mean)
    tl.store(slot + 1, m2)


@triton.jit
def gn_finalize_kernel(partial_ptr, mean_ptr, rstd_ptr, row_size, n_chunks, eps,
                       BLOCK: tl.constexpr, CHUNKS: tl.constexpr):
    """Program row: its chunks' (mean, M2) combined into the row's mean and 1 / sqrt(var + eps)."""
    row = tl.program_id(0)
    chunk = tl.arange(0, CHUNKS)  # (CHUNKS,) CHUNKS >= n_chunks, a power of two
    present = chunk < n_chunks
    slots = partial_ptr + (row * n_chunks + chunk) * 2
    means = tl.load(slots, mask=present, other=0.0)
    m2s = tl.load(slots + 1, mask=present, other=0.0)
    counts = tl.where(present, tl.minimum(row_size - chunk * BLOCK, BLOCK), 0).to(tl.float32)
    mean = tl.sum(counts * means, axis=0) / row_size
    spread = means - mean
    m2 = tl.sum(m2s + counts * spread * spread, axis=0)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, 1.0 / tl.sqrt(m2 / row_size + eps))


@triton.jit
def gn_apply_kernel(x_ptr, y_ptr, mean_ptr, rstd_ptr, weight_ptr, bias_ptr, C, plane_size, channels_per_group,
                    AFFINE: tl.constexpr, GELU: tl.constexpr, BLOCK: tl.constexpr):
    """Program (plane, tile): one tile of channel plane n * C + c, normalised, scaled, shifted, GELU'd."""
    plane = tl.program_id(0)
    row = plane // channels_per_group  # n * G + c // channels_per_group
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
    y = tl.load(x_ptr + start + offsets, mask=inside, other=0.0).to(tl.float32) * scale + shift
    if GELU:
        y = 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))  # nn.GELU(): the erf form
    tl.store(y_ptr + start + offsets, y.to(y_ptr.dtype.element_ty), mask=inside)


def group_norm_triton(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                      eps: float, *, gelu: bool = False) -> torch.Tensor:
    """F.group_norm(x, num_groups, weight, bias, eps), then F.gelu if `gelu`: x (N, C, *) -> same shape
    and dtype. No autograd: callers use it for inference only (`langbrt.modules.blocks.GroupNorm`)."""
    N, C = x.shape[:2]
    if C % num_groups:
        raise ValueError(f"{C} channels do not split into {num_groups} groups")
    x = x.contiguous()
    plane_size = x[0, 0].numel()
    rows, row_size = N * num_groups, C // num_groups * plane_size
    n_chunks = triton.cdiv(row_size, STATS_BLOCK)
    partial = torch.empty((rows, n_chunks, 2), dtype=torch.float32, device=x.device)  # (mean, M2) per chunk
    mean = torch.empty(rows, dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    y = torch.empty_like(x)
    # Triton launches on the current CUDA device: make that x's.
    device_guard = torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
    with device_guard:
        gn_partial_stats_kernel[(rows, n_chunks)](x, partial, row_size, BLOCK=STATS_BLOCK)
        gn_finalize_kernel[(rows,)](partial, mean, rstd, row_size, n_chunks, eps, BLOCK=STATS_BLOCK,
                                    CHUNKS=triton.next_power_of_2(n_chunks))
        affine = weight is not None and bias is not None
        gn_apply_kernel[(N * C, triton.cdiv(plane_size, APPLY_BLOCK))](
            x, y, mean, rstd, weight if affine else x, bias if affine else x, C, plane_size, C // num_groups,
            AFFINE=affine, GELU=gelu, BLOCK=APPLY_BLOCK)
    return y
