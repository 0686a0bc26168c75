"""What a training run saves and resumes from: checkpoint folders, the trainer state, the EMA of the weights.

Checkpoint contract (OUTPUT/checkpoints/step_000100/, and OUTPUT/final/ at the end):
  model.safetensors + prompt_bank.safetensors + config.json  written by `LangBRT.save_pretrained`; the
      weights are the EMA weights (what one evaluates and ships; the raw weights when --ema-decay 0),
  trainer_state.pt   raw generator weights, discriminator, both optimizers and schedulers, EMA shadow, step,
      RNG states (torch, numpy, python) and the data order (sampler seed, epoch, batch in epoch),
  train_config.json  the run's `TrainConfig`.
A checkpoint folder is built under a hidden name and renamed into place, so it is complete or absent.
"""

from __future__ import annotations

import io
import os
import random
import re
import shlex
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langbrt.atomic import atomic_folder, atomic_path
from langbrt.checkpoint import (
    CHECKPOINTS_DIR,
    FINAL_DIR,
    WRITE_ERRORS,
    weights_mismatch,
    write_checkpoint_files,
    write_failure,
)
from langbrt.errors import CheckpointError, LangBRTInputError, OutputWriteError
from langbrt.model import LangBRT
from langbrt.orphan_cleanup import remove_leftovers_of_locked_folder
from langbrt.output_paths import check_name_lengths, overlap, refuse_dangling_link
from langbrt.training.distributed import DistInfo
from langbrt.training.run_lock import RunLock
from langbrt.training.run_log import JSONL_FILE, SAMPLES_DIR
from langbrt.training.train_config import TrainConfig

STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "train_config.json"
STEP_NAME = r"step_\d{6,}"  # checkpoints/step_000100, samples/step_000100.png


class EMA:
    """Exponential moving average of the generator's weights, decay warmed up as min(d, (1+n)/(10+n)).

    The warmup keeps early checkpoints of short runs from being dominated by the random initialisation.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                self.shadow[name].mul_(d).add_(value.detach(), alpha=1.0 - d)
            else:
                self.shadow[name].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Shadow and update count from a checkpoint; the decay stays this run's (`--ema-decay` on resume)."""
        self.updates = state["updates"]
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)


