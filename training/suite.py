"""The quality benchmark: several checkpoints and the classical floors scored side by side on the same samples.

`langbrt-eval --suite NAME=DIR ...` runs every named checkpoint and three baselines over one pass of the
synthetic test split, so all methods see the same images and prompts:

- identity: output = input (what every metric gives for doing nothing);
- bilateral-skin: two bilateral passes over the skin, the skin being the union of the sample's face-region
  masks (forehead, cheeks, under-eyes, nose, chin); a classical airbrush that ignores the prompts;
- inpaint-<first>: harmonic inpainting (`diffusion_inpaint`, standing in for OpenCV Telea) of the pixels where
  the FIRST checkpoint's combined map is > 0.5: that model's detector plus a classical fill, which isolates
  what the learned synthesis adds. Its detection scores are, by construction, the first model's.

Metrics are those of `evaluate.py`: PSNR / SSIM / LPIPS (None without offline weights) over the image, PSNR
over the named blemishes, mean |output - input| over the unnamed ones (specificity), and the IoU of the
combined map (> 0.5) with the named blemishes, overall and per blemish type of the prompts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from langbrt.errors import LangBRTInputError
from langbrt.json_dataclass import parse_json
from langbrt.model import LangBRT
from langbrt.training.baselines import bilateral_retouch, diffusion_inpaint
from langbrt.training.datasets import build_dataset
from langbrt.training.evaluate import finite_or_none
from langbrt.training.metrics import LPIPSMetric, mask_iou, psnr, specificity_change, ssim
from langbrt.training.train_config import TrainConfig

IDENTITY = "identity"
BILATERAL = "bilateral-skin"
INPAINT_PREFIX = "inpaint-"
INPAINT_ITERATIONS = 300
MAP_THRESHOLD = 0.5  # the same binarisation as the IoU metric
TABLE_COLUMNS = ("psnr", "psnr_blemish", "ssim", "lpips", "iou", "specificity_change")


@dataclass
class Prediction:
    """One method's output for a batch; maps are None for methods without a detector."""

    image: torch.Tensor  # (B, 3, H, W)
    soft_mask: torch.Tensor | None = None  # (B, 1, H, W) combined map
    soft_maps: torch.Tensor | None = None  # (B, K, H, W) one map per prompt


@dataclass
class MethodScores:
    """Means over the samples; None where undefined (LPIPS without weights, IoU of a method with no maps)."""

    psnr: float
    ssim: float
    lpips: float | None
    psnr_blemish: float  # over the named blemishes (the pixels the target changed)
    specificity_change: float  # mean |output - input| over the unnamed blemishes; 0 is ideal
    iou: float | None
    iou_per_type: dict[str, float] = field(default_factory=dict)  # keyed by the blemish type a prompt names


