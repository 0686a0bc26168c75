"""S: a PatchGAN discriminator (used by training only; part of the model family for checkpoints)."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import group_norm


class PatchDiscriminator(nn.Module):
    """(B, 3, H, W) -> per-patch logits (B, 1, H/8 - 2, W/8 - 2) that the patch looks manually retouched.

    Patch logits judge local skin texture, which is what retouching changes; a global score would let
    the generator win on the unchanged background.
    """

    def __init__(self, channels: int = 64, num_downsamples: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = channels
        for _ in range(num_downsamples - 1):
            layers += [nn.Conv2d(width, width * 2, 4, stride=2, padding=1), group_norm(width * 2),
                       nn.LeakyReLU(0.2)]
            width *= 2
        layers += [nn.Conv2d(width, width, 3, padding=1), group_norm(width), nn.LeakyReLU(0.2),
                   nn.Conv2d(width, 1, 3)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2.0 - 1.0)  # (B, 1, h', w')
