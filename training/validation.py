"""Held-out validation during training (`langbrt-train --val`): `langbrt-eval`'s protocol at named steps.

Why: a user fine-tuning on a few pairs overfits in a few hundred steps, and the training loss cannot show
it; the held-out scores beside the identity's can. They are `langbrt-eval`'s numbers for the checkpoint of
that step, not an approximation: the same set (`eval_dataset`), the same per-batch scoring and averaging as
`evaluate`, the same batch size and synthetic seed, on the weights a checkpoint ships (the EMA's when EMA is
on). Scoring leaves the run as it was (raw weights, train mode, every RNG), so a run with `--val` trains the
same weights as one without. Under torchrun each rank scores its share of the batches and rank 0 averages
them in the set's order: one process's numbers, in 1/world of the time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset, Subset

from langbrt.errors import LangBRTInputError
from langbrt.model import LangBRT
from langbrt.output_paths import overlap
from langbrt.training.datasets import build_dataset, check_alignment_of
from langbrt.training.distributed import DistInfo, gather_to_rank_0
from langbrt.training.evaluate import BatchScores, EvalResult, score_batches, summarise
from langbrt.training.metrics import LPIPSMetric
from langbrt.training.train_config import FFHQR, SYNTHETIC, TrainConfig
from langbrt.training.train_state import EMA, rng_state, set_rng_state, shipped_weights

EVAL_SPLIT = "test"  # the split of the synthetic set (and FFHQR) that langbrt-eval scores by default
EVAL_SEED = 0  # seed of langbrt-eval's synthetic set by default
EVAL_BATCH_SIZE = 8  # langbrt-eval's default; part of the protocol, as a batch changes the float sums a little


def eval_dataset(cfg: TrainConfig, image_size: int, split: str, num_samples: int) -> tuple[Dataset, Callable]:
    """(dataset, collate) that langbrt-eval scores for `cfg.data`: `num_samples` synthetic samples of `split`, or
    at most `num_samples` pairs of a folder / FFHQR (0: all), each pair scored once (one failing to decode is
    dropped, not replaced)."""
    length = num_samples if cfg.data == SYNTHETIC else None
    dataset, collate, _ = build_dataset(cfg, image_size, split=split, length=length, evaluation=True)
    if cfg.data != SYNTHETIC and 0 < num_samples < len(dataset):
        dataset = Subset(dataset, range(num_samples))
    check_alignment_of(dataset, cfg)  # scores against a misaligned target measure the misalignment
    return dataset, collate


@dataclass
class Validation:
    """The held-out set a run scores, built once before OUTPUT exists (a bad folder is one error line)."""

    dataset: Dataset
    collate: Callable
    lpips: LPIPSMetric | None


def check_val_folder(cfg: TrainConfig) -> None:
    """A --val folder must hold pairs the run does not train on: not the --data folder, nor inside it, nor
    holding it (scores on training pairs would say nothing about new photos)."""
    if cfg.val in (None, SYNTHETIC) or cfg.data in (SYNTHETIC, FFHQR) or not Path(cfg.data).is_dir():
        return
    where = overlap(Path(cfg.val).resolve(), cfg.data, contains=True)
    if where:
        raise LangBRTInputError(f"--val {cfg.val} {where} the training folder --data {cfg.data}; validation needs "
                                "held-out pairs: pass a folder of pairs the run does not train on")


def build_validation(cfg: TrainConfig, image_size: int) -> Validation | None:
    """The --val set at the model's `image_size`, as `langbrt-eval --data VAL --num-samples N [--prompt ...]`
    reads it (the run's prompts; the folder's own prompts.json); None without --val. Leaves every RNG as it
    found it."""
    if cfg.val is None:
        return None
    check_val_folder(cfg)
    prompts = () if cfg.val == SYNTHETIC else cfg.prompts  # --prompt is for real pairs; synthetic draws its own
    val_cfg = TrainConfig(data=cfg.val, seed=EVAL_SEED, strict=cfg.strict, strict_pairs=cfg.strict_pairs,
                          flip=False, prompts=prompts)
    with same_rng():
        try:
            dataset, collate = eval_dataset(val_cfg, image_size, EVAL_SPLIT, cfg.val_samples)
        except LangBRTInputError as err:
            raise LangBRTInputError(f"--val {err}") from None
        lpips = LPIPSMetric.try_load()  # builds a network: random initialisation before its weights load
    return Validation(dataset, collate, lpips)


@contextmanager
def same_rng() -> Iterator[None]:
    """Every RNG (torch, CUDA, numpy, python) is back where it was after the block: the data loader draws a
    seed from torch's even when it does not shuffle."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def validate(model: LangBRT, ema: EMA | None, val: Validation, info: DistInfo) -> list[BatchScores]:
    """Score the weights a checkpoint of this step ships on this rank's share of the held-out set
    (`rank_batches`); `model` is back in train mode with its raw weights, and every RNG where it was.
    `val_result` puts the ranks' shares together."""
    with same_rng(), shipped_weights(model, ema):
        loader = DataLoader(val.dataset, batch_sampler=rank_batches(len(val.dataset), info),
                            collate_fn=val.collate)
        try:
            return score_batches(model, loader, info.device, val.lpips)
        finally:
            model.train()


