"""Where the paths of a saved `train_config.json` lead when a run is resumed from another current folder.

A run records its paths as the user typed them (`--data pairs`, `--output runs/x`, `--real-face f.json`, ...),
relative to the folder it was started from, which it records as `workdir`. Read from another folder, those
relative paths led elsewhere: `cd /B && langbrt-train --resume /A/runs/x/final --steps 9` trained on /B/pairs (or
stopped at "pairs: no such folder") and wrote the continued run to /B/runs/x instead of /A/runs/x, without a
word (QA, 2026-11-28). `resumed_config` rebases them, so a resume continues the same run on the same data from
any folder; flags given again on the command line are the user's, relative to where they are typed.

The folder the relative paths were relative to is, in this order: the one whose `output` is the run folder
holding the checkpoint (`workdir`, or the run folder less the `output` path's parts: a project folder moved or
mounted elsewhere as a whole still resumes), else the recorded `workdir`, else (a config written before
`workdir` was recorded, of a checkpoint outside its run folder) the current folder, as before.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from langbrt.checkpoint import CHECKPOINTS_DIR, FINAL_DIR
from langbrt.training.train_config import FFHQR, SYNTHETIC, TrainConfig
from langbrt.training.train_state import CONFIG_FILE

PATH_FIELDS = ("data", "output", "ffhqr_root", "ffhqr_target_root", "real_faces", "clip_text_weights",
               "vgg_weights", "alpha_clip_weights", "init", "val")
"""The `TrainConfig` fields that name files or folders (`data` and `val` unless a data set's name)."""

_NAMES = {"data": (SYNTHETIC, FFHQR), "val": (SYNTHETIC,)}  # values of a path field that are not paths


def run_folder_of(checkpoint: Path) -> Path | None:
    """The run folder (a run's `--output`) holding `checkpoint`: OUTPUT/final or OUTPUT/checkpoints/step_N."""
    checkpoint = Path(os.path.abspath(checkpoint))
    if checkpoint.name == FINAL_DIR:
        return checkpoint.parent
    if checkpoint.parent.name == CHECKPOINTS_DIR:
        return checkpoint.parent.parent
    return None


def started_from(cfg: TrainConfig, checkpoint: Path) -> Path:
    """The folder `cfg`'s relative paths are relative to (see the module docstring)."""
    run = run_folder_of(checkpoint)
    candidates = [Path(cfg.workdir)] if cfg.workdir else []
    output = Path(os.path.normpath(cfg.output))
    if run is not None and not output.is_absolute() and ".." not in output.parts and \
            run.parts[-len(output.parts):] == output.parts:
        candidates.append(Path(*run.parts[: -len(output.parts)]))
    if run is not None:
        for base in candidates:
            if (base / cfg.output).resolve() == run.resolve():
                return base
    return Path(cfg.workdir) if cfg.workdir else Path.cwd()


def rebased(cfg: TrainConfig, base: Path) -> TrainConfig:
    """`cfg` with each relative path made absolute from `base`; unchanged when `base` is the current folder,
    so that a resume from where the run started shows the paths as typed."""
    if Path(base).resolve() == Path.cwd().resolve():
        return cfg

    def moved(name: str, value: str | None) -> str | None:
        if value is None or value in _NAMES.get(name, ()) or Path(value).is_absolute():
            return value
        return str(Path(os.path.abspath(Path(base) / value)))

    changes = {name: tuple(moved(name, v) for v in value) if isinstance(value, tuple) else moved(name, value)
               for name in PATH_FIELDS for value in [getattr(cfg, name)]}
    return replace(cfg, **changes)


def resumed_config(checkpoint: Path) -> TrainConfig:
    """The checkpoint's `train_config.json` with its relative paths leading, from the current folder, where
    they led from the folder the run was started from."""
    cfg = TrainConfig.from_json(Path(checkpoint) / CONFIG_FILE)
    return rebased(cfg, started_from(cfg, checkpoint))
