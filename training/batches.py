"""The order in which each rank sees the training set, step by step, and how a sample's load error reaches
the training process.

Apart from the loop (`trainer.py`) because this is the part resume depends on: batch N of a run is the same
images whether the run was resumed, uninterrupted, or spread over any number of ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from langbrt.errors import LangBRTError, LangBRTInputError
from langbrt.training.data.pair_discovery import plural
from langbrt.training.distributed import DistInfo
from langbrt.training.train_config import TrainConfig


def _sampler(dataset: Dataset, cfg: TrainConfig, info: DistInfo) -> DistributedSampler:
    return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed,
                              drop_last=True)


def batches_per_epoch(dataset: Dataset, cfg: TrainConfig, info: DistInfo) -> int:
    """Full batches each rank gets per epoch; a set smaller than one batch on every rank is the user's error,
    raised by `_train` before OUTPUT is created (the `batches` generator only runs at the first step)."""
    per_epoch = len(_sampler(dataset, cfg, info)) // cfg.batch_size
    if per_epoch == 0:
        # Under torchrun with --batch-size 1 already, fewer processes are the only cure (QA: it said "lower
        # --batch-size" to a 1-pair folder on 2 ranks at batch 1).
        cures = [cure for cure, possible in (("lower --batch-size", cfg.batch_size > 1),
                                             ("run fewer processes (torchrun --nproc-per-node)", info.world_size > 1))
                 if possible]
        raise LangBRTInputError(f"the training set has {plural(len(dataset), 'sample', 'samples')}, fewer than one "
                                f"batch of {cfg.batch_size} x {info.world_size} process(es); {' or '.join(cures)}")
    return per_epoch


def batches(dataset: Dataset, collate: Callable, base: Any, cfg: TrainConfig, info: DistInfo,
            start_step: int) -> Iterator[dict[str, Any]]:
    """Endless per-rank batches; batch `start_step` onwards of the seeded order (what resume needs).

    The order is DistributedSampler's (seed, epoch) permutation, so a resumed run, a fresh run and any
    number of ranks agree on which images make up step N. Incomplete last batches are dropped. Closing the
    generator releases the epoch's DataLoader, which stops its worker processes.
    """
    sampler = _sampler(dataset, cfg, info)
    per_epoch = batches_per_epoch(dataset, cfg, info)
    epoch, offset = divmod(start_step, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        if hasattr(base, "set_epoch"):
            base.set_epoch(epoch)
        indices = list(sampler)[offset * cfg.batch_size: per_epoch * cfg.batch_size]
        # Its own generator: a DataLoader iterator otherwise draws its worker seed from the global RNG, at a
        # moment that differs between a resumed and an uninterrupted run.
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        for batch in DataLoader(_ErrorsAsData(dataset), batch_size=cfg.batch_size, sampler=indices,
                                collate_fn=partial(_collate_or_carry, collate), num_workers=cfg.num_workers,
                                drop_last=True, generator=generator):
            if isinstance(batch, _CarriedError):
                raise batch.rebuild()
            yield batch
        epoch, offset = epoch + 1, 0


@dataclass(frozen=True)
class _CarriedError:
    """A `LangBRTError` raised while loading a sample, as data: its class and message."""

    kind: type[LangBRTError]
    message: str

    def rebuild(self) -> LangBRTError:
        """The error again, built without its `__init__` (`UnusableImageError` takes a path too)."""
        error = self.kind.__new__(self.kind)
        error.args = (self.message,)
        return error


class _ErrorsAsData(Dataset):
    """`dataset` whose samples' `LangBRTError` (a corrupt image with --strict) comes back as a `_CarriedError`
    batch, raised again by `batches` in the training process.

    Why: from a DataLoader worker (--num-workers > 0) the error arrived as torch's RuntimeError("Caught
    UnusableImageError in DataLoader worker process 0. Original Traceback ..."), the worker's traceback printed
    where one `langbrt-train: error:` line belongs (QA, 2026-11-26)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except LangBRTError as err:
            return _CarriedError(type(err), str(err))


def _collate_or_carry(collate: Callable, samples: list[Any]) -> Any:
    """`collate(samples)`, or the first sample's carried error (a module-level function: workers pickle it)."""
    carried = next((s for s in samples if isinstance(s, _CarriedError)), None)
    return carried if carried is not None else collate(samples)
