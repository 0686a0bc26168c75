"""Adversarial terms, eq. 7 (generator) and eq. 8 (discriminator S), on S's patch logits."""

import torch
import torch.nn.functional as F
from torch import nn


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 7 in its non-saturating form: BCE-with-logits of S(y_hat) against the "retouched" label.

    Minimising log(1 - S(y_hat)) as written gives vanishing gradients exactly when S confidently rejects the
    generator's output (early training); maximising log S(y_hat) instead has the same fixed point and strong
    gradients there. This is standard practice since Goodfellow et al. 2014.
    """
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 8 as a loss to minimise: -[log S(y) + log(1 - S(y_hat))], i.e. BCE of real patches against 1 plus
    BCE of generated patches against 0. Pass detached fakes so this step leaves the generator alone."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze S during the generator step (and unfreeze it for its own) so the generator loss does not
    accumulate gradients in S's parameters."""
    for parameter in module.parameters():
        parameter.requires_grad_(flag)
