"""D: the decoder, from transformed latent features back to a residual image, and the output blend."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LangBRTConfig
from .blocks import ResidualConvBlock


class Decoder(nn.Module):
    """Latent (B, C, h, w) + encoder skips -> residual delta (B, 3, H, W).

    The decoder predicts a change, not an image: the model adds it only where the blemish map is
    non-zero (see `blend`), so normal skin is copied from the input bit for bit.
    """

    def __init__(self, config: LangBRTConfig) -> None:
        super().__init__()
        channels = config.encoder_channels
        skip_channels = (channels[0],) + tuple(channels[:-1])  # stem, then every stage but the last
        ups = []
        previous = channels[-1]
        for skip in reversed(skip_channels):
            ups.append(nn.ModuleDict({
                "fuse": nn.Conv2d(previous + skip, skip, 3, padding=1),
                "refine": ResidualConvBlock(skip),
            }))
            previous = skip
        self.ups = nn.ModuleList(ups)
        self.to_rgb = nn.Conv2d(previous, 3, 3, padding=1)

    def forward(self, latent: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = latent  # (B, C, h, w)
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")  # (B, C_prev, 2h, 2w)
            x = up["refine"](up["fuse"](torch.cat([x, skip], dim=1)))  # (B, C_skip, 2h, 2w)
        return self.to_rgb(x)  # (B, 3, H, W)


def blend(images: torch.Tensor, residual: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """y = clamp(x + mask * delta, 0, 1): where mask == 0 the output IS the input, exactly.

    x + 0 * delta == x for any finite delta, and clamping leaves values already in [0, 1] unchanged.
    """
    return torch.clamp(images + mask * residual, 0.0, 1.0)  # (B, 3, H, W)
