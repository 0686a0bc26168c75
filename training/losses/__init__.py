"""The training objective of LangBRT (paper eq. 5-11), one file per term; `generator_objective` composes them
into eq. 11's generator side (import it from there: it reads a `TrainConfig`, whose module imports this package).

`require_loss_weights` runs before training: a term that needs pretrained weights (VGG-19 for eq. 9,
Alpha-CLIP + CLIP text for eq. 10) either gets them from a local file or stops the run with one line naming
the flag to supply them or to switch the term off. Nothing is ever downloaded.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from langbrt.errors import LangBRTInputError

from .adversarial import discriminator_loss, generator_adversarial_loss, set_requires_grad
from .consistency import consistency_loss
from .detection import blemish_target, component_loss, detection_loss, per_prompt_detection_loss
from .perceptual import VGG19_FILENAME, VGGPerceptual, find_vgg19_weights
from .semantic import AlphaClipVisual, SemanticLoss
from .weights import LossWeights

DEFAULT_CLIP_ARCH = "ViT-B-16-quickgelu"  # Alpha-CLIP B/16 and its OpenAI CLIP text tower


@dataclass
class LossResources:
    """Pretrained modules the active loss terms need; None where the term is off."""

    perceptual: VGGPerceptual | None = None
    semantic: SemanticLoss | None = None

    def to(self, device: torch.device) -> "LossResources":
        """Move the loaded networks to the training device (they load on the CPU, where their files are read)."""
        for module in (self.perceptual, self.semantic):
            if module is not None:
                module.to(device)
        return self


def require_loss_weights(
    weights: LossWeights,
    vgg_path: str | None,
    alpha_clip_visual: str | None,
    clip_text_weights: str | None,
    clip_arch: str = DEFAULT_CLIP_ARCH,
) -> LossResources:
    """Check every needed file exists (all checks before any loading, so a run fails in seconds), then load.

    `clip_arch` is the open_clip architecture of both Alpha-CLIP towers (QuickGELU for OpenAI-derived weights).
    """
    from langbrt.text.open_clip_backend import OpenClipTextEncoder

    vgg_file = _vgg_file(vgg_path) if weights.perceptual > 0 else None
    if weights.semantic > 0:
        _require_file(alpha_clip_visual, "Alpha-CLIP image tower", "--alpha-clip-weights",
                      "e.g. clip_b16_grit1m_fultune_8xe.pth", "--semantic-weight")
        _require_file(clip_text_weights, "CLIP text tower paired with Alpha-CLIP", "--clip-text-weights",
                      "e.g. OpenAI's ViT-B-16.pt", "--semantic-weight")
    resources = LossResources()
    if vgg_file is not None:
        resources.perceptual = VGGPerceptual.from_file(vgg_file)
    if weights.semantic > 0:
        visual = AlphaClipVisual.from_files(clip_arch, alpha_clip_visual)
        text = OpenClipTextEncoder(clip_arch, clip_text_weights).load()
        resources.semantic = SemanticLoss(visual, text)
    return resources


def _vgg_file(vgg_path: str | None) -> Path:
    if vgg_path is None:
        cached = find_vgg19_weights()
        if cached is not None:
            return cached
    _require_file(vgg_path, "VGG-19 weights (perceptual loss, eq. 9)", "--vgg-weights",
                  f"torchvision's {VGG19_FILENAME}", "--perceptual-weight")
    return Path(vgg_path)


def _require_file(path: str | None, what: str, flag: str, example: str, off_flag: str) -> None:
    if path is None:
        raise LangBRTInputError(f"no {what} file given: pass {flag} PATH ({example}) or turn the term off "
                                f"with {off_flag} 0")
    if not Path(path).is_file():
        raise LangBRTInputError(f"{what} file not found: {path}; pass {flag} PATH ({example}) or turn the term "
                                f"off with {off_flag} 0")


__all__ = [
    "DEFAULT_CLIP_ARCH",
    "AlphaClipVisual",
    "LossResources",
    "LossWeights",
    "SemanticLoss",
    "VGGPerceptual",
    "blemish_target",
    "component_loss",
    "consistency_loss",
    "detection_loss",
    "discriminator_loss",
    "find_vgg19_weights",
    "generator_adversarial_loss",
    "per_prompt_detection_loss",
    "require_loss_weights",
    "set_requires_grad",
]
