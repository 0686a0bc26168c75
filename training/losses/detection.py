"""Blemish-detection supervision: eq. 5 (whole map), eq. 6 (per face region), and exact per-prompt masks.

Real pairs carry no blemish annotation, so the target is derived from the pair itself: tau(|x - y|), the
place where the retoucher changed the image (RetouchFormer's attention label is the same construction).
Synthetic pairs know the exact removed-blemish mask, which then replaces tau.
"""

import torch
import torch.nn.functional as F

# tau: after per-image min-max normalisation, 1 is the strongest edit in the image (the body of a removed
# blemish). Retouchers also apply diffuse low-amplitude changes (tone smoothing, re-compression noise) that sit
# well below a quarter of that peak; blemishes and their soft borders sit above it. A steep sigmoid centred at
# 0.25 separates the two while staying differentiable-friendly (no hard threshold aliasing on blemish edges).
TAU_CENTRE = 0.25
TAU_STEEPNESS = 20.0
_EPS = 1e-8


def _tau(d: torch.Tensor) -> torch.Tensor:
    """Sigmoid rescaled so tau(0) = 0 and tau(1) = 1 exactly: unchanged pixels get a target of exactly 0 (a
    pair with no edit asks for an all-zero map) and the strongest edit exactly 1."""
    low = torch.sigmoid(torch.tensor(-TAU_STEEPNESS * TAU_CENTRE, dtype=d.dtype, device=d.device))
    high = torch.sigmoid(torch.tensor(TAU_STEEPNESS * (1.0 - TAU_CENTRE), dtype=d.dtype, device=d.device))
    return (torch.sigmoid(TAU_STEEPNESS * (d - TAU_CENTRE)) - low) / (high - low)


@torch.no_grad()
def blemish_target(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """tau(|x - y|) of eq. 5: (B, 3, H, W) pair -> (B, 1, H, W) in [0, 1].

    Channel-mean absolute difference, min-max normalised per image (so the label does not depend on how
    strongly a given retoucher edits), then the steep sigmoid above. Identical images give all zeros.
    It is a label: computed without autograd.
    """
    d = (source - target).abs().mean(dim=1, keepdim=True)  # (B, 1, H, W)
    low = d.amin(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
    high = d.amax(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
    d = (d - low) / (high - low).clamp_min(_EPS)  # (B, 1, H, W) in [0, 1]; all 0 when nothing changed
    return _tau(d).clamp(0.0, 1.0)


BCE, L1 = "bce", "l1"
DETECTION_LOSSES = (BCE, L1)
"""What `--detection-loss` accepts (see `map_loss`); the one list the CLI, the config check and the loss use."""
DEFAULT_DETECTION_LOSS = BCE


def map_loss(pred: torch.Tensor, label: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-pixel loss between predicted probabilities and a [0, 1] label, same shape, no reduction.

    "l1" is the paper's eq. 5. Its optimum for sparse blemish labels is the median, 0: on the synthetic set
    a tiny model trained with it stayed at chance (cell-level AP 0.03 after 800 steps, chance 0.04) while
    binary cross-entropy, whose gradient p - y does not vanish where the sigmoid saturates, reached AP 0.51
    in the same steps (see the training notes in README). "bce" is therefore the default.
    """
    if kind == BCE:
        return F.binary_cross_entropy(pred.clamp(1e-6, 1.0 - 1e-6), label, reduction="none")
    assert kind == L1, kind
    return (pred - label).abs()


def _detection_target(
    source: torch.Tensor, target: torch.Tensor, exact_mask: torch.Tensor | None
) -> torch.Tensor:
    """(B, 1, H, W): the exact mask where the data knows it (synthetic), else tau(|x - y|)."""
    return exact_mask.to(source.dtype) if exact_mask is not None else blemish_target(source, target)


def detection_loss(
    soft_mask: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
    exact_mask: torch.Tensor | None = None,
    kind: str = DEFAULT_DETECTION_LOSS,
) -> torch.Tensor:
    """Eq. 5: the combined soft detection map m (B, 1, H, W) against its target (see `map_loss` for `kind`).
    """
    label = _detection_target(source, target, exact_mask)  # (B, 1, H, W)
    assert soft_mask.shape == label.shape, (tuple(soft_mask.shape), tuple(label.shape))
    return map_loss(soft_mask, label, kind).mean()


def component_loss(
    soft_mask: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
    region_masks: torch.Tensor | None,
    exact_mask: torch.Tensor | None = None,
    kind: str = DEFAULT_DETECTION_LOSS,
) -> torch.Tensor:
    """Eq. 6: the eq. 5 map loss (`kind`: BCE by default, L1 as in the paper) restricted to each pre-defined
    prompt's face region (B, P, H, W), averaged over the region's pixels (so a small region such as the
    under-eye area weighs as much as a cheek; the paper's L1 norm sums them), summed over P, averaged over the
    batch. Returns a 0 tensor when the data has no region masks."""
    if region_masks is None:
        return soft_mask.new_zeros(())
    label = _detection_target(source, target, exact_mask)  # (B, 1, H, W)
    error = map_loss(soft_mask, label, kind)  # (B, 1, H, W)
    regions = region_masks.to(error.dtype)  # (B, P, H, W)
    per_region = (regions * error).sum(dim=(2, 3)) / regions.sum(dim=(2, 3)).clamp_min(1.0)  # (B, P)
    return per_region.sum(dim=1).mean()


def per_prompt_detection_loss(
    soft_maps: torch.Tensor, prompt_masks: torch.Tensor, prompt_valid: torch.Tensor, kind: str = DEFAULT_DETECTION_LOSS
) -> torch.Tensor:
    """Synthetic data only: each prompt's soft map (B, K, H, W) against its exact blemish mask (B, K, H, W),
    mean map loss (`kind`) over each image's valid prompt slots (B, K) bool, then over the images (as
    `SemanticLoss`, so that the loss of a batch does not depend on how torchrun splits it); not in the paper,
    which has no per-prompt ground truth. Padding slots are ignored; 0 when none is valid."""
    assert soft_maps.shape == prompt_masks.shape, (tuple(soft_maps.shape), tuple(prompt_masks.shape))
    assert prompt_valid.shape == soft_maps.shape[:2], (tuple(prompt_valid.shape), tuple(soft_maps.shape))
    if not bool(prompt_valid.any()):
        return soft_maps.new_zeros(())
    valid = prompt_valid.bool()  # (B, K)
    per_slot = map_loss(soft_maps, prompt_masks.to(soft_maps.dtype), kind).mean(dim=(2, 3))  # (B, K)
    per_image = torch.where(valid, per_slot, 0.0).sum(dim=1) / valid.sum(dim=1).clamp_min(1)  # (B,)
    return per_image.mean()
