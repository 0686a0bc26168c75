"""The guards that stop a diverged run before a non-finite value reaches a loss or a checkpoint.

Apart from the loop so that `trainer.py` reads as its steps; what the run says when a guard trips is
`train_errors.diverged`.
"""

from __future__ import annotations

from typing import Any

import torch

from langbrt.model import LangBRT, LangBRTOutput
from langbrt.training.train_state import EMA, shipped_weights


def finite_output(out: LangBRTOutput) -> bool:
    """Whether every map and image of a forward pass is finite: a NaN map must not reach the BCE, which
    rejects it with an exception (a device-side assert on CUDA) before the loss guard could see it."""
    return bool(torch.stack([torch.isfinite(t).all() for t in (out.image, out.soft_mask, out.soft_maps)]).all())


@torch.no_grad()
def checkpoint_is_finite(model: LangBRT, ema: EMA | None, discriminator: torch.nn.Module,
                         batch: dict[str, Any]) -> bool:
    """Whether a checkpoint of this state is worth saving: every weight (raw, EMA, discriminator) finite, and
    the weights it ships give a finite output on this step's first image. Finite weights are not enough: one
    Adam step at --lr 1e30 leaves weights near 1e30, every one finite, whose first forward pass is NaN."""
    tensors = [*model.state_dict().values(), *discriminator.state_dict().values(),
               *(ema.shadow.values() if ema is not None else ())]
    if not all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point()):
        return False
    with shipped_weights(model, ema):
        model.eval()
        try:
            return finite_output(model(batch["source"][:1], batch["prompts"][:1]))
        finally:
            model.train()
