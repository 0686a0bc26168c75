"""`langbrt-eval`: score a checkpoint on a synthetic, paired-folder or FFHQR set, beside the identity baseline.

`--json` prints ONE JSON object (keys of `EvalResult.to_dict()`, unavailable metrics as null, never 0);
otherwise a table with the model and the identity (output = input) side by side; on real pairs both say
which prompts the pairs were asked (`--prompt`, the data root's prompts.json). `--out FILE` also writes
that JSON (or the `--suite` report) to a file, checked before anything runs. Bad input is one
`langbrt-eval: error: ...` line with exit code 2; an `--out` that cannot be written once the result is there
(a full disk) is one such line with exit code 4, the result printed all the same; a skipped corrupt image is
one `Warning: ...` line; never a traceback.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import click
import torch
from click.core import ParameterSource
from torch.utils.data import Dataset

from langbrt.atomic import atomic_write_text
from langbrt.cli_args import DEVICE_HELP, is_device_name
from langbrt.cli_click import NonEmptyPath, OneLineCommand, one_line_warnings
from langbrt.cli_errors import fail
from langbrt.cli_pipes import print_out
from langbrt.console import run_command
from langbrt.devices import default_device, require_device
from langbrt.errors import LangBRTError, LangBRTInputError, OutputWriteError
from langbrt.exit_codes import EXIT_OUTPUT_NOT_WRITTEN, EXIT_USAGE
from langbrt.model import LangBRT
from langbrt.output_paths import check_output_file
from langbrt.text import text_encoder_from_name
from langbrt.training.data.pair_prompts import find_prompts_file
from langbrt.training.data.synthetic import SPLITS as SYNTHETIC_SPLITS
from langbrt.training.datasets import pairs_of
from langbrt.training.evaluate import EvalResult, evaluate
from langbrt.training.metrics import LPIPSMetric
from langbrt.training.train_config import FFHQR, MAX_SEED, SYNTHETIC, TrainConfig
from langbrt.training.unused_flags import refuse_clip_text_weights, refuse_eval_flags_without_effect
from langbrt.training.validation import EVAL_BATCH_SIZE, EVAL_SEED, EVAL_SPLIT, eval_dataset

PROG = "langbrt-eval"
PROMPTS_LISTED = 10  # prompts the table names (a prompts.json may hold thousands); --json has them all
SYNTHETIC_SAMPLES = 64
"""--num-samples when not given, on the synthetic set. A folder or FFHQR is scored whole by default: the paper's
Table 1 scores all 7,000 pairs of FFHQR's test split, and its first 64 pairs (once the default for every set)
gave numbers that looked comparable to it and were not."""


def _device_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--device as every command takes it (cpu, cuda, cuda:N); whether this machine has it is asked later."""
    if value is not None and not is_device_name(value):
        raise click.BadParameter(f"{value!r} is not a device: {DEVICE_HELP}")
    return value


@click.command(PROG, cls=OneLineCommand,
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.option("--model", "model_dir", type=NonEmptyPath(),
              help="Checkpoint folder (OUTPUT/final) or .safetensors file.")
@click.option("--suite", "suite_specs", multiple=True, metavar="NAME=DIR",
              help="Quality benchmark: score these checkpoints (repeatable) and the classical baselines side by "
                   "side on the synthetic set; see training/suite.py. Not with --model.")
@click.option("--out", "out_path", type=NonEmptyPath(), help="Also write the JSON here: the --suite report, or the "
              "--model's --json object. Checked before anything runs; never inside an evaluated checkpoint.")
@click.option("--data", type=NonEmptyPath(), metavar="DIR|synthetic|ffhqr", default=SYNTHETIC, show_default=True,
              help="'synthetic', 'ffhqr' (with --ffhqr-root) or a folder holding source/ and target/.")
@click.option("--ffhqr-root", type=NonEmptyPath(), help="FFHQR folder (see langbrt-train --help).")
@click.option("--ffhqr-target-root", type=NonEmptyPath(), help="FFHQR retouched-images folder.")
@click.option("--prompt", "prompts", multiple=True, metavar="TEXT",
              help="What every pair of a folder or FFHQR answers, repeatable (as langbrt-train's --prompt; a "
              "prompts.json in the data root names a pair's own). Default: the pre-defined prompts.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=EVAL_SPLIT, show_default=True,
              help="Split of the synthetic set (train, test) or of FFHQR (train, val, test); a paired folder is used "
              "whole.")
@click.option("--num-samples", type=click.IntRange(min=0),
              help=f"Synthetic: how many samples (at least 1; default {SYNTHETIC_SAMPLES}); folders and FFHQR: "
                   "evaluate at most this many pairs (default 0: all, as the paper scores the whole test split).")
@click.option("--batch-size", type=click.IntRange(min=1), default=EVAL_BATCH_SIZE, show_default=True)
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=EVAL_SEED, show_default=True,
              help="Seed of the synthetic set.")
@click.option("--strict/--no-strict", default=False, show_default=True,
              help="Stop at a corrupt image instead of skipping it with a warning.")
