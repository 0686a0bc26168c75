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
from collections.abc import Iterable
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


@dataclass
class BatchScores:
    """One batch's per-image scores, on the CPU: what `summarise` averages. Kept per batch so that a set scored
    in shares (a `torchrun` validation, each rank its own batches) is put back in the set's order and averaged
    exactly as one process averages it: the same tensors, concatenated in the same order."""

    n: int  # images in the batch
    values: dict[str, list[torch.Tensor]]  # metric -> its (B,) scores; per-prompt IoU: one (1,) per prompt
    pooled: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]]  # AP's (scores, labels) pixels, by type
    asked: list[str]  # real pairs: each image's prompts, in order


@torch.no_grad()
def evaluate(model: LangBRT, dataset: Dataset, collate: Any, batch_size: int = 8,
             device: str | torch.device = "cpu", lpips: LPIPSMetric | None = None,
             progress: Any = None) -> EvalResult:
    """Run `model` over `dataset` (batches from `collate_pairs` or `collate_synthetic`) and score it.

    `progress`, if given, is called with the number of images done after each batch (a progress bar).
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    return summarise(score_batches(model, loader, device, lpips, progress), lpips is not None)


@torch.no_grad()
def score_batches(model: LangBRT, batches: Iterable[dict[str, Any] | None], device: str | torch.device = "cpu",
                  lpips: LPIPSMetric | None = None, progress: Any = None) -> list[BatchScores]:
    """`model` (put in eval mode) scored on each batch, one entry each; a batch that is None (every pair of it
    failed to decode, each warned about once) scores no image."""
    model = model.to(device).eval()
    if lpips is not None:
        lpips = lpips.to(device)
    scored = []
    for batch in batches:
        scored.append(BatchScores(0, {}, {}, []) if batch is None else score_batch(model, batch, device, lpips))
        if progress is not None and scored[-1].n:
            progress(scored[-1].n)
    return scored


@torch.no_grad()
def score_batch(model: LangBRT, batch: dict[str, Any], device: str | torch.device,
                lpips: LPIPSMetric | None) -> BatchScores:
    """The per-image scores of `model` (in eval mode, on `device`) and of the identity on one batch."""
    source, target = batch["source"].to(device), batch["target"].to(device)  # (B, 3, H, W)
    out = model(source, batch["prompts"])
    synthetic = "removed_mask" in batch
    region = batch["removed_mask"].to(device) if synthetic else blemish_target(source, target)  # (B, 1, H, W)
    values: dict[str, list[torch.Tensor]] = defaultdict(list)
    pooled: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = defaultdict(lambda: ([], []))
    asked: list[str] = []
    for prefix, image in (("", out.image), ("identity_", source)):
        values[prefix + "psnr"].append(psnr(image, target).cpu())
        values[prefix + "ssim"].append(ssim(image, target).cpu())
        values[prefix + "psnr_blemish"].append(psnr(image, target, region).cpu())
        if lpips is not None:
            values[prefix + "lpips"].append(lpips(image, target).float().cpu())
    if synthetic:
        values["specificity_change"].append(specificity_change(out.image, source, batch["kept_mask"].to(device)).cpu())
        if model.tbd is not None:  # w/o TBD has no detector: its all-ones map is no detection to score
            values["iou"].append(mask_iou(out.soft_mask, region).cpu())
            pooled["all"][0].append(_stride(out.soft_mask).flatten().cpu())
            pooled["all"][1].append(_stride(region).flatten().cpu())
            _per_prompt(out.soft_maps, batch, values, pooled)
    else:  # which prompts a real pair answers is the user's choice (--prompt, prompts.json): say it
        asked = [p for image_prompts in batch["prompts"] for p in image_prompts]
    return BatchScores(source.shape[0], dict(values), dict(pooled), asked)  # plain dicts: they pickle


def _per_prompt(soft_maps: torch.Tensor, batch: dict[str, Any], values: dict[str, list[torch.Tensor]],
                pooled: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]]) -> None:
    """Score each prompt's map (B, K, H, W) against its exact mask, grouped by the blemish type it names."""
    masks = batch["prompt_masks"].to(soft_maps.device)  # (B, K, H, W)
    for b, specs in enumerate(batch["prompt_specs"]):
        for k, spec in enumerate(specs):
            kind = spec.kind.value
            pred, true = soft_maps[b, k][None, None], masks[b, k][None, None]  # (1, 1, H, W)
            values[f"iou/{kind}"].append(mask_iou(pred, true).cpu())
            pooled[kind][0].append(_stride(pred).flatten().cpu())
            pooled[kind][1].append(_stride(true).flatten().cpu())


def summarise(scored: list[BatchScores], has_lpips: bool) -> EvalResult:
    """The set's means (NaN-aware: an image whose metric is undefined is left out) and pooled APs, from its
    batches' scores in the set's order."""
    sums: dict[str, list[torch.Tensor]] = defaultdict(list)
    pooled: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = defaultdict(lambda: ([], []))
    asked: dict[str, int] = {}  # real pairs: prompt -> images asked it, in the order first met
    for batch in scored:
        for key, tensors in batch.values.items():
            sums[key].extend(tensors)
        for key, (scores, labels) in batch.pooled.items():
            pooled[key][0].extend(scores)
            pooled[key][1].extend(labels)
        for prompt in batch.asked:
            asked[prompt] = asked.get(prompt, 0) + 1
    result = _summarise(sum(batch.n for batch in scored), sums, pooled, has_lpips)
    result.prompts = asked or None
    return result


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
