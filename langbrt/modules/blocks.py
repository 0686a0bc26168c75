"""Small convolutional building blocks shared by the encoder, decoder and discriminator."""

from __future__ import annotations

import torch
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups: batch-size independent (the paper trains with batch 1)."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ResidualConvBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection; keeps shape (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            group_norm(channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            group_norm(channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
