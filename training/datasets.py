"""The data sets a run trains on and the tools score on: synthetic, a paired folder or FFHQR, by `TrainConfig`.

Its own file so that training (`trainer.py`), its held-out validation (`validation.py`) and `langbrt-eval`
read data through one function without importing each other.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Sequence
from typing import Any

from torch.utils.data import Dataset, Subset

from langbrt.errors import LangBRTInputError
from langbrt.training.data.ffhqr import FFHQR_NAMES_HINT, ffhqr_names, find_ffhqr_pairs
from langbrt.training.data.pair_alignment import check_alignment, misaligned_message
from langbrt.training.data.pair_discovery import ImagePair, find_pairs, format_offenders, plural
from langbrt.training.data.pair_prompts import find_prompts_file, read_pair_prompts
from langbrt.training.data.paired import DEFAULT_REAL_PROMPTS, PairedImageDataset, collate_pairs
from langbrt.training.data.subset import select_fraction
from langbrt.training.train_config import FFHQR, SYNTHETIC, TrainConfig


def build_dataset(cfg: TrainConfig, image_size: int, split: str = "train",
                  length: int | None = None, *, evaluation: bool = False) -> tuple[Dataset, Callable, Any]:
    """(dataset, collate_fn, base dataset) for `cfg.data`; the base receives `set_epoch` for its flips.

    `--fraction` selects a seeded, nested subset (the paper's 1/5/10/20/100% regimes) of the training split.
    `evaluation`: a paired pair that fails to decode is dropped, not replaced by the next one (whatever the
    split), so every pair is scored once or not at all.
    """
    train = split == "train"
    if cfg.data == SYNTHETIC:
        from langbrt.training.data.real_face import RealFaceBase
        from langbrt.training.data.synthetic import SyntheticBlemishDataset, collate_synthetic

        n = length if length is not None else cfg.synthetic_length
        bases = tuple(RealFaceBase.from_regions_file(path) for path in cfg.real_faces)
        base: Any = SyntheticBlemishDataset(n, image_size=image_size, seed=cfg.seed, split=split,
                                            flip=cfg.flip and train, bases=bases,
                                            real_fraction=cfg.real_fraction if bases else 0.0)
        collate: Callable = collate_synthetic
    else:
        if cfg.data == FFHQR:
            pairs: Any = find_ffhqr_pairs(cfg.ffhqr_root, cfg.ffhqr_target_root, split=split)
        else:
            pairs = find_pairs(cfg.data)
        base = PairedImageDataset(pairs, image_size=image_size, strict=cfg.strict, flip=cfg.flip and train,
                                  seed=cfg.seed, prompts=cfg.prompts or DEFAULT_REAL_PROMPTS,
                                  substitute=not evaluation, pair_prompts=pair_prompts(cfg, pairs))
        base.validate()  # drops (and counts) corrupt pairs, or raises with --strict
        collate = collate_pairs
    dataset: Dataset = base
    if train and cfg.fraction < 1.0:
        dataset = Subset(base, select_fraction(len(base), cfg.fraction, cfg.seed))
    return dataset, collate, base


def check_learned_prompts(base: Any, learned: Collection[str]) -> None:
    """A model without a text encoder (--ablation no-prior: `learned` is every prompt it has a vector for, those
    the synthetic set draws) must be able to answer every prompt a real pair asks (--prompt, prompts.json).

    Why up front: at step 1 its error left an empty log.jsonl in OUTPUT, which then refused the corrected rerun.
    """
    if not learned or not isinstance(base, PairedImageDataset):
        return
    unknown = sorted(base.prompt_texts() - set(learned))
    if unknown:
        raise LangBRTInputError(
            f"--ablation no-prior has no text encoder, only a vector for each prompt of the synthetic set, and the "
            f"real pairs ask {plural(len(unknown), 'prompt', 'prompts')} it lacks {format_offenders(unknown)}: give "
            f"--prompt / prompts.json prompts the synthetic set draws (such as {DEFAULT_REAL_PROMPTS[0]!r}), or "
            "train another --ablation")


def pair_prompts(cfg: TrainConfig, pairs: Sequence[ImagePair]) -> dict[str, tuple[str, ...]]:
    """The per-pair prompts of the data root's prompts.json ({} without one), checked against the pairs it may
    name: the folder's, or for FFHQR (file at --ffhqr-root) any FFHQ id, since one file serves every split."""
    if cfg.data == FFHQR:
        path = find_prompts_file(cfg.ffhqr_root)
        return read_pair_prompts(path, ffhqr_names(), FFHQR_NAMES_HINT) if path else {}
    path = find_prompts_file(cfg.data)
    return read_pair_prompts(path, {pair.name for pair in pairs}) if path else {}


def check_alignment_of(dataset: Dataset, cfg: TrainConfig) -> None:
    """One warning naming the pairs of `dataset` whose target does not keep its source's framing (shifted,
    rescaled, mirrored, another photo; see `pair_alignment`), or with `cfg.strict_pairs` that line as a
    `LangBRTInputError`. Nothing for the synthetic set, aligned by construction.

    Why a warning by default: the pairs still decode and train, and a set with one odd pair is better trained
    on than refused; the user decides.
    """
    pairs = pairs_of(dataset)
    if not pairs:
        return
    where = cfg.ffhqr_root if cfg.data == FFHQR else cfg.data
    message = misaligned_message(check_alignment(pairs, read=_paired_base(dataset).read_full), len(pairs),
                                 str(where))
    if message is None:
        return
    if cfg.strict_pairs:
        raise LangBRTInputError(message)
    warnings.warn(message, stacklevel=2)


def pairs_of(dataset: Dataset) -> list[ImagePair]:
    """The image pairs `dataset` reads, in order, through any `Subset`s; none for the synthetic set."""
    if isinstance(dataset, Subset):
        pairs = pairs_of(dataset.dataset)
        return [pairs[i] for i in dataset.indices] if pairs else []  # a subset of the synthetic set: none
    return list(dataset.pairs) if isinstance(dataset, PairedImageDataset) else []


def _paired_base(dataset: Dataset) -> PairedImageDataset:
    """The `PairedImageDataset` under `dataset`'s `Subset`s (the caller knows there is one)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    assert isinstance(dataset, PairedImageDataset), type(dataset)
    return dataset
