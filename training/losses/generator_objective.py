"""Eq. 11's generator side: the loss terms of this package composed with a run's weights, one scalar to minimise.

Apart from the loop (`trainer.py`) so that it reads as steps, and beside the terms it composes. Which terms a
run has is `TrainConfig.loss_weights` (its ablation drops some); a term whose weight is 0, or whose target the
batch lacks (face regions outside the synthetic set), is not computed at all.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch

from langbrt.model import LangBRTOutput
from langbrt.training.losses import LossResources
from langbrt.training.losses.adversarial import generator_adversarial_loss
from langbrt.training.losses.consistency import consistency_loss
from langbrt.training.losses.detection import component_loss, detection_loss, per_prompt_detection_loss
from langbrt.training.train_config import TrainConfig


def generator_losses(cfg: TrainConfig, out: LangBRTOutput, batch: dict[str, Any], resources: LossResources,
                     discriminator: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 11's generator side: L_adv^G + L_cons - gamma L_local + eta (L_detc + L_comp), plus the
    per-prompt map loss where the synthetic set knows each prompt's exact mask. Off terms are skipped.
    Returns the total (a scalar) and each term by name, as the run log names them (loss/NAME).

    Always fp32, outside any autocast of the caller: BCE on probabilities is not autocast-safe (CUDA refuses
    it) and bf16 losses would round away the small differences the gradients come from.
    """
    out = LangBRTOutput(**{f.name: getattr(out, f.name).float() for f in fields(out)})
    with torch.autocast(out.image.device.type, enabled=False):
        return _generator_losses(cfg, out, batch, resources, discriminator)


def _generator_losses(cfg: TrainConfig, out: LangBRTOutput, batch: dict[str, Any], resources: LossResources,
                      discriminator: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    w, source, target = cfg.loss_weights(), batch["source"], batch["target"]
    exact = batch.get("removed_mask")  # (B, 1, H, W) for the synthetic set, else None
    loss, parts = consistency_loss(out.image, target, w, resources.perceptual)  # out.image, target: (B, 3, H, W)
    if w.detection > 0:
        parts["detection"] = detection_loss(out.soft_mask, source, target, exact_mask=exact,
                                             kind=cfg.detection_loss)
        loss = loss + w.detection * parts["detection"]
        if batch.get("prompt_masks") is not None:
            parts["prompt_maps"] = per_prompt_detection_loss(out.soft_maps, batch["prompt_masks"],
                                                             batch["prompt_valid"], kind=cfg.detection_loss)
            loss = loss + w.detection * parts["prompt_maps"]
    regions = batch.get("predefined_region_masks")  # (B, P, H, W); real pairs carry no face parsing
    if w.component > 0 and regions is not None:
        parts["component"] = component_loss(out.soft_mask, source, target, regions, exact_mask=exact,
                                            kind=cfg.detection_loss)
        loss = loss + w.component * parts["component"]
    if w.adversarial > 0:
        parts["adversarial_g"] = generator_adversarial_loss(discriminator(out.image))
        loss = loss + w.adversarial * parts["adversarial_g"]
    if w.semantic > 0:  # each prompt's region: the synthetic set's exact mask, else the model's own map
        masks = batch.get("prompt_masks", out.maps.detach())  # (B, K, H, W)
        valid = batch.get("prompt_valid", (out.maps.flatten(2).amax(-1) > 0).float())  # (B, K)
        parts["semantic"] = resources.semantic(out.image, masks, batch["prompts"], valid)
        loss = loss + w.semantic * parts["semantic"]
    return loss, parts
