"""Evaluation metrics: the paper's PSNR / SSIM / LPIPS (sec. 4.2, data range 1), plus what language-guided
removal adds: PSNR inside blemish regions, detection quality (mask IoU, pixel AP) and specificity (did the
model leave alone the blemishes the prompt did not name).

Per-image metrics return (B,) tensors so callers can average over a dataset however they report. A metric
that is undefined for an image (an empty region) is NaN, never a made-up number: use `nanmean`.
"""

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

_MSE_FLOOR = 1e-10  # identical images: PSNR 100 dB instead of inf
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_C1 = 0.01**2  # (K1 * L)^2 with L = 1
_SSIM_C2 = 0.03**2  # (K2 * L)^2
# torchvision backbone files lpips needs, under the names the torch hub cache keeps them.
_LPIPS_BACKBONES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB per image, data range 1. With `mask` (B, 1, H, W), only pixels where mask > 0.5 count
    ("PSNR in blemish regions"); an image whose mask is empty gets NaN. Shapes must match exactly: broadcasting
    scored an RGB output against a grey target, or every image against the first one's mask, without a word."""
    _check_shapes(pred, target, mask)
    squared = (pred - target).double().pow(2)  # (B, C, H, W)
    if mask is None:
        mse = squared.mean(dim=(1, 2, 3))  # (B,)
    else:
        inside = (mask > 0.5).expand_as(squared).double()  # (B, C, H, W)
        count = inside.sum(dim=(1, 2, 3))  # (B,)
        mse = (squared * inside).sum(dim=(1, 2, 3)) / count.clamp_min(1.0)  # (B,)
        mse = torch.where(count > 0, mse, torch.full_like(mse, float("nan")))
    return (-10.0 * torch.log10(mse.clamp_min(_MSE_FLOOR))).float()


def _check_shapes(image: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor | None) -> None:
    """Assert (B, C, H, W) images of one shape and a (B, 1, H, W) mask, the values in the message."""
    assert image.dim() == 4 and image.shape == reference.shape, (image.shape, reference.shape)
    if mask is not None:
        assert mask.shape == (image.shape[0], 1, *image.shape[2:]), (mask.shape, image.shape)


def _gaussian_taps(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(11,) normalised gaussian (sigma 1.5): the 11x11 window is its outer product with itself."""
    coords = torch.arange(_SSIM_WINDOW, dtype=dtype, device=device) - (_SSIM_WINDOW - 1) / 2
    g = torch.exp(-(coords**2) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per image (Wang et al. 2004): 11x11 gaussian window, sigma 1.5, K1 0.01, K2 0.03, data range 1,
    population statistics, the SSIM map averaged over the valid positions (windows inside the image) and the
    channels. That is the authors' reference code ('valid' filtering) and skimage's `structural_similarity(
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`.

    torchmetrics computes the same map but also averages the border positions, whose windows it fills by
    reflection padding, so its score differs (by about 0.01 on a 24x24 image, less on large ones); a test
    pins ours to torchmetrics' map over the valid positions. We keep the reference's definition: padding
    scores pixels that are not in the image."""
    assert pred.shape == target.shape and min(pred.shape[-2:]) >= _SSIM_WINDOW, (pred.shape, target.shape)
    x, y = pred.double(), target.double()
    # The five blurred maps in one depthwise conv, and the gaussian as two 1-D passes (it is separable): the
    # same sums to float64 rounding, 5x less CPU at 512x512 than one 11x11 pass per map.
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5C, H, W)
    groups = stacked.shape[1]
    taps = _gaussian_taps(x.dtype, x.device)
    blurred = F.conv2d(stacked, taps.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)  # (B, 5C, H-10, W)
    blurred = F.conv2d(blurred, taps.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)  # (B, 5C, H-10, W-10)
    mu_x, mu_y, blur_xx, blur_yy, blur_xy = blurred.chunk(5, dim=1)  # each (B, C, H-10, W-10)
    var_x = blur_xx - mu_x**2
    var_y = blur_yy - mu_y**2
    cov = blur_xy - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + _SSIM_C1) * (2 * cov + _SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + _SSIM_C1) * (var_x + var_y + _SSIM_C2)
    return (numerator / denominator).mean(dim=(1, 2, 3)).float()  # (B,)


class LPIPSMetric:
    """LPIPS (Zhang et al. 2018) through the `lpips` package, only where it can run offline.

    `lpips` ships its linear heads but fetches the torchvision backbone on first use; we never download, so
    `try_load` returns None unless the package is installed and the backbone is already in the torch hub
    cache. Evaluation then reports LPIPS as unavailable (null), never as 0.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval().requires_grad_(False)

    @classmethod
    def try_load(cls, net: str = "alex") -> "LPIPSMetric | None":
        assert net in _LPIPS_BACKBONES, f"unknown LPIPS backbone {net!r}; known: {list(_LPIPS_BACKBONES)}"
        if importlib.util.find_spec("lpips") is None:
            return None
        if not (Path(torch.hub.get_dir()) / "checkpoints" / _LPIPS_BACKBONES[net]).is_file():
            return None
        import lpips

        return cls(lpips.LPIPS(net=net, verbose=False))

    def to(self, device: torch.device | str) -> "LPIPSMetric":
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B,) distances (lpips expects [-1, 1])."""
        return self.model(pred * 2 - 1, target * 2 - 1).flatten()  # (B,)


def mask_iou(pred_mask: torch.Tensor, true_mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """IoU per image of the predicted map binarised at `threshold` and the true mask (> 0.5); an image where
    both are empty scores 1 (the model correctly found nothing)."""
    pred = (pred_mask > threshold).flatten(1)  # (B, N)
    true = (true_mask > 0.5).flatten(1)  # (B, N)
    inter = (pred & true).sum(dim=1).double()  # (B,)
    union = (pred | true).sum(dim=1).double()  # (B,)
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union)).float()


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Pixel-level average precision of detection scores against binary labels (> 0.5), the step-wise
    sum over thresholds of (R_n - R_{n-1}) * P_n as scikit-learn defines it (tied scores form one threshold).
    NaN when there is no positive pixel."""
    s = scores.detach().flatten().double()
    y = (labels.detach().flatten() > 0.5).double()
    positives = y.sum()
    if positives == 0:
        return float("nan")
    s, order = torch.sort(s, descending=True)
    y = y[order]
    tp = torch.cumsum(y, 0)  # (N,)
    fp = torch.cumsum(1 - y, 0)  # (N,)
    last_of_tie = torch.ones_like(s, dtype=torch.bool)
    last_of_tie[:-1] = s[1:] != s[:-1]  # keep one point per distinct threshold
    tp, fp = tp[last_of_tie], fp[last_of_tie]  # (T,)
    precision = tp / (tp + fp)
    recall = tp / positives
    recall_step = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((recall_step * precision).sum())


def specificity_change(pred: torch.Tensor, source: torch.Tensor, kept_mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute change (data range 1) of the output vs. the input inside blemishes the prompt did NOT name
    (kept_mask (B, 1, H, W) > 0.5): 0 means they were left untouched, as asked. NaN where the mask is empty."""
    _check_shapes(pred, source, kept_mask)
    change = (pred - source).abs().double().mean(dim=1, keepdim=True)  # (B, 1, H, W)
    inside = (kept_mask > 0.5).double()  # (B, 1, H, W)
    count = inside.sum(dim=(1, 2, 3))  # (B,)
    mean = (change * inside).sum(dim=(1, 2, 3)) / count.clamp_min(1.0)
    return torch.where(count > 0, mean, torch.full_like(mean, float("nan"))).float()
