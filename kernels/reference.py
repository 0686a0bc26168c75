"""The windowed sigmoid cross-attention with mask-weighted queries, in plain PyTorch.

This is the specification of the LangBRT attention (paper eq. 2-4 with Swin windows); the fused Triton
kernel must match it. Per window of w x w tokens and per head h:

    Q = (x * (1 - m)) Wq^T + bq          queries from mask-suppressed features     (eq. 2)
    K = m~ Wk^T + bk,  V = m~ Wv^T + bv  keys and values from the map features     (eq. 3)
    A = sigmoid(Q K^T / alpha_h - log(w*w)) * keep                                  (eq. 4)
    out = (A V) Wo^T + bo

`m` is channel 0 of the map features `m~` (the combined blemish map in [0, 1]); the other channels are
whatever the model adds (a position code). The `- log(w*w)` logit bias keeps the sum over 64 sigmoid
weights near 1 at initialisation (sigmoid attention, Ramapuram et al. 2024); without it the residual
update starts ~32x larger than a softmax block's. `keep` removes pairs across Swin shift regions and every
padded key: a padded key's projection is the bias, which must never leak into a valid window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .windows import (
    attention_keep_mask,
    cyclic_shift,
    pad_to_windows,
    window_partition,
    window_reverse,
)


@dataclass(frozen=True)
class TCAParams:
    """The learnable tensors of one target-aware cross-attention; shapes for C channels, Cm map channels."""

    q_weight: torch.Tensor  # (C, C)
    q_bias: torch.Tensor  # (C,)
    k_weight: torch.Tensor  # (C, Cm)
    k_bias: torch.Tensor  # (C,)
    v_weight: torch.Tensor  # (C, Cm)
    v_bias: torch.Tensor  # (C,)
    out_weight: torch.Tensor  # (C, C)
    out_bias: torch.Tensor  # (C,)
    alpha: torch.Tensor  # (heads,), positive temperature per head

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.q_weight, self.q_bias, self.k_weight, self.k_bias, self.v_weight, self.v_bias,
                self.out_weight, self.out_bias, self.alpha)


def logit_bias(window_size: int) -> float:
    """The constant added to every attention logit: -log(number of tokens in a window)."""
    return -math.log(window_size * window_size)


def windowed_sigmoid_cross_attention_reference(
    x: torch.Tensor,
    map_features: torch.Tensor,
    params: TCAParams,
    num_heads: int,
    window_size: int,
    shift: int,
) -> torch.Tensor:
    """Reference TCA attention: x (B, H, W, C), map_features (B, H, W, Cm) -> (B, H, W, C).

    H and W need not be multiples of `window_size` (zero padding, masked as keys, cropped from the
    output). `shift` is the cyclic shift of shifted-window blocks (0 for regular blocks).
    """
    B, H, W, C = x.shape
    assert map_features.shape[:3] == (B, H, W), (x.shape, map_features.shape)
    assert C % num_heads == 0, (C, num_heads)
    head_dim = C // num_heads
    w = window_size

    m = map_features[..., :1]  # (B, H, W, 1)
    q_in = x * (1.0 - m)  # (B, H, W, C)
    q_in = cyclic_shift(pad_to_windows(q_in, w), shift)  # (B, Hp, Wp, C)
    kv_in = cyclic_shift(pad_to_windows(map_features, w), shift)  # (B, Hp, Wp, Cm)
    Hp, Wp = q_in.shape[1:3]
    n_windows = (Hp // w) * (Wp // w)

    q_win = window_partition(q_in, w)  # (B*nW, N, C)
    kv_win = window_partition(kv_in, w)  # (B*nW, N, Cm)
    N = w * w
    q = torch.nn.functional.linear(q_win, params.q_weight, params.q_bias)  # (B*nW, N, C)
    k = torch.nn.functional.linear(kv_win, params.k_weight, params.k_bias)  # (B*nW, N, C)
    v = torch.nn.functional.linear(kv_win, params.v_weight, params.v_bias)  # (B*nW, N, C)
    q = q.view(-1, N, num_heads, head_dim).transpose(1, 2)  # (B*nW, h, N, d)
    k = k.view(-1, N, num_heads, head_dim).transpose(1, 2)  # (B*nW, h, N, d)
    v = v.view(-1, N, num_heads, head_dim).transpose(1, 2)  # (B*nW, h, N, d)

    inv_alpha = (1.0 / params.alpha).to(q.dtype).view(1, num_heads, 1, 1)  # (1, h, 1, 1)
    logits = (q @ k.transpose(-2, -1)) * inv_alpha + logit_bias(w)  # (B*nW, h, N, N)
    keep = attention_keep_mask(H, W, w, shift, device=x.device)  # (nW, N, N)
    keep = keep.view(1, n_windows, 1, N, N).expand(B, -1, -1, -1, -1).reshape(B * n_windows, 1, N, N)  # (B*nW, 1, N, N)
    attn = torch.sigmoid(logits) * keep.to(logits.dtype)  # (B*nW, h, N, N)

    out = (attn @ v).transpose(1, 2).reshape(-1, N, C)  # (B*nW, N, C)
    out = torch.nn.functional.linear(out, params.out_weight, params.out_bias)  # (B*nW, N, C)
    out = window_reverse(out, w, Hp, Wp)  # (B, Hp, Wp, C)
    out = cyclic_shift(out, -shift)  # (B, Hp, Wp, C), unshifted
    return out[:, :H, :W, :].contiguous()  # (B, H, W, C)
