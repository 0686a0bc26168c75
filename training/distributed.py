"""Many GPUs or nodes through `torchrun`: process-group setup, DDP wrapping and rank helpers.

Nothing home-made: `torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT, we join the
process group it describes (nccl on CUDA, gloo on CPU), wrap the trainable modules in
DistributedDataParallel, and let rank 0 alone write logs and checkpoints. Without those variables every
helper here is a no-op, so the same training loop runs on one CPU.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from langbrt.errors import LangBRTError
from langbrt.text.prompt_bank import PromptBank
from langbrt.training.train_config import DDP_TIMEOUT_S


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job; `world_size == 1` means plain single-process training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes logs, images and checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_distributed(device: str | None = None, timeout_s: float = DDP_TIMEOUT_S) -> DistInfo:
    """Join the torchrun process group if there is one; pick the device (CUDA if present, else CPU).

    Each process takes the GPU `LOCAL_RANK`; the backend follows the device because gloo cannot reduce
    CUDA tensors efficiently and nccl cannot reduce CPU tensors at all. `timeout_s` (`--ddp-timeout`): how long
    a collective waits for every rank before it fails, the same for both backends, explicit because their
    defaults differ (gloo 30 minutes, nccl 10 in torch 2.14) and a rank waiting out another's slow step (rank 0
    writing a checkpoint) must not end the job.
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if not launched_by_torchrun():
        return DistInfo(device=torch.device("cuda" if use_cuda else "cpu"))
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def wrap_ddp(module: nn.Module, info: DistInfo) -> nn.Module:
    """DDP-wrap `module` when distributed, else return it unchanged.

    Without `find_unused_parameters`: with it DDP walks the autograd graph every step to find parameters
    without a gradient, and warns on every rank when it finds none. Ours have none: the pre-defined prompts'
    psi_i reach every prompt vector through a one-hot product and the detection maps reach the loss through
    TCA's queries x(1-m) (tests/test_distributed.py trains each ablation under torchrun, where a parameter
    without a gradient would fail the second step).
    """
    if not info.enabled:
        return module
    device_ids = [info.local_rank] if info.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of `value` over all ranks (a copy); identity when not distributed."""
    if not info.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def all_ranks(ok: bool, info: DistInfo) -> bool:
    """`ok` on every rank (True alone when not distributed), so that all ranks stop together."""
    return float(all_reduce_mean(torch.tensor(float(ok), device=info.device), info)) == 1.0


def gather_to_rank_0(obj: Any, info: DistInfo) -> list[Any] | None:
    """Every rank's `obj` (picklable), in rank order, on rank 0; None on the others; `[obj]` when not
    distributed. A collective of every rank."""
    if not info.enabled:
        return [obj]
    gathered: list[Any] | None = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


@contextmanager
def warnings_of_rank_0(info: DistInfo) -> Iterator[None]:
    """Within the block, Python warnings show on rank 0 only (every rank when not distributed).

    For work every rank does alike (reading the flags, the data set's headers): its warnings said once per rank
    were the same line twice under 2 ranks ("skipping 1 image pair ..."), where a run says them once. Not for
    the loop, where a rank warns about the pair only it met.
    """
    if info.is_main:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def share_prompt_banks(bank: PromptBank, info: DistInfo) -> None:
    """Give every rank's prompt bank every prompt any rank has met, each with the embedding of the lowest rank
    that holds it; a collective of every rank, a no-op when not distributed.

    Why, before each checkpoint: each rank encodes the prompts of its own batches only, so rank 0's bank, which
    the checkpoint saves (and an export bakes in), lacked the prompts only the others had met (a 2-rank run's
    final/ held 17 prompts where one process on the same global batch held 20), and a resumed rank 1 then
    encoded its prompts again beside others, a few bits off its old embeddings: a two-rank resume was not
    bit-exact (1e-8). With every bank equal to the one saved, a resumed job starts where the job stood.
    """
    if not info.enabled:
        return
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, bank.state())
    merged: dict[str, torch.Tensor] = {}
    for texts, embeddings in gathered:  # rank order: the lowest rank's row of a prompt wins
        for text, row in zip(texts, embeddings, strict=True):
            merged.setdefault(text, row)
    if merged:
        bank.set_embeddings(list(merged), torch.stack(list(merged.values())))  # (N, dim)


@contextmanager
def fail_together(info: DistInfo) -> Iterator[None]:
    """Leave the block the same way on every rank: when any rank raised in it, every rank raises the error of
    the lowest such rank (the exception itself there, the same `LangBRTError` class and message elsewhere).

    Why: a check that rank 0 alone makes (OUTPUT, a checkpoint write) or whose answer differs between nodes (a
    folder missing on one) would otherwise end the failing rank while the others wait in their next collective,
    on another node until the process group's timeout. With one error everywhere the command says it once per
    node (`cli_click.stop`) and every rank exits with the same status. The block ends with collectives
    (`_first_failure`), so it must hold none itself: a rank that failed early would meet the others' collective
    with this one.
    Exceptions only: Ctrl-C reaches every rank by itself. Not distributed: a plain block.
    """
    if not info.enabled:
        yield
        return
    error: Exception | None = None
    try:
        yield
    except Exception as err:  # raised again below, on this rank and on every other
        error = err
    first = _first_failure(error, info)
    if first is None:
        return
    rank, kind, message = first
    if rank == info.rank and error is not None:
        raise error
    raise _same_error(kind, message, rank)


def _first_failure(error: Exception | None, info: DistInfo) -> tuple[int, type[LangBRTError] | str, str] | None:
    """(rank, class, message) of the lowest rank whose block raised, or None; a collective of every rank (one
    all-reduce of a flag, and the all-gather only when a rank failed).

    A `LangBRTError` travels as its class (importable, so it pickles by name); anything else, a bug, by the
    name of its class alone, which need not be importable on the other ranks."""
    failed = torch.tensor([float(error is not None)], device=info.device)
    dist.all_reduce(failed, op=dist.ReduceOp.MAX)  # one number when every rank did well: cheap enough per step
    if not failed.item():
        return None
    mine = None
    if error is not None:
        kind = type(error) if isinstance(error, LangBRTError) else type(error).__name__
        mine = (kind, str(error))
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, mine)
    return next(((rank, *failure) for rank, failure in enumerate(gathered) if failure is not None), None)


def _same_error(kind: type[LangBRTError] | str, message: str, rank: int) -> Exception:
    """Another rank's error, to raise here. A `LangBRTError` becomes one of its class with its message, built
    without calling its `__init__` (a subclass such as `ConfigValueError` takes other arguments), so that the
    command prints and exits as that rank does; a bug becomes a RuntimeError naming the rank that printed its
    traceback."""
    if isinstance(kind, str):
        return RuntimeError(f"rank {rank} failed with {kind}: {message}")
    error = kind.__new__(kind)
    error.args = (message,)
    return error


def cleanup(info: DistInfo, *, finished: bool = False) -> None:
    """Tear the process group down. `finished`: this rank ended training normally, so every rank did (or is
    about to): meet in a barrier first, so that no rank tears its connections down while a peer is still
    draining the last collective (a fail_together all-gather). Without it a gloo rank now and then aborted at
    exit ("terminate called without an active exception", pytorch/gloo#155) after a run that had succeeded.
    The group is torn down even when the barrier fails (a peer gone), whose error is raised after.
    """
    if info.enabled and dist.is_initialized():
        try:
            if finished:
                dist.barrier()
        finally:
            dist.destroy_process_group()
