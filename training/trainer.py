"""The training loop of LangBRT (paper eq. 5-11), visible top to bottom in `_train`.

One step: generator forward -> eq. 11 generator loss (with the discriminator frozen) -> Adam step ->
discriminator step on (target, detached output) -> EMA update. Logging, sample grids, checkpoints and the
held-out validation (`--val`, `validation.py`) are a few explicit lines at named points of the loop.

Setting a run up (networks, data, OUTPUT claimed, a resume continued) is `run_setup.py`; checkpoints
(OUTPUT/checkpoints/step_000100/, OUTPUT/final/) and the EMA live in `train_state.py`; the errors
a stopped run ends with, and the resume advice in them, in `train_errors.py`; eq. 11's generator side, the loss
terms composed, in `losses/generator_objective.py`.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from langbrt.checkpoint import CHECKPOINTS_DIR, FINAL_DIR
from langbrt.model import LangBRTOutput
from langbrt.training.batches import batches
from langbrt.training.distributed import (
    DistInfo,
    all_ranks,
    all_reduce_mean,
    cleanup,
    fail_together,
    init_distributed,
    share_prompt_banks,
    warnings_of_rank_0,
    wrap_ddp,
)
from langbrt.training.finite_checks import checkpoint_is_finite, finite_output
from langbrt.training.losses import (
    discriminator_loss,
    generator_objective,  # called through it: the one place to replace it
    set_requires_grad,
)
from langbrt.training.run_lock import RunLock
from langbrt.training.run_log import RunLog
from langbrt.training.run_setup import TrainingRun, check_output, set_up
from langbrt.training.train_config import TrainConfig
from langbrt.training.train_errors import (
    RankLost,
    TrainingInterrupted,
    diverged,
    lost_after_the_end,
    rank_lost,
    run_output_written,
    stopped_message,
)
from langbrt.training.train_state import rng_state, save_checkpoint
from langbrt.training.validation import val_line, val_result, val_scalars, validate


@dataclass
class TrainResult:
    """What a finished run reports: where its shipped weights are, and the last loss and wall time to print."""

    final_dir: Path
    steps: int
    last_loss: float
    seconds: float
    peer_gone: bool = False  # under torchrun: another process ended after final/ was saved (warned about)


# --------------------------------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig, resume: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Run (or continue, from `resume`) training; returns where the final checkpoint went. The relative paths
    of `cfg` are taken from the current folder, which the run records as `workdir` (see `run_paths`)."""
    cfg.validate()
    cfg = replace(cfg, workdir=os.getcwd())
    output = Path(cfg.output)
    info = init_distributed(timeout_s=cfg.ddp_timeout)
    lock = RunLock(output)
    try:
        result = _train(cfg, output, info, Path(resume) if resume else None, progress, lock)
    except BaseException:
        cleanup(info)
        raise
    finally:
        lock.release()
    _close(info, result)
    return result


def _close(info: DistInfo, result: TrainResult) -> None:
    """Leave the process group of a finished run: every rank meets in the closing barrier first, unless a peer
    is known to be gone; one lost there is a warning, as the run is complete (`lost_after_the_end`)."""
    try:
        cleanup(info, finished=not result.peer_gone)
    except RuntimeError as err:
        warning = lost_after_the_end(err, result.final_dir) if info.enabled else None
        if warning is None:
            raise
        warnings.warn(warning, stacklevel=2)


