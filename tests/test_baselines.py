"""The classical floors of the quality benchmark: they act only inside their mask, and do what they claim there."""

import torch

from langbrt.training.baselines import bilateral_filter, bilateral_retouch, diffusion_inpaint


def _noisy_skin(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = (0.6 + 0.05 * torch.randn(2, 3, 32, 32, generator=gen)).clamp(0, 1)  # (B, 3, H, W)
    skin = torch.zeros(2, 1, 32, 32)
    skin[:, :, 8:24, 6:26] = 1.0
    return images, skin


def test_bilateral_retouch_reduces_variance_inside_the_skin_mask():
    images, skin = _noisy_skin()
    out = bilateral_retouch(images, skin)
    inside = skin.expand_as(images) > 0.5
    assert out[inside].var() < 0.5 * images[inside].var()


def test_bilateral_retouch_leaves_pixels_outside_the_skin_mask_bit_identical():
    images, skin = _noisy_skin()
    out = bilateral_retouch(images, skin)
    outside = skin.expand_as(images) <= 0.5
    assert torch.equal(out[outside], images[outside])


def test_bilateral_filter_keeps_a_strong_edge():
    images = torch.zeros(1, 3, 16, 16)
    images[..., 8:] = 1.0
    out = bilateral_filter(images, sigma_range=0.08)
    assert (out[..., :8] < 1e-3).all() and (out[..., 8:] > 1 - 1e-3).all()


def _gradient(size: int = 32) -> torch.Tensor:
    ramp = torch.linspace(0.1, 0.9, size)
    return torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size),
                        0.5 * (ramp[None, :] + ramp[:, None]).expand(size, size)])[None]  # (1, 3, S, S)


def test_diffusion_inpaint_fills_a_hole_in_a_smooth_gradient_close_to_the_truth():
    truth = _gradient()
    hole = torch.zeros(1, 1, 32, 32)
    hole[..., 12:20, 12:18] = 1.0
    damaged = torch.where(hole > 0.5, torch.zeros_like(truth), truth)
    out = diffusion_inpaint(damaged, hole, iterations=200)
    assert (out - truth).abs().max() < 0.01


def test_diffusion_inpaint_leaves_pixels_outside_the_mask_identical():
    images, _ = _noisy_skin()
    hole = torch.zeros(2, 1, 32, 32)
    hole[:, :, 10:14, 10:16] = 1.0
    out = diffusion_inpaint(images, hole, iterations=50)
    outside = hole.expand_as(images) <= 0.5
    assert torch.equal(out[outside], images[outside])
    assert not torch.equal(out, images)
