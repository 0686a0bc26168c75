"""Eq. 9: pixel L1 plus beta times the VGG-19 feature L1 between the generated and the retouched image."""

import torch
import torch.nn.functional as F

from .perceptual import VGGPerceptual
from .weights import LossWeights


def consistency_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    weights: LossWeights,
    perceptual: VGGPerceptual | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(B, 3, H, W) pair -> (weighted total, unweighted value of each active term for logging, detached:
    read as numbers only when logged, so a CUDA step does not wait on the GPU for them).

    A term whose weight is 0 is not computed at all (an ablation should cost nothing); the perceptual term
    needs the VGG module whenever its weight is > 0 (`require_loss_weights` loads it before training).
    """
    total = pred.new_zeros(())
    parts: dict[str, torch.Tensor] = {}
    if weights.l1 > 0:
        l1 = F.l1_loss(pred, target)
        total = total + weights.l1 * l1
        parts["l1"] = l1.detach()
    if weights.perceptual > 0:
        assert perceptual is not None, f"perceptual weight is {weights.perceptual} but no VGGPerceptual was given"
        vgg = perceptual(pred, target)
        total = total + weights.perceptual * vgg
        parts["perceptual"] = vgg.detach()
    return total, parts
