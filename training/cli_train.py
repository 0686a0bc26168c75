"""`langbrt-train`: train LangBRT on synthetic, paired-folder or FFHQR data (paper sec. 3.4 and 4.1).

The command only turns flags into a `TrainConfig` and calls `trainer.train`; errors a user can cause come
back as one `langbrt-train: error: ...` line with exit code 2 (3 when the loss diverged, 4 when a checkpoint or
log could not be written mid-run, 1 when another torchrun process of the job ended mid-run; 0 with a warning
when it ended after the final checkpoint was saved), never a traceback. Ctrl-C ends with one line naming the
checkpoint to `--resume` from, exit code 130. Under `torchrun` every rank ends the same way and the line is said
once per node (`stop`).
"""

from __future__ import annotations

import os
import shlex
import warnings
from pathlib import Path

import click
import torch
from click.core import ParameterSource

from langbrt.bundled import DEFAULT_MODEL_DIR, default_model_path
from langbrt.checkpoint import WEIGHTS_FILE, checkpoints_within, read_checkpoint_config
from langbrt.cli_click import NonEmptyPath, OneLineCommand, one_line_warnings, stop
from langbrt.cli_errors import error_line
from langbrt.cli_pipes import StdoutWriteError, print_out
from langbrt.config import LangBRTConfig
from langbrt.console import run_command
from langbrt.errors import CheckpointError, LangBRTError, LangBRTInputError, OutputWriteError
from langbrt.exit_codes import EXIT_INTERRUPTED, EXIT_OUTPUT_NOT_WRITTEN, EXIT_USAGE
from langbrt.training.data.pair_prompts import canonical_prompts
from langbrt.training.data.paired import DEFAULT_REAL_PROMPTS
from langbrt.training.losses.detection import DEFAULT_DETECTION_LOSS, DETECTION_LOSSES
from langbrt.training.losses.weights import LossWeights
from langbrt.training.run_paths import resumed_config
from langbrt.training.train_config import (
    ABLATIONS,
    DDP_TIMEOUT_S,
    FFHQR,
    MODEL_FIELDS,
    PRECISIONS,
    PRESETS,
    SYNTHETIC,
    TrainConfig,
)
from langbrt.training.train_state import STATE_FILE
from langbrt.training.unused_flags import refuse_train_flags_without_effect, warn_train_flags_without_effect

PROG = "langbrt-train"
BUNDLED_INIT = "bundled"  # --init bundled: the model shipped inside the package, wherever pip put it
EXIT_DIVERGED = 3
EXIT_RANK_LOST = 1  # under torchrun: another process of the job ended mid-run

# CLI option name -> TrainConfig field, for the options that map one to one.
_FIELDS = ("data", "ffhqr_root", "ffhqr_target_root", "fraction", "synthetic_length", "real_faces", "real_fraction",
           "prompts", "steps", "batch_size", "lr",
           "min_lr", "warmup_steps", "grad_clip", "preset", "image_size", "map_threshold", "detection_loss",
           "ablation", "text_encoder", "clip_text_weights", "vgg_weights", "alpha_clip_weights", "precision", "seed",
           "strict", "flip", "ema_decay", "num_workers", "log_every", "image_every", "checkpoint_every", "val",
           "val_every", "val_samples", "output", "strict_pairs", "ddp_timeout")
_WEIGHTS = ("detection", "component", "adversarial", "l1", "perceptual", "semantic")


