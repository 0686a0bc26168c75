"""Evaluation of a LangBRT model over a paired or synthetic set, always beside the identity baseline.

The paper reports PSNR / SSIM / LPIPS over whole images (sec. 4.2). Blemishes cover a few percent of a face,
so a model that changes nothing already scores high on those; we therefore also report PSNR inside the
blemish regions, and every number again for the identity (output = input), so the margin is visible.
On the synthetic set, whose masks are exact, we add detection quality (IoU / pixel AP of the maps, overall
and per blemish type) and prompt specificity (how much the blemishes no prompt named were changed).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from langbrt.model import LangBRT
from langbrt.training.losses.detection import blemish_target
from langbrt.training.metrics import LPIPSMetric, average_precision, mask_iou, psnr, specificity_change, ssim

_AP_MAX_SIDE = 64  # maps are strided down to at most this side before pooling pixels for AP (memory)


@dataclass
class DetectionScores:
    iou: float  # mean per-image IoU of the map (> 0.5) with the exact mask
    ap: float  # pixel-level average precision of the soft map, pixels pooled over the set


@dataclass
class EvalResult:
    """Means over the evaluated images; None where a metric cannot be computed (LPIPS without weights)."""

    num_samples: int
    psnr: float
    ssim: float
    lpips: float | None
    psnr_blemish: float  # PSNR over the pixels the retoucher changed (synthetic: the named blemishes)
    identity_psnr: float
    identity_ssim: float
    identity_lpips: float | None
    identity_psnr_blemish: float
    specificity_change: float | None = None  # synthetic: mean |output - input| on unnamed blemishes
    identity_specificity_change: float | None = None  # always 0 for the identity: the ideal
    detection: DetectionScores | None = None  # synthetic, a model with TBD: combined map vs. the named blemishes
    detection_per_type: dict[str, DetectionScores] = field(default_factory=dict)  # per prompt's blemish type
    prompts: dict[str, int] | None = None  # real pairs: each prompt asked, with how many scored images asked it

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None (JSON has no NaN), nested dataclasses become dicts."""
        return finite_or_none(asdict(self))


def finite_or_none(value: Any) -> Any:
    """NaN/inf floats (also nested in dicts) -> None: JSON has no NaN, and an undefined metric is not 0."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _nanmean(values: list[torch.Tensor]) -> float:
    if not values:
        return float("nan")
    return float(torch.cat(values).double().nanmean())


def _stride(t: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> every s-th pixel, so pooled AP stays small at 512x512."""
    s = max(1, t.shape[-1] // _AP_MAX_SIDE)
    return t[..., ::s, ::s]


@torch.no_grad()
def evaluate(model: LangBRT, dataset: Dataset, collate: Any, batch_size: int = 8,
             device: str | torch.device = "cpu", lpips: LPIPSMetric | None = None,
             progress: Any = None) -> EvalResult:
    """Run `model` over `dataset` (batches from `collate_pairs` or `collate_synthetic`) and score it.

    `progress`, if given, is called with the number of images done after each batch (a progress bar).
    """
    model = model.to(device).eval()
    if lpips is not None:
        lpips = lpips.to(device)
    sums: dict[str, list[torch.Tensor]] = defaultdict(list)
    pooled: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = defaultdict(lambda: ([], []))
    asked: dict[str, int] = {}  # real pairs: prompt -> images asked it, in the order first met
    n = 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
        if batch is None:  # every pair of it failed to decode (each warned about once)
            continue
        source, target = batch["source"].to(device), batch["target"].to(device)  # (B, 3, H, W)
        out = model(source, batch["prompts"])
        synthetic = "removed_mask" in batch
        region = batch["removed_mask"].to(device) if synthetic else blemish_target(source, target)  # (B, 1, H, W)
        for prefix, image in (("", out.image), ("identity_", source)):
            sums[prefix + "psnr"].append(psnr(image, target))
            sums[prefix + "ssim"].append(ssim(image, target))
            sums[prefix + "psnr_blemish"].append(psnr(image, target, region))
            if lpips is not None:
                sums[prefix + "lpips"].append(lpips(image, target).float().cpu())
        if synthetic:
            sums["specificity_change"].append(specificity_change(out.image, source, batch["kept_mask"].to(device)))
            if model.tbd is not None:  # w/o TBD has no detector: its all-ones map is no detection to score
                sums["iou"].append(mask_iou(out.soft_mask, region))
                pooled["all"][0].append(_stride(out.soft_mask).flatten().cpu())
                pooled["all"][1].append(_stride(region).flatten().cpu())
                _per_prompt(out.soft_maps, batch, sums, pooled)
        else:  # which prompts a real pair answers is the user's choice (--prompt, prompts.json): say it
            for prompt in (p for image_prompts in batch["prompts"] for p in image_prompts):
                asked[prompt] = asked.get(prompt, 0) + 1
        n += source.shape[0]
        if progress is not None:
            progress(source.shape[0])
    result = _summarise(n, sums, pooled, lpips is not None)
    result.prompts = asked or None
    return result


def _per_prompt(soft_maps: torch.Tensor, batch: dict[str, Any], sums: dict[str, list[torch.Tensor]],
                pooled: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]]) -> None:
    """Score each prompt's map (B, K, H, W) against its exact mask, grouped by the blemish type it names."""
    masks = batch["prompt_masks"].to(soft_maps.device)  # (B, K, H, W)
    for b, specs in enumerate(batch["prompt_specs"]):
        for k, spec in enumerate(specs):
            kind = spec.kind.value
            pred, true = soft_maps[b, k][None, None], masks[b, k][None, None]  # (1, 1, H, W)
            sums[f"iou/{kind}"].append(mask_iou(pred, true))
            pooled[kind][0].append(_stride(pred).flatten().cpu())
            pooled[kind][1].append(_stride(true).flatten().cpu())


def _summarise(n: int, sums: dict[str, list[torch.Tensor]],
               pooled: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]], has_lpips: bool) -> EvalResult:
    def ap(key: str) -> float:
        scores, labels = pooled[key]
        return average_precision(torch.cat(scores), torch.cat(labels)) if scores else float("nan")

    synthetic = "specificity_change" in sums
    detected = "iou" in sums
    result = EvalResult(
        num_samples=n,
        psnr=_nanmean(sums["psnr"]),
        ssim=_nanmean(sums["ssim"]),
        lpips=_nanmean(sums["lpips"]) if has_lpips else None,
        psnr_blemish=_nanmean(sums["psnr_blemish"]),
        identity_psnr=_nanmean(sums["identity_psnr"]),
        identity_ssim=_nanmean(sums["identity_ssim"]),
        identity_lpips=_nanmean(sums["identity_lpips"]) if has_lpips else None,
        identity_psnr_blemish=_nanmean(sums["identity_psnr_blemish"]),
    )
    if synthetic:
        result.specificity_change = _nanmean(sums["specificity_change"])
        result.identity_specificity_change = 0.0
    if detected:
        result.detection = DetectionScores(iou=_nanmean(sums["iou"]), ap=ap("all"))
        kinds = sorted(k.split("/", 1)[1] for k in sums if k.startswith("iou/"))
        result.detection_per_type = {k: DetectionScores(iou=_nanmean(sums[f"iou/{k}"]), ap=ap(k)) for k in kinds}
    return result
