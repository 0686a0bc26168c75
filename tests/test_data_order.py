"""What each process trains on under torchrun, checked without starting one: a global batch is the same samples
at every step however it is spread over processes, and what a run says when that changes or cannot be."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from langbrt.errors import LangBRTInputError
from langbrt.training.batches import batches, batches_per_epoch
from langbrt.training.distributed import DistInfo
from langbrt.training.train_config import TrainConfig
from langbrt.training.train_state import warn_if_resume_differs


class _Indices(Dataset):
    """Sample i is the number i: a batch says which samples it holds."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


def _global_batches(n: int, world_size: int, batch_size: int, steps: int) -> list[set[int]]:
    """The samples of each step's global batch, every rank's batch of that step together."""
    cfg = TrainConfig(batch_size=batch_size, seed=3)
    streams = [batches(_Indices(n), lambda s: torch.tensor(s), None, cfg, DistInfo(rank, world_size), 0)
               for rank in range(world_size)]
    return [set().union(*(next(stream).tolist() for stream in streams)) for _ in range(steps)]


def test_the_same_global_batch_is_the_same_samples_at_every_step_however_it_is_split():
    """Over three epochs of a set that no split divides evenly (what `warn_if_resume_differs` relies on)."""
    one = _global_batches(11, world_size=1, batch_size=4, steps=6)
    assert _global_batches(11, world_size=2, batch_size=2, steps=6) == one
    assert _global_batches(11, world_size=4, batch_size=1, steps=6) == one
    assert all(len(step) == 4 for step in one)
    assert one[0] | one[1] != one[2] | one[3]  # a new order each epoch (11 // 4 = 2 steps per epoch)


def test_fewer_samples_than_processes_at_batch_1_asks_for_fewer_processes():
    """QA: a 1-pair folder on 2 ranks at --batch-size 1 was told to "lower --batch-size"."""
    with pytest.raises(LangBRTInputError) as caught:
        batches_per_epoch(_Indices(1), TrainConfig(batch_size=1), DistInfo(rank=0, world_size=2))
    assert str(caught.value) == ("the training set has 1 sample, fewer than one batch of 1 x 2 process(es); "
                                 "run fewer processes (torchrun --nproc-per-node)")


def test_resume_on_another_split_of_the_same_global_batch_says_the_batch_is_kept():
    """QA: a 2 x 2 run resumed on one process with --batch-size 4 was told its global batch changed."""
    state = {"data_order": {"world_size": 2, "batch_size": 2, "seed": 0}}
    with pytest.warns(UserWarning) as said:
        warn_if_resume_differs(state, TrainConfig(batch_size=4), DistInfo(), Path("ckpt"), None)
    assert [str(w.message) for w in said] == [
        "ckpt was trained with 2 process(es) x batch 2, this run uses 1 x 4: the same global batch of 4, the same "
        "samples at every step, spread otherwise: it continues as before up to float rounding, not bit for bit"]
    with pytest.warns(UserWarning, match="the data order and the global batch change"):
        warn_if_resume_differs(state, TrainConfig(batch_size=2), DistInfo(), Path("ckpt"), None)
