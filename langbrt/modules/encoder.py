"""E: the image encoder, a convolutional stem and strided stages down to the latent grid."""

from __future__ import annotations

import torch
from torch import nn

from ..config import LangBRTConfig
from .blocks import ResidualConvBlock


class Encoder(nn.Module):
    """(B, 3, H, W) in [0, 1] -> latent features F0 (B, C, H/s, W/s) and the skips the decoder reuses.

    Skips keep the full-resolution detail the decoder needs to synthesise skin that matches its
    surroundings; the transformer only sees the latent grid.
    """

    def __init__(self, config: LangBRTConfig) -> None:
        super().__init__()
        channels = config.encoder_channels
        self.stem = nn.Sequential(nn.Conv2d(3, channels[0], 3, padding=1), ResidualConvBlock(channels[0]))
        stages = []
        previous = channels[0]
        for width in channels:
            stages.append(nn.Sequential(nn.Conv2d(previous, width, 4, stride=2, padding=1),
                                        ResidualConvBlock(width)))
            previous = width
        self.stages = nn.ModuleList(stages)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.stem(images * 2.0 - 1.0)  # (B, c0, H, W)
        skips = [x]
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        skips.pop()  # the last stage output is the latent itself
        return x, skips  # (B, C, H/s, W/s), [(B, c0, H, W), (B, c0, H/2, W/2), ...]