@dataclass
class SuiteResult:
    command: str
    date: str
    data: str
    split: str
    seed: int
    num_samples: int
    image_size: int
    checkpoints: dict[str, dict[str, Any]]  # name -> {"path": ..., "train_config": {...} or None}
    methods: dict[str, MethodScores]  # checkpoints first, in the order given, then the baselines
    notes: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None (JSON has no NaN)."""
        return finite_or_none(asdict(self))


def baseline_notes(first: str) -> dict[str, str]:
    return {
        IDENTITY: "output = input",
        BILATERAL: "2 bilateral passes (sigma_space 1.5 px, sigma_range 0.08) where the union of the sample's "
                   "face-region masks (the skin) is set; prompts ignored",
        INPAINT_PREFIX + first: f"harmonic inpainting ({INPAINT_ITERATIONS} Jacobi iterations, stands in for OpenCV "
                                f"Telea) where {first}'s combined map > {MAP_THRESHOLD}; detection = {first}'s",
    }


class _Scores:
    """Per-image metric values of one method, accumulated over batches."""

    def __init__(self) -> None:
        self.values: dict[str, list[torch.Tensor]] = defaultdict(list)

    def add(self, pred: Prediction, batch: dict[str, Any], lpips: LPIPSMetric | None) -> None:
        source, target = batch["source"], batch["target"]  # (B, 3, H, W)
        self.values["psnr"].append(psnr(pred.image, target))
        self.values["ssim"].append(ssim(pred.image, target))
        self.values["psnr_blemish"].append(psnr(pred.image, target, batch["removed_mask"]))
        self.values["specificity_change"].append(specificity_change(pred.image, source, batch["kept_mask"]))
        if lpips is not None:
            self.values["lpips"].append(lpips(pred.image, target).float().cpu())
        if pred.soft_mask is None or pred.soft_maps is None:
            return
        self.values["iou"].append(mask_iou(pred.soft_mask, batch["removed_mask"], MAP_THRESHOLD))
        masks = batch["prompt_masks"]  # (B, K, H, W)
        for b, specs in enumerate(batch["prompt_specs"]):
            for k, spec in enumerate(specs):
                iou = mask_iou(pred.soft_maps[b, k][None, None], masks[b, k][None, None], MAP_THRESHOLD)  # (1,)
                self.values[f"iou/{spec.kind.value}"].append(iou)

    def result(self) -> MethodScores:
        def mean(key: str) -> float | None:
            values = self.values.get(key)
            return float(torch.cat(values).double().nanmean()) if values else None

        kinds = sorted(key.split("/", 1)[1] for key in self.values if key.startswith("iou/"))
        return MethodScores(psnr=mean("psnr"), ssim=mean("ssim"), lpips=mean("lpips"),
                            psnr_blemish=mean("psnr_blemish"), specificity_change=mean("specificity_change"),
                            iou=mean("iou"), iou_per_type={kind: mean(f"iou/{kind}") for kind in kinds})


def skin_mask(batch: dict[str, Any]) -> torch.Tensor:
    """(B, 1, H, W): the union of the sample's face-region masks, the bilateral baseline's skin."""
    return batch["region_masks"].amax(dim=1, keepdim=True)


@torch.no_grad()
def run_suite(models: dict[str, LangBRT], dataset: Dataset, collate: Any, batch_size: int = 8,
              device: str | torch.device = "cpu", lpips: LPIPSMetric | None = None,
              progress: Any = None) -> dict[str, MethodScores]:
    """Score every model and the baselines on `dataset` (synthetic batches) in one pass.

    Returns method name -> scores: the models in the order given, then identity, bilateral-skin and
    inpaint-<first model>.
    """
    if not models:
        raise LangBRTInputError("give at least one checkpoint: --suite NAME=DIR")
    first = next(iter(models))
    if models[first].tbd is None:
        raise LangBRTInputError(f"--suite {first}=... is a model without TBD (--ablation no-tbd): the first checkpoint "
                                "gives the inpainting baseline its maps; list a model with a detector first")
    for model in models.values():
        model.to(device).eval()
    if lpips is not None:
        lpips = lpips.to(device)
    scores: dict[str, _Scores] = defaultdict(_Scores)
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
        if "region_masks" not in batch:
            raise LangBRTInputError("--suite needs --data synthetic: its baselines use the exact masks")
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        source = batch["source"]  # (B, 3, H, W)
        preds: dict[str, Prediction] = {}
        for name, model in models.items():
            out = model(source, batch["prompts"])
            # w/o TBD has no detector: its all-ones "map" is no detection to score (it gave IoU = blemish share)
            preds[name] = (Prediction(out.image, out.soft_mask, out.soft_maps) if model.tbd is not None
                           else Prediction(out.image))
        preds[IDENTITY] = Prediction(source)
        preds[BILATERAL] = Prediction(bilateral_retouch(source, skin_mask(batch)))
        hole = (preds[first].soft_mask > MAP_THRESHOLD).float()  # (B, 1, H, W)
        preds[INPAINT_PREFIX + first] = Prediction(diffusion_inpaint(source, hole, INPAINT_ITERATIONS),
                                                   preds[first].soft_mask, preds[first].soft_maps)
        for name, pred in preds.items():
            scores[name].add(pred, batch, lpips)
        if progress is not None:
            progress(source.shape[0])
    return {name: acc.result() for name, acc in scores.items()}


def evaluate_suite(checkpoints: dict[str, str], split: str = "test", num_samples: int = 128, batch_size: int = 8,
                   seed: int = 0, device: str = "cpu", command: str = "", progress: Any = None) -> SuiteResult:
    """Load each checkpoint (same image size), build `num_samples` synthetic samples and score everything."""
    if num_samples < 1 or batch_size < 1:
        raise LangBRTInputError("--suite needs --num-samples >= 1 and --batch-size >= 1")
    models = {name: LangBRT.from_pretrained(path) for name, path in checkpoints.items()}
    infos = {name: checkpoint_info(path) for name, path in checkpoints.items()}  # read before the long run
    sizes = {name: model.config.image_size for name, model in models.items()}
    if len(set(sizes.values())) != 1:
        raise LangBRTInputError(f"--suite checkpoints must share one image size, got {sizes}")
    image_size = next(iter(sizes.values()))
    cfg = TrainConfig(data="synthetic", seed=seed, flip=False)
    dataset, collate, _ = build_dataset(cfg, image_size, split=split, length=num_samples)
    methods = run_suite(models, dataset, collate, batch_size=batch_size, device=device,
                        lpips=LPIPSMetric.try_load(), progress=progress)
    first = next(iter(checkpoints))
    notes = {name: "checkpoint" for name in checkpoints} | baseline_notes(first)
    if methods[first].lpips is None:
        notes["lpips"] = "not available offline (lpips package or its torchvision backbone missing)"
    return SuiteResult(command=command, date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       data="synthetic", split=split, seed=seed, num_samples=len(dataset), image_size=image_size,
                       checkpoints=infos,
                       methods=methods, notes=notes)


def parse_suite_specs(specs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """['NAME=DIR', ...] -> {NAME: DIR}, in order; one clear error for a malformed or repeated name."""
    checkpoints: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise LangBRTInputError(f"--suite takes NAME=DIR (a checkpoint folder), got {spec!r}")
        if name in checkpoints or name in (IDENTITY, BILATERAL) or name.startswith(INPAINT_PREFIX):
            raise LangBRTInputError(f"--suite name {name!r} is repeated or taken by a baseline; pick another")
        checkpoints[name] = path
    return checkpoints


def checkpoint_info(directory: str | Path) -> dict[str, Any]:
    """Where a checkpoint lives and, when its run folder has one, the training config that made it (as written,
    not checked: it is recorded, not used); an unreadable one is one `LangBRTInputError` line naming it."""
    directory = Path(directory)
    for candidate in (directory / "train_config.json", directory.parent / "train_config.json"):
        if candidate.is_file():
            try:
                text = candidate.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise LangBRTInputError(f"{candidate}: unreadable train config ({err})") from None
            return {"path": str(directory),
                    "train_config": parse_json(text, f"{candidate}: unreadable train config", LangBRTInputError)}
    return {"path": str(directory), "train_config": None}


def format_suite_table(result: SuiteResult) -> str:
    """Rows = methods, columns = TABLE_COLUMNS; then IoU per blemish type for the methods with maps."""
    def cell(value: float | None, digits: int) -> str:
        return "n/a" if value is None or value != value else f"{value:.{digits}f}"

    digits = {"psnr": 2, "psnr_blemish": 2, "ssim": 4, "lpips": 4, "iou": 3, "specificity_change": 4}
    width = max(len(name) for name in result.methods) + 2
    cols = {col: max(len(col), 6) + 2 for col in TABLE_COLUMNS}
    lines = [f"{result.num_samples} samples, {result.data} {result.split} split, {result.image_size} px",
             f"{'method':<{width}}" + "".join(f"{col:>{cols[col]}}" for col in TABLE_COLUMNS)]
    for name, scores in result.methods.items():
        lines.append(f"{name:<{width}}" + "".join(f"{cell(getattr(scores, col), digits[col]):>{cols[col]}}"
                                                  for col in TABLE_COLUMNS))
    kinds = sorted({kind for scores in result.methods.values() for kind in scores.iou_per_type})
    if kinds:
        lines += ["", "IoU per blemish type (prompt maps > 0.5 vs. exact masks)",
                  f"{'method':<{width}}" + "".join(f"{kind[:17]:>18}" for kind in kinds)]
        for name, scores in result.methods.items():
            if scores.iou_per_type:
                lines.append(f"{name:<{width}}" + "".join(f"{cell(scores.iou_per_type.get(k), 3):>18}"
                                                          for k in kinds))
    return "\n".join(lines)
