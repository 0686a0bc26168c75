"""Plain shifted-window softmax self-attention: the "w/o TCA" ablation of the paper's Table 2.

Queries, keys and values all come from the features; the blemish map plays no part. It reuses the
window plumbing of `langbrt.kernels.windows` so the two attentions differ only in what they attend with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.windows import attention_keep_mask, cyclic_shift, pad_to_windows, window_partition, window_reverse


class WindowSelfAttention(nn.Module):
    """x (B, H, W, C) -> (B, H, W, C); same call signature as the TCA attention, maps ignored."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift = shift
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, features_of_maps: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        w, heads = self.window_size, self.num_heads
        shifted = cyclic_shift(pad_to_windows(x, w), self.shift)  # (B, Hp, Wp, C)
        Hp, Wp = shifted.shape[1:3]
        windows = window_partition(shifted, w)  # (B*nW, N, C)
        N = w * w
        qkv = self.qkv(windows).view(-1, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)  # (3, B*nW, h, N, d)
        keep = attention_keep_mask(H, W, w, self.shift, device=x.device)  # (nW, N, N)
        keep = keep.repeat(B, 1, 1)[:, None]  # (B*nW, 1, N, N)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=keep)  # (B*nW, h, N, d)
        out = self.proj(out.transpose(1, 2).reshape(-1, N, C))  # (B*nW, N, C)
        out = cyclic_shift(window_reverse(out, w, Hp, Wp), -self.shift)  # (B, Hp, Wp, C)
        return out[:, :H, :W, :]