def _train(cfg: TrainConfig, output: Path, info: DistInfo, resume: Path | None, progress: bool,
           lock: RunLock) -> TrainResult:
    """Set up, then the loop; `train` around it owns the process group and the run lock."""
    # ---- everything the user can get wrong fails here, before OUTPUT is created or written to, and on every
    # rank at once (`fail_together`). OUTPUT first, by rank 0 alone: a typo there costs no pass over the data.
    # Every rank reads the same flags and data, so their warnings are rank 0's to say.
    try:
        with fail_together(info):
            if info.is_main:
                check_output(cfg, output, resume)
        with fail_together(info), warnings_of_rank_0(info):
            run = set_up(cfg, output, info, resume, lock)
    except RuntimeError as err:  # a peer that died setting up (out of memory, killed): one line, as in the loop
        lost = _peer_lost(err, info, None, resume)
        if lost is None:
            raise
        raise lost from None
    gen, disc = wrap_ddp(run.model, info), wrap_ddp(run.discriminator, info)
    data = batches(run.dataset, run.collate, run.base, cfg, info, run.start)
    autocast = (torch.autocast(info.device.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
                else nullcontext())
    log = RunLog(output, enabled=info.is_main, resume_step=run.start if run.resumed else None)
    bar = _progress_bar(cfg.steps, run.start, enabled=progress and info.is_main)
    t0 = time.perf_counter()
    peer_gone = False
    try:
        for step in range(run.start, cfg.steps):
            # A data error (a corrupt image with --strict) on one rank stops every rank with it: alone, the others
            # met its exit in their next collective, and rank 0 printed gloo's traceback after the error line.
            with fail_together(info):
                batch = _to_device(next(data), info.device)
            out, loss, parts = _generator_step(run, gen, batch, autocast, step)
            if run.weights.adversarial > 0:
                parts["discriminator"] = _discriminator_step(run, disc, batch, out, autocast, step)
            if run.ema is not None:
                run.ema.update(run.model)
            run.done, run.last_loss = step + 1, loss
            bar.update(1)
            # ---- logging, samples, checkpoints: explicit points of the loop, rank 0 writes; a write that fails
            # stops every rank with its error (`fail_together`), none waits for rank 0 in the next step
            if _due(run.done, cfg.log_every, cfg.steps):
                _log_losses(run, parts, log, bar, t0)
            if _due(run.done, cfg.image_every, cfg.steps):
                with _all_ranks_write(info, run.last_ckpt):
                    if info.is_main:
                        log.image_grid(run.done, batch["source"], out.mask, out.image, batch["target"])
            if _due(run.done, cfg.checkpoint_every, cfg.steps):
                final = run.done == cfg.steps
                _save_checkpoint(run, output / (FINAL_DIR if final else f"{CHECKPOINTS_DIR}/step_{run.done:06d}"),
                                 batch)
            # ---- held-out validation: langbrt-eval's scores of the weights a checkpoint of this step ships;
            # each rank scores its share, rank 0 logs the set's; the run continues as if it had not
            if cfg.val is not None and _due(run.done, cfg.validation_every(), cfg.steps):
                _validate(run, log, bar)
    except KeyboardInterrupt:
        raise TrainingInterrupted(stopped_message(run.done, run.last_ckpt)) from None
    except RuntimeError as err:  # under torchrun, a peer that died mid-run: one line, not gloo's traceback
        lost = _peer_lost(err, info, run.done, run.last_ckpt)
        if lost is None:
            raise
        if run.last_ckpt != output / FINAL_DIR:
            raise lost from None
        warnings.warn(lost_after_the_end(err, run.last_ckpt), stacklevel=1)  # final/ is whole: only what followed it
        peer_gone = True
    finally:  # also on a diverged loss or a data error mid-run: flush the logs, stop the data workers
        data.close()
        bar.close()
        log.close()
    return TrainResult(output / FINAL_DIR, cfg.steps, run.last_loss, time.perf_counter() - t0, peer_gone)


def _peer_lost(err: RuntimeError, info: DistInfo, done: int | None, last_ckpt: Path | None) -> RankLost | None:
    """The `RankLost` line for `err` when it is a collective that failed because another process of the job is
    gone, else None (`err` is a bug). `done`: None while setting up."""
    return rank_lost(err, done, last_ckpt) if info.enabled else None


def _due(done: int, every: int, steps: int) -> bool:
    """Whether a periodic action (log, samples, checkpoint, validation) runs after step `done`: every `every`
    steps, and always after the last one."""
    return done % every == 0 or done == steps


# --------------------------------------------------------------------------------------------------- one step


def _generator_step(run: TrainingRun, gen: torch.nn.Module, batch: dict[str, Any], autocast: AbstractContextManager,
                    step: int) -> tuple[LangBRTOutput, float, dict[str, torch.Tensor]]:
    """Eq. 11, min over E, T, D: forward, loss with the discriminator frozen (and called unwrapped), Adam step.
    Returns the output, the loss averaged over ranks, and its terms. A non-finite loss on any rank stops every
    rank before the weights change."""
    set_requires_grad(run.discriminator, False)
    with autocast:
        out = gen(batch["source"], batch["prompts"])
    if finite_output(out):
        loss, parts = generator_objective.generator_losses(run.cfg, out, batch, run.resources,
                                                           run.discriminator)  # fp32, no autocast
    else:  # diverged inside the model: the same NaN loss on this rank, so every rank stops below
        loss, parts = torch.full((), float("nan"), device=run.info.device), {}
    loss_mean = all_reduce_mean(loss.detach(), run.info)
    if not torch.isfinite(loss_mean):
        raise diverged(f"loss became {float(loss_mean)} at step {step + 1}", run.last_ckpt)
    run.opt_g.zero_grad(set_to_none=True)
    loss.backward()
    if run.cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.opt_g.step()
    run.sched_g.step()
    return out, float(loss_mean), parts


def _discriminator_step(run: TrainingRun, disc: torch.nn.Module, batch: dict[str, Any], out: LangBRTOutput,
                        autocast: AbstractContextManager, step: int) -> torch.Tensor:
    """Eq. 8, max over S: the discriminator on the target vs. the detached output; returns its loss."""
    set_requires_grad(run.discriminator, True)
    with autocast:
        loss = discriminator_loss(disc(batch["target"]), disc(out.image.detach())).float()
    loss_mean = all_reduce_mean(loss.detach(), run.info)  # the line names it: this rank's own may be finite
    if not torch.isfinite(loss_mean):
        raise diverged(f"the discriminator loss became {float(loss_mean)} at step {step + 1}", run.last_ckpt)
    run.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    run.opt_d.step()
    run.sched_d.step()
    return loss


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ----------------------------------------------------------------------------------- named points of the loop


def _log_losses(run: TrainingRun, parts: dict[str, torch.Tensor], log: RunLog, bar: Any, t0: float) -> None:
    """The step's loss terms averaged over ranks, the learning rate and the speed: one log line, the bar's
    postfix."""
    info = run.info
    values = {f"loss/{k}": float(all_reduce_mean(v.detach().float().to(info.device), info))
              for k, v in sorted(parts.items())}
    values.update({"loss/total": run.last_loss, "lr": run.sched_g.get_last_lr()[0],
                   "it_per_s": (run.done - run.start) / (time.perf_counter() - t0)})
    with _all_ranks_write(info, run.last_ckpt):
        log.scalars(run.done, values)
    bar.set_postfix(loss=f"{run.last_loss:.4f}", lr=f"{values['lr']:.2e}")


def _save_checkpoint(run: TrainingRun, target_dir: Path, batch: dict[str, Any]) -> None:
    """Save the run to `target_dir` (rank 0) unless its weights went non-finite, which stops the run instead:
    a checkpoint is only ever one worth resuming from. It holds every prompt the job met, on any rank."""
    share_prompt_banks(run.model.prompt_bank, run.info)
    if not all_ranks(checkpoint_is_finite(run.model, run.ema, run.discriminator, batch), run.info):
        raise diverged(f"the weights after step {run.done} are non-finite or give a non-finite output",
                       run.last_ckpt)
    with _all_ranks_write(run.info, run.last_ckpt):  # also the barrier before last_ckpt moves on every rank
        if run.info.is_main:
            save_checkpoint(target_dir, run.model, run.ema, _trainer_state(run), run.cfg)
            # complete on disk: a Ctrl-C that lands in the barrier above (under torchrun, while the other ranks
            # catch up) names it, rather than "no checkpoint was written yet"
            run.last_ckpt = target_dir
    run.last_ckpt = target_dir


def _trainer_state(run: TrainingRun) -> dict[str, Any]:
    """What a resume needs beyond the weights `save_pretrained` writes (see `train_state.py`)."""
    return {"step": run.done, "opt_g": run.opt_g.state_dict(), "opt_d": run.opt_d.state_dict(),
            "sched_g": run.sched_g.state_dict(), "sched_d": run.sched_d.state_dict(),
            "discriminator": run.discriminator.state_dict(), "rng": rng_state(),
            "ema": run.ema.state_dict() if run.ema is not None else None,
            "data_order": {"seed": run.cfg.seed, "batch_size": run.cfg.batch_size,
                           "world_size": run.info.world_size, "step": run.done}}


def _validate(run: TrainingRun, log: RunLog, bar: Any) -> None:
    """Score the weights a checkpoint of this step ships on the held-out pairs (each rank its share), log and
    print them (rank 0)."""
    info = run.info
    with fail_together(info):
        mine = validate(run.model, run.ema, run.val, info)
    scores = val_result(mine, run.val, info)  # a collective: outside `fail_together`'s block
    with _all_ranks_write(info, run.last_ckpt):
        if info.is_main:
            if scores.num_samples:  # no pair decoded: NaN scores would only corrupt the log
                log.scalars(run.done, val_scalars(scores))
            bar.write(val_line(run.done, scores), file=sys.stderr)


@contextmanager
def _all_ranks_write(info: DistInfo, last_ckpt: Path | None) -> Iterator[None]:
    """Around one write of the run's output inside the loop (rank 0 writes, every rank enters): its error
    becomes `OutputNotWritten` (`run_output_written`) and stops every rank at once (`fail_together`)."""
    with fail_together(info), run_output_written(last_ckpt):
        yield


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