@contextmanager
def shipped_weights(model: LangBRT, ema: EMA | None) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block `model` holds the weights a checkpoint ships (the EMA's, or the raw ones without EMA);
    yields a copy of the raw weights, which are back in `model` afterwards."""
    raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if ema is not None:
        model.load_state_dict(ema.shadow)
    try:
        yield raw
    finally:
        model.load_state_dict(raw)


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values only, so `torch.load(weights_only=True)` can read them."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's GPU only: a resume may see fewer GPUs
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved, so a resumed run draws the same numbers."""
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if isinstance(cuda, list | tuple):  # checkpoints before 2026-11-26 hold one state per visible GPU
            cuda = cuda[min(torch.cuda.current_device(), len(cuda) - 1)]
        torch.cuda.set_rng_state(cuda)


def save_checkpoint(directory: Path, model: LangBRT, ema: EMA | None, state: dict[str, Any],
                    cfg: TrainConfig) -> Path:
    """Write a complete checkpoint folder (see module docstring) under a temporary name, then rename it into
    place with `atomic_folder`: the previous folder of that name stays whole until the new one is complete.
    A failure (a full disk) is one `OutputWriteError` line naming `directory`, not the hidden staging folder."""
    try:
        with atomic_folder(directory) as tmp:
            with shipped_weights(model, ema) as raw:
                write_checkpoint_files(model, tmp)  # EMA weights: what gets evaluated and shipped
            # Serialised in memory first: torch.save reports a full disk as "enforce fail at inline_container.cc",
            # a plain write as "No space left on device".
            buffer = io.BytesIO()
            torch.save({**state, "model_raw": raw}, buffer)
            (tmp / STATE_FILE).write_bytes(buffer.getbuffer())
            (tmp / CONFIG_FILE).write_text(cfg.to_json(), encoding="utf-8")
    except WRITE_ERRORS as err:
        raise OutputWriteError(f"cannot write checkpoint {directory}: {write_failure(err)}") from None
    return directory


def load_trainer_state(directory: Path) -> dict[str, Any]:
    """The `trainer_state.pt` of a checkpoint folder (tensors and plain values only), or one clear error."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise LangBRTInputError(f"{directory}: cannot resume, no {STATE_FILE} (pass a checkpoint folder "
                                f"such as OUTPUT/checkpoints/step_001000)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged pickle can raise almost anything; the user needs the file name
        raise LangBRTInputError(f"{path}: unreadable trainer state ({type(err).__name__}: {err})") from None
    _check_trainer_state(path, state)
    return state


# What every trainer_state.pt holds (`ema` and `data_order` may be absent or None), with the type each must have.
_STATE_ENTRIES = {"step": int, "model_raw": dict, "discriminator": dict, "opt_g": dict, "opt_d": dict,
                  "sched_g": dict, "sched_d": dict, "rng": dict}


def _check_trainer_state(path: Path, state: object) -> None:
    """One line for a file torch reads that is not a trainer state `save_checkpoint` wrote (another tool's file
    under that name): its missing entry was a KeyError or TypeError traceback halfway through the resume."""
    if not isinstance(state, dict):
        wrong = f"it holds a {type(state).__name__}"
    else:
        bad = [key for key, kind in _STATE_ENTRIES.items() if not isinstance(state.get(key), kind)]
        wrong = (f"no valid {', '.join(bad)}" if bad else
                 f"step {state['step']} is negative" if state["step"] < 0 else "")
    if wrong:
        raise LangBRTInputError(f"{path}: not a trainer state langbrt-train saved ({wrong}); keep trainer_state.pt "
                                "with the weights of the same run")


def check_resume(cfg: TrainConfig, checkpoint: Path, state: dict[str, Any]) -> None:
    """Refuse, before anything is written, a resume that cannot do what the flags say: no steps left to train,
    or a model setting (`MODEL_FIELDS`) other than the checkpoint's, which the loaded weights would contradict."""
    step = state["step"]
    if step >= cfg.steps:
        raise LangBRTInputError(f"checkpoint {checkpoint} is at step {step}; pass --steps above {step} to train "
                                "further")
    saved = TrainConfig.from_json(Path(checkpoint) / CONFIG_FILE).model_settings()
    for name, value in cfg.model_settings().items():
        if value != saved[name]:
            raise LangBRTInputError(f"--{name.replace('_', '-')} {value} differs from the checkpoint's {saved[name]}: "
                                    "a resumed run keeps the model it was trained with; drop the flag, or start a "
                                    "new run without --resume")


def load_matching(module: torch.nn.Module, weights: dict[str, torch.Tensor], what: str, path: Path) -> None:
    """`module.load_state_dict(weights)`, or one line saying the saved weights belong to another model."""
    mismatch = weights_mismatch(module, weights)
    if mismatch:
        raise CheckpointError(f"{Path(path) / STATE_FILE}: the {what} do not fit the checkpoint's model "
                              f"({mismatch}); keep trainer_state.pt with the weights of the same run")
    module.load_state_dict(weights)


def check_run_folder(output: Path, inputs: Sequence[str | Path] = (), *, resume: Path | None = None) -> None:
    """Refuse, without creating anything, an OUTPUT that `prepare_output` could not create or write: a file,
    or a folder whose nearest existing ancestor is a file or not writable; or one that is, or lies inside, an
    input folder (the checkpoint resumed from, a data folder), which the run would write into; or a folder
    a live run is writing to right now (`RunLock`); or a folder that already holds a run other than the one
    `resume` continues (a new run's, or one resumed from a
    checkpoint outside OUTPUT). Runs before the (possibly long) data checks, so a typo in --output does not
    cost a pass over the data set.

    Why the last: a new run in an old run's folder appended its log to the old one's (step 1, 2, ... twice in
    log.jsonl and TensorBoard) and left the old run's checkpoints and samples beside its own, the old
    checkpoints/step_N of later steps looking like the newest; resumed from another run's checkpoint, it cut
    OUTPUT's log back to that checkpoint's step and wrote the other run's steps into it (QA, 2026-11-26)."""
    check_name_lengths(output, "--output")
    refuse_dangling_link(output, "--output")
    resolved = Path(output).resolve()
    for given in inputs:
        where = overlap(resolved, given) if Path(given).is_dir() else None
        if where:
            raise LangBRTInputError(f"--output {output} {where} the input {given}; a run writes checkpoints, logs "
                                    "and samples there: choose another folder")
    RunLock(Path(output)).check_free()
    if resume is None or not Path(resume).resolve().is_relative_to(resolved):
        _refuse_a_folder_holding_a_run(Path(output), resuming=resume is not None)
    existing = Path(os.path.abspath(output))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise LangBRTInputError(f"{output}: output folder is not writable ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LangBRTInputError(f"{output}: output folder is not writable ({existing} is not writable)")


def _refuse_a_folder_holding_a_run(output: Path, *, resuming: bool) -> None:
    """A run's records (log lines, checkpoints, the final one) in OUTPUT are the user's: refuse to mix another
    run into them. A folder holding only what a run writes before its first record (train_config.json, an empty
    log.jsonl or TensorBoard file: a run stopped at once, e.g. by a pair that fails to decode under --strict)
    is taken over as before."""
    checkpoints = sorted(p for p in (output / CHECKPOINTS_DIR).glob("step_*") if p.is_dir())
    log = output / JSONL_FILE
    empty_log = log.is_file() and not log.is_symlink() and log.stat().st_size == 0
    held = [JSONL_FILE] if os.path.lexists(log) and not empty_log else []
    held += [FINAL_DIR] if os.path.lexists(output / FINAL_DIR) else []
    held += [f"{CHECKPOINTS_DIR}/{checkpoints[-1].name}"] if checkpoints else []
    if not held:
        return
    if resuming:
        raise LangBRTInputError(f"--output {output} already holds another training run ({', '.join(held)}), and "
                                "the checkpoint resumed from is not in it: resume into an empty folder (or the "
                                "checkpoint's own run folder)")
    latest = output / FINAL_DIR if (output / FINAL_DIR).is_dir() else (checkpoints[-1] if checkpoints else None)
    then = (f"continue it with --resume {shlex.quote(str(latest))}" if latest is not None
            else "it has no checkpoint to resume from: remove it")
    raise LangBRTInputError(f"--output {output} already holds a training run ({', '.join(held)}); {then}, or "
                            "choose another folder")


def prepare_output(output: Path) -> None:
    """Create OUTPUT/checkpoints and prove the folder is writable, before any training work."""
    try:
        (output / CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)
        with atomic_path(output / ".write_test"):
            pass
        (output / ".write_test").unlink()
    except OSError as err:
        raise LangBRTInputError(f"{output}: output folder is not writable ({err.strerror or err})") from None


def remove_killed_runs_leftovers(output: Path) -> None:
    """Remove what a run into `output` killed mid-write (SIGKILL, the out-of-memory killer: no cleanup runs) left
    hidden there: checkpoint staging folders ('checkpoints/.step_000100.XXXXXXXX.partial', '.final.XXXXXXXX.partial',
    the weights and optimizer state, up to GBs) and the temporary files of the run's config, log and sample grids.
    Any step's, not only those this run writes: a resume with another --checkpoint-every writes other names.

    Call it holding `output`'s `RunLock`: a run writes these only while it holds that lock, so none of them belongs
    to a live run, however new (a run's '.write_test' comes before its lock, and is left alone). A moved-aside
    '.NAME.old' folder is kept: it may be the only copy of a checkpoint (see `replace_folder`).
    """
    top_files = "|".join(re.escape(name) for name in (CONFIG_FILE, JSONL_FILE))
    remove_leftovers_of_locked_folder(output, files=top_files, folders=re.escape(FINAL_DIR))
    remove_leftovers_of_locked_folder(output / CHECKPOINTS_DIR, folders=STEP_NAME)
    remove_leftovers_of_locked_folder(output / SAMPLES_DIR, files=rf"{STEP_NAME}\.png")


# TrainConfig fields that decide which samples the run trains on (and what its real pairs are asked).
TRAINING_SET_FIELDS = ("data", "ffhqr_root", "ffhqr_target_root", "fraction", "synthetic_length", "real_faces",
                       "real_fraction", "prompts")


def warn_if_resume_differs(state: dict[str, Any], cfg: TrainConfig, info: DistInfo, resume: Path,
                           before: TrainConfig | None) -> None:
    """Resume is exact only with the same processes x batch, seed and training set: say so once (rank 0), one
    line each, when they differ. `before`: the resumed run's config, its relative paths as seen from here
    (`run_paths.resumed_config`, as --resume read them); None where the checkpoint has none."""
    if not info.is_main:
        return
    order = state.get("data_order") or {}
    saved = (order.get("world_size", info.world_size), order.get("batch_size", cfg.batch_size))
    if saved != (info.world_size, cfg.batch_size):
        # The same global batch is the same samples at every step (`batches`), only spread otherwise over the
        # processes (QA: resuming a 2 x 2 run on one process with --batch-size 4 was told the batch changed).
        then = (f"the same global batch of {cfg.batch_size * info.world_size}, the same samples at every step, "
                "spread otherwise: it continues as before up to float rounding, not bit for bit"
                if saved[0] * saved[1] == info.world_size * cfg.batch_size
                else "the data order and the global batch change from here on")
        warnings.warn(f"{resume} was trained with {saved[0]} process(es) x batch {saved[1]}, this run uses "
                      f"{info.world_size} x {cfg.batch_size}: {then}", stacklevel=2)
    # The seed is recorded beside them and decides the order as much (QA, 2026-11-26: `--resume ... --seed 7`
    # trained on another order, and from a --fraction another subset, without a word).
    saved_seed = order.get("seed", cfg.seed)
    if saved_seed != cfg.seed:
        warnings.warn(f"{resume} was trained with --seed {saved_seed}, this run uses --seed {cfg.seed}: the data "
                      "order (and a --fraction subset) change from here on", stacklevel=2)
    # And the training set itself (QA, 2026-11-26: --data, --fraction or --synthetic-length given again on
    # resume changed it without a word).
    if before is not None:
        changed = [f"{name} {getattr(before, name)!r} -> {getattr(cfg, name)!r}" for name in TRAINING_SET_FIELDS
                   if getattr(before, name) != getattr(cfg, name)]
        if changed:
            warnings.warn(f"{resume} was trained on another training set ({'; '.join(changed)}): the data change "
                          "from here on", stacklevel=2)
