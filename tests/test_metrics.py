"""Specification of the evaluation metrics against hand-computed values and a reference library (torchmetrics)."""

import math

import pytest
import torch
from torchmetrics.functional.classification import binary_average_precision
from torchmetrics.functional.image import structural_similarity_index_measure

from langbrt.training.metrics import (
    LPIPSMetric,
    average_precision,
    mask_iou,
    psnr,
    specificity_change,
    ssim,
)


def test_psnr_of_a_constant_0_1_error_is_20_db():
    target = torch.full((2, 3, 8, 8), 0.5)
    torch.testing.assert_close(psnr(target + 0.1, target), torch.tensor([20.0, 20.0]))


def test_psnr_of_identical_images_is_finite():
    image = torch.rand(1, 3, 8, 8)
    assert psnr(image, image).item() == pytest.approx(100.0)


def test_masked_psnr_ignores_pixels_outside_the_mask():
    target = torch.zeros(1, 3, 8, 8)
    pred = target.clone()
    pred[..., :4, :] = 0.1  # inside the mask
    pred[..., 4:, :] = 0.9  # outside: must not count
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1
    torch.testing.assert_close(psnr(pred, target, mask), torch.tensor([20.0]))


def test_masked_psnr_of_an_empty_mask_is_nan():
    assert math.isnan(psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), torch.zeros(1, 1, 8, 8)).item())


@pytest.mark.parametrize(("pred", "target", "mask"), [
    ((1, 3, 8, 8), (1, 1, 8, 8), None),  # an RGB output against a grey target
    ((2, 3, 8, 8), (1, 3, 8, 8), None),  # every output against one target
    ((2, 3, 8, 8), (2, 3, 8, 8), (1, 1, 8, 8)),  # one mask for the whole batch
    ((1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8)),  # a mask per channel
], ids=["grey-target", "batch", "mask-batch", "mask-channels"])
def test_psnr_and_specificity_refuse_shapes_that_would_broadcast(pred, target, mask):
    """QA: psnr broadcast mismatched shapes into a number; a (B, 3) vs (B, 1) pair scored as if grey were RGB."""
    with pytest.raises(AssertionError):
        psnr(torch.rand(pred), torch.rand(target), None if mask is None else torch.ones(mask))
    with pytest.raises(AssertionError):
        specificity_change(torch.rand(pred), torch.rand(target), torch.ones(mask or (pred[0], 1, *pred[2:])))


def test_ssim_of_identical_images_is_1():
    image = torch.rand(2, 3, 24, 24)
    torch.testing.assert_close(ssim(image, image), torch.ones(2))


def test_ssim_of_two_constant_images_matches_the_formula():
    # Constant images: zero variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.2, 0.6, 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    got = ssim(torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b))
    torch.testing.assert_close(got, torch.tensor([expected], dtype=torch.float32))


def test_ssim_drops_with_noise():
    image = torch.rand(1, 3, 32, 32)
    assert ssim(image, (image + 0.2 * torch.randn_like(image)).clamp(0, 1)) < 0.9


def _pair(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random image and a noisy copy of it (float64), so SSIM lands far from both 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    return x, (x + 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)


def _torchmetrics_ssim(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchmetrics' (B,) SSIM and its (B, C, H, W) SSIM map, with our window, constants and data range."""
    return structural_similarity_index_measure(x, y, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0,
                                               k1=0.01, k2=0.03, reduction="none", return_full_image=True)


@pytest.mark.parametrize("shape", [(2, 3, 24, 24), (1, 1, 11, 11), (3, 3, 17, 40), (2, 1, 64, 33)])
@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_is_the_reference_ssim_map_averaged_over_the_valid_positions(shape, seed):
    x, y = _pair(shape, seed)
    _, ssim_map = _torchmetrics_ssim(x, y)  # (B, C, H, W), reflection-padded at the border
    valid = ssim_map[..., 5:-5, 5:-5]  # windows that lie inside the image
    torch.testing.assert_close(ssim(x, y), valid.mean(dim=(1, 2, 3)).float(), rtol=0, atol=1e-6)


def test_ssim_differs_from_torchmetrics_score_which_also_averages_the_padded_border():
    x, y = _pair((2, 3, 24, 24), 0)
    score, _ = _torchmetrics_ssim(x, y)
    assert (ssim(x, y).double() - score).abs().min() > 1e-3


@pytest.mark.parametrize(("n", "levels", "positive_rate"), [(1000, None, 0.3), (1000, 10, 0.3), (500, 3, 0.05),
                                                           (64, None, 0.9), (7, 2, 0.5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_the_reference_on_random_scores(n, levels, positive_rate, seed):
    """`levels` quantises the scores, so many pixels tie: each distinct score is one threshold, as in
    scikit-learn's average_precision_score (which torchmetrics' exact binary AP reproduces)."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(n, generator=g, dtype=torch.float64)
    if levels is not None:
        scores = (scores * levels).floor() / levels
    labels = (torch.rand(n, generator=g) < positive_rate).long()
    labels[0] = 1  # at least one positive: AP is undefined (NaN) otherwise
    expected = binary_average_precision(scores, labels, thresholds=None)
    assert average_precision(scores, labels) == pytest.approx(float(expected), abs=1e-6)  # torchmetrics: fp32


def test_mask_iou_cases():
    true = torch.zeros(4, 1, 4, 4)
    pred = torch.zeros(4, 1, 4, 4)
    true[0, :, :2] = 1
    pred[0, :, :2] = 0.9  # identical -> 1
    true[1, :, :2] = 1
    pred[1, :, 2:] = 0.9  # disjoint -> 0
    true[2, :, :2] = 1
    pred[2, :, 1:3] = 0.9  # 4 shared of 12 -> 1/3
    # image 3: both empty -> 1
    torch.testing.assert_close(mask_iou(pred, true), torch.tensor([1.0, 0.0, 1 / 3, 1.0]))


def test_average_precision_of_a_perfect_ranking_is_1():
    scores = torch.tensor([0.9, 0.8, 0.3, 0.1])
    labels = torch.tensor([1, 1, 0, 0])
    assert average_precision(scores, labels) == pytest.approx(1.0)


def test_average_precision_hand_computed():
    # Ranked: pos, neg, pos -> precisions at the positives 1 and 2/3; AP = (1 + 2/3) / 2.
    scores = torch.tensor([0.9, 0.5, 0.2])
    labels = torch.tensor([1, 0, 1])
    assert average_precision(scores, labels) == pytest.approx(5 / 6)


def test_average_precision_treats_tied_scores_as_one_threshold():
    # All tied: one threshold with precision 1/2 and recall 1.
    assert average_precision(torch.ones(4), torch.tensor([1, 0, 1, 0])) == pytest.approx(0.5)


def test_specificity_change_is_zero_when_unnamed_blemishes_are_untouched():
    source = torch.rand(1, 3, 8, 8)
    pred = source.clone()
    pred[..., :4, :] += 0.3  # the named blemish, edited
    kept = torch.zeros(1, 1, 8, 8)
    kept[..., 4:, :] = 1
    assert specificity_change(pred, source, kept).item() == 0
    pred[..., 4:, :] += 0.2
    assert specificity_change(pred, source, kept).item() == pytest.approx(0.2)


def test_lpips_is_unavailable_rather_than_downloaded_without_local_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert LPIPSMetric.try_load() is None
