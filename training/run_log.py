"""What a run leaves behind for people: a JSONL log, TensorBoard events, and image grids.

Named `run_log` so it never shadows the standard library's `logging`. Only rank 0 builds a `RunLog`
that writes; other ranks get one with `enabled=False`, which does nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from langbrt.atomic import atomic_write_text
from langbrt.errors import OutputWriteError
from langbrt.io import write_image

JSONL_FILE = "log.jsonl"
TENSORBOARD_DIR = "tensorboard"
SAMPLES_DIR = "samples"


class RunLog:
    """Append-only records of a run under `output`: log.jsonl, tensorboard/, samples/step_XXXXXX.png."""

    def __init__(self, output: Path, enabled: bool = True, tensorboard: bool = True,
                 resume_step: int | None = None) -> None:
        """`resume_step`: the run continues from that step, so records of later steps (written after the
        checkpoint by the interrupted run) are dropped, from log.jsonl and from TensorBoard's view."""
        self.output = Path(output)
        self.enabled = enabled
        self._writer: Any = None
        self._jsonl = None
        if not enabled:
            return
        (self.output / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            truncate_jsonl(self.output / JSONL_FILE, resume_step)
        self._jsonl = open(self.output / JSONL_FILE, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("note: the tensorboard package is not installed; logging to log.jsonl only "
                      "(pip install 'langbrt[train]' for TensorBoard)", file=sys.stderr)
            else:
                purge = None if resume_step is None else resume_step + 1  # hides events of later steps
                self._writer = SummaryWriter(str(self.output / TENSORBOARD_DIR), purge_step=purge)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One JSON line {"step": .., name: value, ...} and one TensorBoard scalar per value."""
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v))) for k, v in values.items()}
        try:
            self._jsonl.write(json.dumps({"step": step, **clean}) + "\n")
            self._jsonl.flush()
        except OSError as err:  # a full disk
            raise OutputWriteError(f"{self.output / JSONL_FILE}: cannot write file ({err.strerror or err})") from None
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(name, float(value), step)

    def image_grid(self, step: int, source: torch.Tensor, mask: torch.Tensor, output: torch.Tensor,
                   target: torch.Tensor, max_rows: int = 4) -> Path | None:
        """Write samples/step_XXXXXX.png: one row per image, input | detection map | output | target."""
        if not self.enabled:
            return None
        grid = make_grid(source, mask, output, target, max_rows)  # (3, rows*H, 4*W)
        path = write_image(self.output / SAMPLES_DIR / f"step_{step:06d}.png", grid)
        if self._writer is not None:
            self._writer.add_image("samples", grid, step)
        return path

    def close(self) -> None:
        if self._jsonl is not None:
            # Every line was flushed when written; a close that fails retries a write `scalars` already reported.
            with contextlib.suppress(OSError):
                self._jsonl.close()
            self._jsonl = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep the records of steps <= `last_step` (and drop a line cut short by a kill), atomically."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            step = json.loads(line)["step"]
        except (ValueError, RecursionError, KeyError, TypeError):  # ValueError: also a number of 4300+ digits
            continue
        if isinstance(step, int) and step <= last_step:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))


def make_grid(source: torch.Tensor, mask: torch.Tensor, output: torch.Tensor, target: torch.Tensor,
              max_rows: int = 4) -> torch.Tensor:
    """(B, 3, H, W) images and a (B, 1, H, W) map -> one (3, rows*H, 4*W) picture, rows = min(B, max_rows)."""
    rows = min(source.shape[0], max_rows)
    gray = mask[:rows].clamp(0, 1).expand(-1, 3, -1, -1)  # (rows, 3, H, W)
    columns = [source[:rows], gray, output[:rows], target[:rows]]  # each (rows, 3, H, W)
    row_images = torch.cat([c.detach().float().cpu() for c in columns], dim=3)  # (rows, 3, H, 4W)
    return torch.cat(list(row_images), dim=1)  # (3, rows*H, 4W)
