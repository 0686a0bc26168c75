"""Attention kernels of LangBRT: the fused Triton kernel and the PyTorch reference it must match.

Importing this package never imports triton or touches a GPU; the Triton path loads on first use.

Dependency direction: the model imports this package (its TCA blocks call one function with the kernel and
the reference behind it, and its conv blocks the fused GroupNorm), so `langbrt -> kernels`, not the
`langbrt <- kernels` DESIGN.md draws. To keep the imports acyclic, nothing here imports from `langbrt` but
`langbrt.errors`, a leaf module. The runtime's torch backend imports `dispatch.cuda_device_guard` and
`tca_fold.live_folds` (what its CUDA graphs must keep alive) from here too.
"""

from .dispatch import ENV_VAR, AttentionImpl, resolve_impl, windowed_sigmoid_cross_attention
from .reference import TCAParams, logit_bias, windowed_sigmoid_cross_attention_reference

__all__ = [
    "ENV_VAR",
    "AttentionImpl",
    "TCAParams",
    "logit_bias",
    "resolve_impl",
    "windowed_sigmoid_cross_attention",
    "windowed_sigmoid_cross_attention_reference",
]
