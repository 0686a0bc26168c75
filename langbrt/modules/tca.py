"""T: the latent transformer of target-aware cross-attention (TCA) blocks (paper eq. 2-4).

A block is Swin-like: LayerNorm -> windowed attention -> residual, LayerNorm -> MLP -> residual, with
the window grid shifted by half a window in every other block. The attention is the TCA op of
`langbrt.kernels` (queries from mask-suppressed features, keys/values from the map features, sigmoid
weights with a learnable positive temperature per head). The block calls that op through one function,
so the fused Triton kernel and the PyTorch reference are interchangeable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LangBRTConfig
from ..kernels import TCAParams, windowed_sigmoid_cross_attention
from .window_self_attention import WindowSelfAttention


def position_code(height: int, width: int, frequencies: int, device: torch.device,
                  dtype: torch.dtype) -> torch.Tensor:
    """Sin/cos code of each latent position (1, h, w, 4F): lets keys and values tell positions apart.

    Keys and values are computed from the maps alone (eq. 3); without a position code every clean
    position would produce the same key.
    """
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height  # (h,)
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width  # (w,)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (h, w)
    codes = []
    for k in range(frequencies):
        angle = math.pi * (2**k)
        codes += [torch.sin(angle * grid_y), torch.cos(angle * grid_y),
                  torch.sin(angle * grid_x), torch.cos(angle * grid_x)]
    if not codes:  # F = 0, which the config allows (an ablation): keys and values from the map alone
        return grid_y.new_zeros(1, height, width, 0)
    return torch.stack(codes, dim=-1)[None]  # (1, h, w, 4F)


def map_features(mask: torch.Tensor, frequencies: int) -> torch.Tensor:
    """m~ = [m, position code]: combined map (B, 1, h, w) -> (B, h, w, 1 + 4F), channel 0 is m."""
    B, _, h, w = mask.shape
    code = position_code(h, w, frequencies, mask.device, mask.dtype).expand(B, -1, -1, -1)  # (B, h, w, 4F)
    return torch.cat([mask.permute(0, 2, 3, 1), code], dim=-1)  # (B, h, w, 1 + 4F)


class TargetAwareCrossAttention(nn.Module):
    """The learnable projections and temperatures of one TCA; the maths lives in `langbrt.kernels`."""

    def __init__(self, dim: int, map_dim: int, num_heads: int, window_size: int, shift: int,
                 attention: str = "auto") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift = shift
        self.attention = attention
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(map_dim, dim)
        self.v = nn.Linear(map_dim, dim)
        self.proj = nn.Linear(dim, dim)
        head_dim = dim // num_heads
        # alpha = softplus(raw) > 0, starting at sqrt(head_dim) like scaled dot-product attention.
        start = math.log(math.expm1(math.sqrt(head_dim)))
        self.alpha_raw = nn.Parameter(torch.full((num_heads,), start))
        self._frozen_alpha: tuple[tuple, torch.Tensor] | None = None  # (alpha_raw's state, softplus of it)

    def alpha(self) -> torch.Tensor:
        """softplus(alpha_raw), (num_heads,). Without autograd, one tensor until alpha_raw changes.

        Why: the folded kernel caches its folded weights by the identities and version counters of the
        tensors it is given (kernels/tca_fold.py). A fresh softplus each call missed that cache on every
        attention: a refold per call and, in fp16, an overflow check that syncs with the device, which made
        the fp16 forward slower than with the direct kernel and broke CUDA graph capture (seen on an H100).
        The tensor is made outside inference mode so that it has a version counter to key on.
        """
        raw = self.alpha_raw
        if torch.is_grad_enabled() and raw.requires_grad:
            return F.softplus(raw)
        state = (raw._version, raw.data_ptr(), raw.dtype, raw.device)
        if self._frozen_alpha is None or self._frozen_alpha[0] != state:
            with torch.inference_mode(False), torch.no_grad():
                self._frozen_alpha = (state, F.softplus(raw))
        return self._frozen_alpha[1]

    def params(self) -> TCAParams:
        return TCAParams(
            q_weight=self.q.weight, q_bias=self.q.bias, k_weight=self.k.weight, k_bias=self.k.bias,
            v_weight=self.v.weight, v_bias=self.v.bias, out_weight=self.proj.weight, out_bias=self.proj.bias,
            alpha=self.alpha(),
        )

    def forward(self, x: torch.Tensor, features_of_maps: torch.Tensor) -> torch.Tensor:
        return windowed_sigmoid_cross_attention(
            x, features_of_maps, self.params(), self.num_heads, self.window_size, self.shift,
            impl=self.attention,
        )  # (B, h, w, C)


class TCABlock(nn.Module):
    """x (B, h, w, C) -> x + TCA(LN(x), m~) -> + MLP(LN(.))."""

    def __init__(self, dim: int, map_dim: int, num_heads: int, window_size: int, shift: int,
                 mlp_ratio: float, attention: str = "auto", attention_kind: str = "tca") -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn: nn.Module
        if attention_kind == "self":
            self.attn = WindowSelfAttention(dim, num_heads, window_size, shift)
        else:
            self.attn = TargetAwareCrossAttention(dim, map_dim, num_heads, window_size, shift, attention)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, features_of_maps: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), features_of_maps)  # (B, h, w, C)
        return x + self.mlp(self.norm2(x))  # (B, h, w, C)


class LatentTransformer(nn.Module):
    """N TCA blocks over the latent grid; odd blocks use shifted windows (Swin)."""

    def __init__(self, config: LangBRTConfig) -> None:
        super().__init__()
        window = min(config.window_size, config.latent_size)
        shift = window // 2 if config.latent_size > window else 0
        self.position_frequencies = config.position_frequencies
        self.blocks = nn.ModuleList([
            TCABlock(config.embed_dim, config.map_feature_dim, config.num_heads, window,
                     shift if i % 2 else 0, config.mlp_ratio, config.attention, config.attention_kind)
            for i in range(config.depth)
        ])
        self.norm = nn.LayerNorm(config.embed_dim)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """features (B, C, h, w), gated combined map (B, 1, h, w) -> transformed features (B, C, h, w)."""
        m_tilde = map_features(mask, self.position_frequencies)  # (B, h, w, Cm)
        x = features.permute(0, 2, 3, 1)  # (B, h, w, C)
        for block in self.blocks:
            x = block(x, m_tilde)
        return self.norm(x).permute(0, 3, 1, 2)  # (B, C, h, w)
