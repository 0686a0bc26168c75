"""How a training run stops mid-way: the errors `langbrt-train` turns into one line, each naming what to do next.

Apart from the loop (`trainer.py`) so that it reads as steps, not as message building. Every stop names the
checkpoint to resume from (or says there is none yet): a run of hours must never end in "something failed".
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from langbrt.errors import LangBRTError, OutputWriteError


class TrainingDiverged(LangBRTError):
    """The loss became NaN or inf; the message names the step and the last good checkpoint."""


class OutputNotWritten(OutputWriteError):
    """A checkpoint, log line or sample grid could not be written mid-run (a full disk, a folder made
    unwritable); the message names it and the checkpoint to resume from. An `OutputWriteError`, so that
    `langbrt-train` exits with `EXIT_OUTPUT_NOT_WRITTEN`: the command was right, and after making room it
    continues with --resume."""


class RankLost(LangBRTError):
    """Under torchrun, another process of the job ended mid-run (killed, out of memory) and this rank's next
    collective failed; the message names the checkpoint to resume from. `langbrt-train` exits 1 with it."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during the loop; still a KeyboardInterrupt, its message names the checkpoint to resume from."""


def diverged(what: str, last_ckpt: Path | None) -> TrainingDiverged:
    """The error for a non-finite loss or checkpoint: a lower --lr is the usual cure, from the last good
    checkpoint if there is one."""
    if last_ckpt is None:
        then = "no checkpoint was written yet; start again with a lower --lr"
    else:
        then = f"last good checkpoint: {last_ckpt}; resume from it with --resume and a lower --lr"
    return TrainingDiverged(f"{what}; stopping ({then})")


def stopped_message(done: int | None, last_ckpt: Path | None) -> str:
    """What a stopped run (Ctrl-C, a lost rank) says: the steps done (None: it stopped setting up, before its
    first step) and the command part that continues it, shell-quoted so that it can be pasted."""
    when = "stopped before the first training step" if done is None else f"stopped after step {done}"
    if last_ckpt is None:
        return f"{when}; no checkpoint was written yet"
    return f"{when}; continue with --resume {shlex.quote(str(last_ckpt))} (the last complete checkpoint)"


def rank_lost(err: RuntimeError, done: int | None, last_ckpt: Path | None) -> RankLost | None:
    """`RankLost` if `err` is a collective that failed because a peer is gone, else None (`err` is a bug).

    QA, 2026-11-26: a rank killed mid-run gave the others gloo's 40-line traceback. A peer is gone when torch
    raises its DistError (nccl's watchdog) or gloo its plain RuntimeError
    ("[.../gloo/transport/tcp/pair.cc:561] Connection closed by peer ...")."""
    if not _peer_gone(err):
        return None
    return RankLost(f"another process of the job stopped ({_first_sentence(err)}); {stopped_message(done, last_ckpt)}")


def lost_after_the_end(err: RuntimeError, final_dir: Path) -> str | None:
    """The warning for a collective that failed because a peer is gone after `final_dir` was saved, else None.

    QA: a rank that died between writing final/ and the closing barrier left rank 0 gloo's traceback and exit
    status 1 for a run whose weights were complete; what was left undone (the last validation's scores, the
    barrier) loses nothing a user needs, so the command says so and succeeds."""
    if not _peer_gone(err):
        return None
    return (f"another process of the job stopped after the run finished ({_first_sentence(err)}); the run is "
            f"complete: {final_dir}")


def _peer_gone(err: RuntimeError) -> bool:
    """A peer is gone when torch raises its DistError (nccl's watchdog) or gloo its plain RuntimeError."""
    return isinstance(err, torch.distributed.DistError) or "/gloo/" in str(err)


def _first_sentence(err: Exception) -> str:
    """gloo's message without its '[file:line]' prefix and its advice: 'Connection closed by peer [host]:port'."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", " ".join(str(err).split()))
    return text.split(". ")[0].rstrip(".")


@contextmanager
def run_output_written(last_ckpt: Path | None) -> Iterator[None]:
    """Around one write of the run's output: its error (one line naming the file) becomes `OutputNotWritten`,
    which adds the checkpoint to resume from."""
    try:
        yield
    except LangBRTError as err:
        if last_ckpt is None:
            then = "no checkpoint was written yet; make room and start again"
        else:
            then = (f"make room, then continue with --resume {shlex.quote(str(last_ckpt))} (the last complete "
                    "checkpoint)")
        raise OutputNotWritten(f"{err}; {then}") from None