@click.command(PROG, cls=OneLineCommand,
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.option("--data", type=NonEmptyPath(), metavar="DIR|synthetic|ffhqr", default="synthetic", show_default=True,
              help="'synthetic' (built-in generator, exact masks), 'ffhqr' (with --ffhqr-root), or a folder "
                   "holding source/ and target/ with the same file names.")
@click.option("--ffhqr-root", type=NonEmptyPath(), help="FFHQR: the prepared face_retouching/ folder, or the "
              "folder of FFHQ originals (then also --ffhqr-target-root).")
@click.option("--ffhqr-target-root", type=NonEmptyPath(), help="FFHQR: the folder of retouched images.")
@click.option("--fraction", type=float, default=1.0, show_default=True,
              help="Train on a seeded subset, e.g. 0.01 for the paper's 1% regime.")
@click.option("--synthetic-length", type=int, default=2048, show_default=True, help="Size of the synthetic set.")
@click.option("--real-face", "real_faces", multiple=True, type=NonEmptyPath(dir_okay=False),
              help="Regions JSON of a clean real face photo (see examples/) to render synthetic blemishes on; "
              "repeatable.")
@click.option("--real-fraction", type=float, default=0.3, show_default=True,
              help="Share of synthetic samples drawn on the --real-face photos.")
@click.option("--prompt", "prompts", multiple=True, metavar="TEXT",
              help="What every real pair (--data DIR, ffhqr) answers, repeatable; a prompts.json in the data root "
              f"names a pair's own (see README). Default: {', '.join(map(repr, DEFAULT_REAL_PROMPTS))}.")
@click.option("--steps", type=int, default=25_000, show_default=True, help="Optimizer steps (paper: 25k).")
@click.option("--batch-size", type=int, default=1, show_default=True,
              help="Images per step per process (paper: 1); under torchrun the global batch is this x ranks.")
@click.option("--lr", type=float, default=2e-4, show_default=True, help="Adam learning rate (paper: 2e-4).")
@click.option("--min-lr", type=float, default=0.0, show_default=True, help="Where the cosine decay ends.")
@click.option("--warmup-steps", type=int, default=0, show_default=True, help="Linear warmup before the decay.")
@click.option("--grad-clip", type=float, default=0.0, show_default=True, help="Clip the generator's grad norm "
              "(0: off).")
@click.option("--detection-weight", type=float, default=1.0, show_default=True, help="eta for L_detc (eq. 5).")
@click.option("--component-weight", type=float, default=1.0, show_default=True, help="eta for L_comp (eq. 6).")
@click.option("--adversarial-weight", type=float, default=1.0, show_default=True, help="L_adv (eq. 7, 8).")
@click.option("--l1-weight", type=float, default=1.0, show_default=True, help="Pixel L1 of L_cons (eq. 9).")
@click.option("--perceptual-weight", type=float, default=10.0, show_default=True,
              help="beta, VGG-19 term of eq. 9 (needs --vgg-weights; 0 turns it off).")
@click.option("--semantic-weight", type=float, default=1.0, show_default=True,
              help="gamma, Alpha-CLIP term of eq. 10 (needs --alpha-clip-weights and --clip-text-weights).")
@click.option("--preset", type=click.Choice(PRESETS), default="tiny", show_default=True,
              help="Model size: tiny (64x64, CPU tests), small (256x256, the bundled CPU model) or paper "
                   "(512x512, 7 blocks).")
@click.option("--image-size", type=int, help="Override the preset's image size.")
@click.option("--map-threshold", type=float, help="Override the preset's detection-map gate (0.1): below it the "
              "output is the input, bit for bit.")
@click.option("--detection-loss", type=click.Choice(DETECTION_LOSSES), default=DEFAULT_DETECTION_LOSS,
              show_default=True,
              help="Loss of the detection maps against their target: bce, or l1 as in the paper's eq. 5 (which "
              "stays at chance on sparse blemish masks, see README).")
@click.option("--ablation", type=click.Choice(ABLATIONS), default="none", show_default=True,
              help="Train a Table 2 variant: no-tbd (no detection maps, so no detection / component losses), "
              "no-tca (plain window self-attention), or no-prior (no vision-language pre-training: learned "
              "prompt embeddings and no Alpha-CLIP term, whatever --semantic-weight says).")
@click.option("--text-encoder", default="minilm", show_default=True,
              help="Frozen prompt encoder: 'minilm' (offline) or 'open_clip:ARCH' with --clip-text-weights.")
@click.option("--clip-text-weights", type=NonEmptyPath(), help="CLIP text-tower weights file (open_clip / Alpha-CLIP).")
@click.option("--vgg-weights", type=NonEmptyPath(), help="torchvision's vgg19-dcbb9e9d.pth for the perceptual loss.")
@click.option("--alpha-clip-weights", type=NonEmptyPath(), help="Alpha-CLIP image-tower weights (semantic loss).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="bf16 autocasts the forward passes; losses, weights and optimizer stay fp32.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds weights, subset and data order.")
@click.option("--strict/--no-strict", default=False, show_default=True,
              help="Stop at a corrupt image instead of skipping it with a warning.")
@click.option("--strict-pairs/--no-strict-pairs", default=False, show_default=True,
              help="Stop when a pair looks misaligned (its target shifted, rescaled, mirrored or another photo) "
              "instead of training on it with a warning.")
@click.option("--flip/--no-flip", default=True, show_default=True, help="Random horizontal flips.")
@click.option("--ema-decay", type=float, default=0.999, show_default=True,
              help="EMA of the generator weights saved in checkpoints (0: save the raw weights).")
@click.option("--num-workers", type=int, default=0, show_default=True,
              help="DataLoader worker processes, per training process (each torchrun rank starts its own).")
@click.option("--threads", type=click.IntRange(min=0), default=0,
              help="CPU threads for torch, per training process (0: torch's default; under torchrun, "
                   "cores / ranks avoids oversubscribing).")
@click.option("--log-every", type=int, default=10, show_default=True, help="Steps between log lines.")
@click.option("--image-every", type=int, default=500, show_default=True, help="Steps between sample grids.")
@click.option("--checkpoint-every", type=int, default=1000, show_default=True,
              help="Steps between checkpoints in OUTPUT/checkpoints/step_NNNNNN.")
@click.option("--val", type=NonEmptyPath(), metavar="DIR|synthetic",
              help="Held-out validation: score the shipped (EMA) weights with langbrt-eval's metrics on a folder "
              "of pairs laid out as --data's (not the training folder), or 'synthetic' (the synthetic test split); "
              "written to log.jsonl and TensorBoard as val/..., with the identity's scores beside them.")
@click.option("--val-every", type=int, help="Steps between validations (and at the end)  [default: --checkpoint-every]")
@click.option("--val-samples", type=int, default=64, show_default=True,
              help="Validate on at most this many held-out pairs (synthetic: this many test samples).")
@click.option("--ddp-timeout", type=int, default=DDP_TIMEOUT_S, show_default=True, metavar="SECONDS",
              help="Under torchrun: how long a collective waits for every process before the job fails "
              "(nccl's own default is 600); raise it if one process's checkpoint write can take longer.")
@click.option("--output", type=NonEmptyPath(), default="runs/langbrt", show_default=True,
              help="Run folder; the final checkpoint goes to OUTPUT/final.")
@click.option("--resume", type=NonEmptyPath(), help="Continue exactly from a checkpoint folder; its "
              "train_config.json is used, with only the flags given here overriding it (--steps above the "
              "checkpoint's step; model flags such as --preset or --image-size must match it).")
@click.option("--init", type=NonEmptyPath(), help="Fine-tune: start a new run from the weights of a checkpoint "
              f"folder (a run's OUTPUT/final, or '{BUNDLED_INIT}': the model shipped with LangBRT) with a fresh "
              "optimizer and schedule from step 1; its model settings are kept (model flags must match them). "
              "Not with --resume.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def main(ctx: click.Context, threads: int, resume: str | None, init: str | None, quiet: bool,
         **options: object) -> None:
    """Train LangBRT. Example (CPU, about 1.5 minutes; the run README.md measures):

    langbrt-train --data synthetic --preset tiny --steps 500 --batch-size 8 --lr 2e-3 --l1-weight 20
    --adversarial-weight 0 --perceptual-weight 0 --semantic-weight 0 --ema-decay 0 --output runs/tiny
    """
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        cfg = _config(ctx, options, resume, init)
        from langbrt.training.distributed import launched_by_torchrun
        from langbrt.training.train_errors import RankLost, TrainingDiverged, TrainingInterrupted
        from langbrt.training.trainer import train

        try:
            with one_line_warnings():
                if int(os.environ.get("RANK", "0")) == 0:  # said once per run, not once per torchrun rank
                    warn_train_flags_without_effect(cfg, _typed(ctx))
                    if "ddp_timeout" in _typed(ctx) and not launched_by_torchrun():  # kept for a torchrun resume
                        warnings.warn(f"--ddp-timeout {cfg.ddp_timeout} has no effect: this run is one process, "
                                      "not started by torchrun; it is recorded for a --resume under torchrun",
                                      stacklevel=1)
                result = train(cfg, resume=resume, progress=not quiet)
        except TrainingDiverged as err:
            stop(error_line(PROG, err), EXIT_DIVERGED)
        except OutputWriteError as err:  # a checkpoint or log mid-run (`OutputNotWritten`), or the run's config
            stop(error_line(PROG, err), EXIT_OUTPUT_NOT_WRITTEN)
        except TrainingInterrupted as err:
            stop(f"Interrupted: {err}", EXIT_INTERRUPTED)
        except RankLost as err:  # not the command's input: the job lost a process (killed, out of memory)
            stop(error_line(PROG, err), EXIT_RANK_LOST)
    except LangBRTError as err:
        stop(error_line(PROG, err), EXIT_USAGE)
    except KeyboardInterrupt:  # before the first step: nothing new was saved
        stop("Interrupted: before the first training step; no new checkpoint was written", EXIT_INTERRUPTED)
    if int(os.environ.get("RANK", "0")) == 0:
        try:
            print_out(f"saved {result.final_dir} after {result.steps} steps (loss {result.last_loss:.4f}); "
                      f"evaluate with: {eval_command(result.final_dir, cfg)}")
        except StdoutWriteError as err:  # the run is saved; only its last line was lost
            stop(error_line(PROG, err), EXIT_OUTPUT_NOT_WRITTEN)


def eval_command(final_dir: Path, cfg: TrainConfig) -> str:
    """The `langbrt-eval` line the run ends with, for data it did not train on.

    Why: it used to repeat `--data`, which for a folder is the training pairs themselves (scores that say
    nothing about new photos) and for FFHQR lacked `--ffhqr-root`, so the command it printed failed (QA,
    2026-11-27). The synthetic set and FFHQR have a test split, langbrt-eval's default; a folder is used whole.
    The run's --prompt flags are repeated: they are what its real pairs were asked.
    """
    prompts = "".join(f"--prompt {shlex.quote(prompt)} " for prompt in cfg.prompts)
    command = f"langbrt-eval --model {shlex.quote(str(final_dir))} {prompts}--data "
    if cfg.data == SYNTHETIC:
        return command + SYNTHETIC
    if cfg.data == FFHQR:
        roots = [f"--{flag} {shlex.quote(str(path))}" for flag, path in
                 (("ffhqr-root", cfg.ffhqr_root), ("ffhqr-target-root", cfg.ffhqr_target_root)) if path]
        return " ".join([command + FFHQR, *roots])
    return command + "HELD_OUT_DIR (a folder of source/ + target/ pairs this run did not train on)"


def _typed(ctx: click.Context) -> set[str]:
    """The option names given on the command line (not defaults): what `unused_flags` holds the user to."""
    return {name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}


def _check_resume_folder(resume: Path) -> None:
    """What --resume names must be a run's checkpoint folder; say so before reading anything in it."""
    hint = "resume from a run's OUTPUT/checkpoints/step_N or OUTPUT/final folder"
    if not resume.exists():
        raise LangBRTInputError(f"--resume {resume}: no such checkpoint folder; {hint}")
    if not resume.is_dir():
        raise LangBRTInputError(f"--resume {resume} is a file, which holds weights but no trainer state; {hint}")
    within = "" if (resume / STATE_FILE).is_file() else checkpoints_within(resume)
    if within:  # the run's --output or its checkpoints/ folder: its train_config.json is no checkpoint's
        raise LangBRTInputError(f"--resume {resume}: not a checkpoint folder{within}")


def _check_resume_state(resume: Path) -> None:
    """A checkpoint folder without trainer state is said to be one before the flags meet its config: its own
    values then failed validation against them (--steps 10 below its warmup of 50) and hid this, the problem."""
    if not (resume / STATE_FILE).is_file():
        raise LangBRTInputError(f"--resume {resume}: no {STATE_FILE}, so no run to continue (a shipped model such as "
                                "the bundled one holds weights only); to fine-tune from its weights: "
                                f"--init {_init_name(resume)}")


def _init_name(checkpoint: Path) -> str:
    """What to type after --init for `checkpoint`: 'bundled' for the shipped model, else its path, shell-quoted."""
    return BUNDLED_INIT if checkpoint.resolve() == DEFAULT_MODEL_DIR else shlex.quote(str(checkpoint))


def _init_settings(init: Path) -> TrainConfig:
    """The model settings of the checkpoint --init names (they are the run's), or one line: a run's
    train_config.json, else those of the preset that builds the model in its config.json (a checkpoint
    written by `LangBRT.save_pretrained`, as a folder or one .safetensors file)."""
    hint = "pass a checkpoint (a folder such as a run's OUTPUT/final, or a .safetensors file)"
    if not init.exists():
        raise LangBRTInputError(f"--init {init}: no such checkpoint; {hint}")
    if init.is_dir() and (init / "train_config.json").is_file():
        return TrainConfig.from_json(init / "train_config.json")
    if init.is_dir() and not (init / WEIGHTS_FILE).is_file():
        raise LangBRTInputError(f"--init {init}: no {WEIGHTS_FILE} in it; {hint}")
    try:
        model = LangBRTConfig.from_dict(read_checkpoint_config(init).get("model"))
    except CheckpointError as err:
        raise LangBRTInputError(f"--init {err}") from None
    settings = TrainConfig.settings_of(model)
    if settings is None:
        raise LangBRTInputError(f"--init {init}: its model (config.json) is no --preset with --image-size, "
                                "--map-threshold and --ablation; fine-tune it from Python, or start from a checkpoint "
                                "langbrt-train made")
    return settings


def _config(ctx: click.Context, options: dict[str, object], resume: str | None,
            init: str | None = None) -> TrainConfig:
    """Flags -> TrainConfig; with --resume, the checkpoint's config with only the explicitly given flags; with
    --init, the flags with the model settings (`MODEL_FIELDS`) of the checkpoint whose weights the run starts from."""
    typed = _typed(ctx)
    given = typed & set(options)
    if resume is not None and init is not None:
        raise LangBRTInputError("--init starts a new run from a checkpoint's weights and --resume continues a run; "
                                "give one of them")
    if resume is not None:
        _check_resume_folder(Path(resume))
        cfg = resumed_config(Path(resume))  # its relative paths lead where they did for the run, from any folder
        _check_resume_state(Path(resume))
    elif init is not None:
        if init == BUNDLED_INIT:
            init = str(default_model_path())
        start = _init_settings(Path(init))
        cfg = TrainConfig(init=str(init), **{name: getattr(start, name) for name in MODEL_FIELDS})
        saved = start.model_settings()
        given = set(options) - set(MODEL_FIELDS)
        for name in MODEL_FIELDS:
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
                setattr(cfg, name, options[name])
                if cfg.model_settings()[name] != saved[name]:
                    raise LangBRTInputError(
                        f"--{name.replace('_', '-')} {options[name]} differs from the --init checkpoint's "
                        f"{saved[name]}: its weights decide the model; drop the flag, or train from scratch "
                        "without --init")
    else:
        cfg, given = TrainConfig(), set(options)
    for name in _FIELDS:
        if name in given:
            setattr(cfg, name, options[name])
    weights = {w: options[f"{w}_weight"] if f"{w}_weight" in given else getattr(cfg.weights, w) for w in _WEIGHTS}
    cfg.weights = LossWeights(**weights)  # validates: one line naming the flag
    cfg.validate()
    refuse_train_flags_without_effect(cfg, typed)
    cfg.prompts = canonical_prompts(cfg.prompts)  # recorded as the model is asked them
    return cfg


if __name__ == "__main__":  # `python -m torch.distributed.run ... -m langbrt.training.cli_train`
    run_command(main)
