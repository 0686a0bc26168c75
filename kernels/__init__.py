"""Attention kernels of LangBRT: the fused Triton kernel and the PyTorch reference it must match.

Importing this package never imports triton or touches a GPU; the Triton path loads on first use.
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