@click.option("--clip-text-weights", type=NonEmptyPath(), help="For models trained with an open_clip text encoder.")
@click.option("--device", callback=_device_option, help="cpu, cuda or cuda:N. Default: cuda if available, else cpu.")
@click.option("--threads", type=click.IntRange(min=0), default=0,
              help="CPU threads for torch (0: torch's default, one per core); 1 on a machine whose cores other jobs "
                   "share (README: langbrt-infer's CPU threads).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.pass_context
def main(ctx: click.Context, model_dir: str | None, suite_specs: tuple[str, ...], out_path: str | None, data: str,
         ffhqr_root: str | None, ffhqr_target_root: str | None, prompts: tuple[str, ...], split: str,
         num_samples: int | None, batch_size: int, seed: int, strict: bool, clip_text_weights: str | None,
         device: str | None, threads: int, as_json: bool) -> None:
    """Evaluate a checkpoint: PSNR, SSIM, LPIPS, PSNR on blemishes, detection IoU/AP and specificity.

    Example: langbrt-eval --model runs/tiny/final --data synthetic --num-samples 64 --json
    """
    if threads > 0:
        torch.set_num_threads(threads)
    if num_samples is None:
        num_samples = SYNTHETIC_SAMPLES if data == SYNTHETIC else 0
    # Files and folders the run reads, which --out must not replace: the CLIP weights too (QA: `--clip-text-weights
    # W --out W` overwrote an open_clip model's weights file with the JSON).
    inputs = [path for path in (ffhqr_root, ffhqr_target_root, clip_text_weights) if path]
    if data not in (SYNTHETIC, FFHQR):
        inputs.append(data)
    try:
        with one_line_warnings():
            _check_split(data, split)
            _check_num_samples(data, num_samples)
            refuse_eval_flags_without_effect(data, bool(suite_specs), {
                name: value for name, value in ctx.params.items()
                if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE})
            if suite_specs:
                if model_dir is not None:
                    raise LangBRTInputError("give --model DIR or --suite NAME=DIR ..., not both (add the model to "
                                            "the suite as another --suite entry)")
                if prompts:
                    raise LangBRTInputError("--prompt is for real pairs; --suite scores the synthetic set, which "
                                            "draws its own prompts for every scene: drop --prompt")
                _suite(suite_specs, out_path, data, split, num_samples, batch_size, seed, _device(device),
                       as_json)
                return
            if model_dir is None:
                raise LangBRTInputError("give --model DIR (or --suite NAME=DIR for the benchmark)")
            out = check_output_file(out_path, [model_dir, *inputs], "--out") if out_path is not None else None
            result = _run(model_dir, data, ffhqr_root, ffhqr_target_root, prompts, split, num_samples, batch_size,
                          seed, strict, clip_text_weights, _device(device), out)
            shown = json.dumps(result.to_dict()) if as_json else format_table(result)
            _write_then_print(shown, out, json.dumps(result.to_dict(), indent=2) + "\n")
    except OutputWriteError as err:
        sys.exit(fail(PROG, err, EXIT_OUTPUT_NOT_WRITTEN))
    except LangBRTError as err:
        sys.exit(fail(PROG, err, EXIT_USAGE))


def _write_then_print(shown: str, out: Path | None, text: str) -> None:
    """Write `text` to `--out`, then print `shown`. Printed also when the write fails (a full disk, then an
    OutputWriteError, exit 4): the result took minutes to compute, and the user can still copy it."""
    if out is not None:
        try:
            atomic_write_text(out, text)
        except OutputWriteError:
            print_out(shown)
            raise
    print_out(shown)


def _check_split(data: str, split: str) -> None:
    """The synthetic set (also what --suite scores) has a train and a test split; FFHQR has val too.

    Why here: the synthetic set's own check said "split must be one of ['test', 'train'], got 'val'", naming
    neither the flag nor that val is FFHQR's (QA, 2026-11-28)."""
    if data == SYNTHETIC and split not in SYNTHETIC_SPLITS:
        splits = " and ".join(SYNTHETIC_SPLITS)
        raise LangBRTInputError(f"--split {split}: the synthetic set has only the splits {splits} (val is FFHQR's); "
                                f"pass --split {EVAL_SPLIT} (the default) or train")


def _check_num_samples(data: str, num_samples: int) -> None:
    """0 (all pairs) is for folders and FFHQR; the synthetic set, --suite's too, has no end. Why here: --suite
    said '--suite needs --num-samples >= 1 and --batch-size >= 1', naming a --batch-size that was fine."""
    if data == SYNTHETIC and num_samples < 1:
        raise LangBRTInputError(f"--num-samples must be at least 1 for --data synthetic (0, all pairs, is for "
                                f"folders and FFHQR), got {num_samples}")


def _device(name: str | None) -> str:
    """--device, defaulting to cuda where PyTorch sees a GPU; one this machine lacks is an error line."""
    if name is None:
        return default_device()
    require_device(name)
    return name


def _suite(specs: tuple[str, ...], out_path: str | None, data: str, split: str, num_samples: int, batch_size: int,
           seed: int, device: str, as_json: bool) -> None:
    from langbrt.training.suite import evaluate_suite, format_suite_table, parse_suite_specs

    command = shlex.join([PROG, *sys.argv[1:]])
    if data != SYNTHETIC:
        raise LangBRTInputError("--suite needs --data synthetic (its baselines use the exact masks)")
    checkpoints = parse_suite_specs(specs)
    out = check_output_file(out_path, checkpoints.values(), "--out") if out_path is not None else None
    result = evaluate_suite(checkpoints, split=split, num_samples=num_samples, batch_size=batch_size, seed=seed,
                            device=device, command=command)
    text = json.dumps(result.to_dict(), indent=2)
    _write_then_print(text if as_json else format_suite_table(result), out, text + "\n")


def _run(model_dir: str, data: str, ffhqr_root: str | None, ffhqr_target_root: str | None, prompts: tuple[str, ...],
         split: str, num_samples: int, batch_size: int, seed: int, strict: bool, clip_text_weights: str | None,
         device: str, out: Path | None) -> EvalResult:
    cfg = TrainConfig(data=data, ffhqr_root=ffhqr_root, ffhqr_target_root=ffhqr_target_root, prompts=prompts,
                      seed=seed, strict=strict, flip=False)
    cfg.validate()  # --data ffhqr without --ffhqr-root, --prompt on synthetic data: as langbrt-train says them
    model = LangBRT.from_pretrained(model_dir)
    refuse_clip_text_weights(clip_text_weights, model_dir, model.config.text_encoder)
    if clip_text_weights:
        model.prompt_bank.set_encoder(text_encoder_from_name(model.config.text_encoder, clip_text_weights))
    if data != SYNTHETIC and not prompts and model.config.predefined_prompts:
        # "Default: the pre-defined prompts" are this model's own, each through its psi_i (eq. 1), not the
        # preset's three: a model saved with other pre-defined prompts was asked those as user prompts.
        cfg = replace(cfg, prompts=tuple(model.config.predefined_prompts))
    dataset, collate = eval_dataset(cfg, model.config.image_size, split, num_samples)
    if out is not None:
        check_output_file(out, _files_read(dataset, ffhqr_root if data == FFHQR else data), "--out")
    from tqdm.auto import tqdm

    with tqdm(total=len(dataset), unit="img", disable=not sys.stderr.isatty()) as bar:
        result = evaluate(model, dataset, collate, batch_size=batch_size, device=device, lpips=LPIPSMetric.try_load(),
                          progress=bar.update)
    if result.num_samples == 0:  # every pair failed to decode, each warned about: a result of nulls is no score
        where = ffhqr_root if data == FFHQR else data
        raise LangBRTInputError(f"{where}: none of the {len(dataset)} pairs to score could be decoded (each is named "
                                "above); nothing was scored")
    return result


def _files_read(dataset: Dataset, root: str) -> list[Path]:
    """The image files of the pairs scored and the root's prompts.json, as the data folder names them.

    Why: --out is checked against the data folder before anything runs, but a pair (or prompts.json) may be a
    link to a file elsewhere, which writing --out there would replace (QA: a symlinked source photo became the
    JSON); where the links lead is known once the pairs are."""
    files = [path for pair in pairs_of(dataset) for path in (pair.source, pair.target)]
    prompts_file = find_prompts_file(root) if root != SYNTHETIC else None
    return files + [prompts_file] if prompts_file else files


def format_table(result: EvalResult) -> str:
    """Model and identity side by side; 'n/a' where a metric is unavailable."""
    def cell(value: float | None, digits: int = 4) -> str:
        return "n/a" if value is None or value != value else f"{value:.{digits}f}"

    rows = [("PSNR (dB)", result.psnr, result.identity_psnr), ("SSIM", result.ssim, result.identity_ssim),
            ("LPIPS", result.lpips, result.identity_lpips),
            ("PSNR on blemishes (dB)", result.psnr_blemish, result.identity_psnr_blemish)]
    if result.specificity_change is not None:
        rows.append(("change on unnamed blemishes", result.specificity_change, result.identity_specificity_change))
    lines = [f"{result.num_samples} samples", f"{'metric':<30}{'model':>12}{'identity':>12}"]
    lines += [f"{name:<30}{cell(model):>12}{cell(identity):>12}" for name, model, identity in rows]
    if result.prompts:
        lines.append(f"{'prompts asked':<30}{'images':>12}")
        lines += [f"{'  ' + prompt:<30}{count:>12}" for prompt, count in list(result.prompts.items())[:PROMPTS_LISTED]]
        if len(result.prompts) > PROMPTS_LISTED:
            lines.append(f"  ... and {len(result.prompts) - PROMPTS_LISTED} more (see --json)")
    if result.detection is not None:
        lines.append(f"{'detection':<30}{'IoU':>12}{'AP':>12}")
        lines.append(f"{'  all named blemishes':<30}{cell(result.detection.iou):>12}{cell(result.detection.ap):>12}")
        for kind, scores in result.detection_per_type.items():
            lines.append(f"{'  ' + kind:<30}{cell(scores.iou):>12}{cell(scores.ap):>12}")
    return "\n".join(lines)


if __name__ == "__main__":  # `python -m langbrt.training.cli_eval`, as the other commands run
    run_command(main)
