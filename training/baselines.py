"""Classical retouchers: the floors a learned blemish remover must beat (quality benchmark, `training/suite.py`).

- `bilateral_retouch`: edge-preserving smoothing over the skin, the classic "airbrush". It knows nothing about
  blemishes or prompts, so it also smooths the blemishes no prompt named (its specificity is poor by design).
- `diffusion_inpaint`: harmonic (Laplace) inpainting, the masked pixels relaxed to the average of their four
  neighbours by Jacobi iterations. It stands in for OpenCV's Telea fast-marching inpainting (both fill a hole
  smoothly from its border; no OpenCV dependency). Fed a model's predicted maps, it gives "the model's detector
  plus a classical fill", which isolates what the learned synthesis adds.

Both are pure torch on (B, C, H, W) images in [0, 1] and leave every pixel outside their mask bit-identical.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bilateral_filter(images: torch.Tensor, sigma_space: float = 1.5, sigma_range: float = 0.08,
                     radius: int | None = None) -> torch.Tensor:
    """Bilateral filter (Tomasi & Manduchi 1998), range weights on the RGB distance. (B, C, H, W) -> same.

    One pass over the (2r+1)^2 offsets, accumulating weighted sums, so memory stays O(image) at any radius.
    Borders are replicate-padded. `radius` defaults to ceil(2 sigma_space).
    """
    assert images.dim() == 4 and sigma_space > 0 and sigma_range > 0, (images.shape, sigma_space, sigma_range)
    r = math.ceil(2 * sigma_space) if radius is None else radius
    _, _, h, w = images.shape
    padded = F.pad(images, (r, r, r, r), mode="replicate")  # (B, C, H+2r, W+2r)
    total = torch.zeros_like(images)  # (B, C, H, W)
    weight_sum = torch.zeros_like(images[:, :1])  # (B, 1, H, W)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            neighbour = padded[:, :, r + dy:r + dy + h, r + dx:r + dx + w]  # (B, C, H, W)
            distance2 = (neighbour - images).pow(2).sum(dim=1, keepdim=True)  # (B, 1, H, W)
            weight = math.exp(-(dy * dy + dx * dx) / (2 * sigma_space**2)) * torch.exp(
                -distance2 / (2 * sigma_range**2))  # (B, 1, H, W)
            total += weight * neighbour
            weight_sum += weight
    return total / weight_sum  # the centre pixel has weight 1, so weight_sum >= 1


def bilateral_retouch(images: torch.Tensor, skin_mask: torch.Tensor, sigma_space: float = 1.5,
                      sigma_range: float = 0.08, passes: int = 2) -> torch.Tensor:
    """Smooth `images` (B, C, H, W) with `passes` bilateral filters where `skin_mask` (B, 1, H, W) > 0.5.

    The filter sees the whole image (edges at the skin border stay sharp), but only skin pixels take its
    output: every pixel outside the mask is returned bit-identical.
    """
    assert skin_mask.shape[0] == images.shape[0] and skin_mask.shape[-2:] == images.shape[-2:], (
        skin_mask.shape, images.shape)
    smooth = images
    for _ in range(passes):
        smooth = bilateral_filter(smooth, sigma_space, sigma_range)
    return torch.where(skin_mask > 0.5, smooth, images)


def diffusion_inpaint(images: torch.Tensor, mask: torch.Tensor, iterations: int = 300) -> torch.Tensor:
    """Fill the pixels where `mask` (B, 1, H, W) > 0.5 with the harmonic interpolation of their surroundings.

    Each Jacobi iteration replaces every hole pixel by the mean of its 4 neighbours (replicate border); holes
    start at the image's mean over the known pixels, so a few hundred iterations converge on blemish-sized holes
    (a few pixels wide). Pixels outside the mask are returned bit-identical. (B, C, H, W) -> same.
    """
    hole = (mask > 0.5).expand_as(images)  # (B, C, H, W) bool
    known = (~hole).to(images.dtype)
    fill = (images * known).sum(dim=(2, 3), keepdim=True) / known.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
    x = torch.where(hole, fill.expand_as(images), images)  # (B, C, H, W)
    kernel = images.new_tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]])
    kernel = kernel.expand(images.shape[1], 1, 3, 3)  # (C, 1, 3, 3) depthwise
    for _ in range(iterations):
        average = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=images.shape[1])
        x = torch.where(hole, average, images)
    return x