def rank_batches(size: int, info: DistInfo) -> list[list[int]]:
    """The indices of this rank's batches of a set of `size`: langbrt-eval's batches (`EVAL_BATCH_SIZE` in
    order), batch i on rank i mod world size, so that each holds the images it holds in one process (a batch
    changes the float sums a little) and the last, short one is a batch too. A rank may get none.

    Why shard: rank 0 scoring the whole set alone kept the others waiting in a collective, which the process
    group's time limit ends (nccl's is 10 minutes), and left their GPUs idle."""
    starts = range(info.rank * EVAL_BATCH_SIZE, size, info.world_size * EVAL_BATCH_SIZE)
    return [list(range(start, min(start + EVAL_BATCH_SIZE, size))) for start in starts]


def val_result(mine: list[BatchScores], val: Validation, info: DistInfo) -> EvalResult | None:
    """The set's scores on rank 0 (None on the others) from every rank's `validate`: the batches gathered
    there and put back in the set's order, so that the means are taken over the same per-image scores in the
    same order as in one process (a collective of every rank)."""
    shares = gather_to_rank_0(mine, info)
    if shares is None:
        return None
    in_order = [batch for turn in zip_longest(*shares) for batch in turn if batch is not None]  # batch i: rank i % W
    return summarise(in_order, val.lpips is not None)


def val_scalars(result: EvalResult) -> dict[str, float]:
    """`val/NAME` for each image metric of `langbrt-eval --json` (model and identity) and the overall
    detection IoU / AP on the synthetic set; metrics that cannot be computed (LPIPS without weights) left out."""
    scores: dict[str, Any] = {k: v for k, v in result.to_dict().items()
                              if k != "num_samples" and isinstance(v, float)}
    if result.detection is not None:
        scores.update(detection_iou=result.detection.iou, detection_ap=result.detection.ap)
    return {f"val/{name}": value for name, value in scores.items()}


def val_line(step: int, result: EvalResult) -> str:
    """The one line a validation prints: the model against the identity on the whole image and the blemishes,
    or that no --val pair could be decoded (the run goes on: its checkpoints do not depend on the scores)."""
    if result.num_samples == 0:
        return f"step {step} val: no --val pair could be decoded (each is named above); nothing scored"
    return (f"step {step} val ({result.num_samples} images): PSNR {result.psnr:.2f} dB (identity "
            f"{result.identity_psnr:.2f}), on blemishes {result.psnr_blemish:.2f} dB (identity "
            f"{result.identity_psnr_blemish:.2f})")
