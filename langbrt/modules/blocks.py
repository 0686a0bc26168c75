"""Small convolutional building blocks shared by the encoder, decoder and discriminator."""

from __future__ import annotations

import os
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.dispatch import choice_from_env, triton_available

GROUP_NORM_ENV_VAR = "LANGBRT_GROUP_NORM"
# The largest maps the kernels index correctly and launch: the NHWC kernels address an image in int32
# (pixel * C), and the NCHW apply puts a plane's 1024-element tiles on grid axis 1 (at most 65 535 programs).
# The configs allow more (8192 channels, 4096 x 4096 images; the model takes any multiple of its stride).
MAX_KERNEL_IMAGE_ELEMENTS = 2**31 - 1
MAX_KERNEL_PLANE = 65535 * 1024


class GroupNormImpl(str, Enum):
    """How `GroupNorm` runs in inference (LANGBRT_GROUP_NORM).

    AUTO (default): `kernels/group_norm.py` on CUDA tensors with autograd off (statistics split over every
    SM, GELU fused into the normalisation; NCHW or channels_last), PyTorch's ops elsewhere. On an H100
    (2026-11-26, paper preset, fp16, NCHW) it took one batch-8 forward from 17.2 to 12.1 ms and
    `langbrt-bench`'s batch 1 from 5.7 to 2.9 ms (README, "Benchmarking").
    NATIVE: PyTorch's GroupNorm (and GELU) everywhere.
    TRITON: the kernels wherever autograd is off, on a CPU tensor too when TRITON_INTERPRET=1 (Triton's
    interpreter, as the tests run it).
    """

    AUTO = "auto"
    NATIVE = "native"
    TRITON = "triton"


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters and state dict), optionally followed by GELU, with a fused inference
    path on CUDA (`GroupNormImpl`). Training, tracing for export and torch.compile always take
    PyTorch's ops, which autograd, the ONNX exporter and inductor understand."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 gelu: bool = False) -> None:
        super().__init__(num_groups, num_channels, eps, affine)
        self.gelu = gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, *) -> (N, C, *)
        if self._fused(x):
            from ..kernels.group_norm import group_norm_triton  # imports triton: only when asked for

            return group_norm_triton(x, self.num_groups, self.weight, self.bias, self.eps, gelu=self.gelu)
        y = super().forward(x)
        return F.gelu(y) if self.gelu else y

    def _fused(self, x: torch.Tensor) -> bool:
        impl = choice_from_env(GROUP_NORM_ENV_VAR, GroupNormImpl, GroupNormImpl.AUTO)
        if impl is GroupNormImpl.NATIVE:
            return False
        if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return False
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            return False  # the kernels read NCHW or NHWC runs; any other layout would need a copy first
        if not kernels_take(x):
            return False
        if impl is GroupNormImpl.AUTO:
            return x.device.type == "cuda" and triton_available()
        return x.device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"

    def extra_repr(self) -> str:
        return super().extra_repr() + (", gelu=True" if self.gelu else "")


def kernels_take(x: torch.Tensor) -> bool:
    """Whether `kernels/group_norm.py` can run this map (N, C, *): a non-empty one (an empty batch indexed
    x[0, 0]) within the sizes above; anything else takes PyTorch's GroupNorm."""
    if x.numel() == 0:
        return False
    plane = x[0, 0].numel()
    return x.numel() // x.shape[0] <= MAX_KERNEL_IMAGE_ELEMENTS and plane <= MAX_KERNEL_PLANE


def group_norm(channels: int, gelu: bool = False) -> GroupNorm:
    """GroupNorm with up to 8 groups: batch-size independent (the paper trains with batch 1); `gelu`: the
    GELU that follows it, in the same module (so the fused path can apply both in one pass)."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return GroupNorm(groups, channels, gelu=gelu)


class ResidualConvBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection; keeps shape (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # The GELUs live in the GroupNorms; the Identity slots keep the checkpoints' parameter names
        # (body.0 / body.2 / body.3 / body.5) as they were with nn.GELU modules at 1 and 4.
        self.body = nn.Sequential(
            group_norm(channels, gelu=True),
            nn.Identity(),
            nn.Conv2d(channels, channels, 3, padding=1),
            group_norm(channels, gelu=True),
            nn.Identity(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
