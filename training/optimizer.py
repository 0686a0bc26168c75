"""Adam with the learning-rate schedule of a run: linear warmup, then cosine decay to `--min-lr`.

Its own module so that the schedule can be read (and tested) apart from the loop, and so that a resume
follows this run's flags in one place (`follow_config`).
"""

from __future__ import annotations

import math

import torch

from langbrt.training.train_config import TrainConfig


def build_optimizer(module: torch.nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Adam,
                                                                        torch.optim.lr_scheduler.LambdaLR]:
    """Adam on `module`'s parameters at `cfg.lr` and `cfg.betas`, and the scheduler that steps `lr_factor`."""
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, betas=cfg.betas)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of `cfg.lr` after `step` optimizer steps: linear warmup, then cosine decay to `min_lr`."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def follow_config(sched: torch.optim.lr_scheduler.LambdaLR, cfg: TrainConfig) -> None:
    """After loading a checkpoint's scheduler: its base rate becomes `cfg.lr` and the current rate the schedule
    of this run's `--lr/--min-lr/--steps` at the resumed step.

    Why: the loaded state carries the old base rate, so `--resume ... --lr 1e-4` (what the divergence message
    advises) trained on at the old rate. With the flags unchanged the rate is the same float as before.
    """
    sched.base_lrs = [cfg.lr] * len(sched.base_lrs)
    for group in sched.optimizer.param_groups:
        group["initial_lr"] = cfg.lr
        group["lr"] = cfg.lr * lr_factor(sched.last_epoch, cfg)
