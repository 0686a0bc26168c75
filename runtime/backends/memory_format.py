"""The memory format the torch backend runs the network in: the LANGBRT_MEMORY_FORMAT switch.

Kept apart from `torch_backend` so the loaders and `langbrt-bench` can check a user's value before any
model loads (one error line, as for the other LANGBRT_* switches), without importing the model code.
"""

from __future__ import annotations

from enum import Enum

import torch

from langbrt.kernels.dispatch import choice_from_env

MEMORY_FORMAT_ENV_VAR = "LANGBRT_MEMORY_FORMAT"


class MemoryFormat(str, Enum):
    """How the torch backend lays out the model's 4-D weights and the input batch (LANGBRT_MEMORY_FORMAT).

    CONTIGUOUS: NCHW, as the model is built and trained.
    CHANNELS_LAST: NHWC. On CPU PyTorch's convolutions (oneDNN) skip their layout reorders: the paper-size
    model ran 624-709 ms per batch-1 call against NCHW's 814-850, 2.6-2.9 s per batch of 4 against 3.5-3.8
    (2-core dev box, `langbrt-bench`, three runs, 2026-11-27; benchmarks/results/bench-cpu-paper-*-devbox-
    2026-11-27.json). On CUDA cuDNN's NCHW<->NHWC transposes go and the fused
    GroupNorm takes its NHWC kernels: one paper-preset fp16 batch-8 forward on an H100 took 10.4 ms median
    against NCHW's 12.0 (`benchmarks/profile_forward.py --channels-last`, 2026-11-27), but the backend itself
    (batch-1 CUDA graphs, host copies) has not been timed both ways there.
    AUTO (default): CHANNELS_LAST on CPU, CONTIGUOUS elsewhere until a GPU session has timed `langbrt-bench`
    both ways (`resolve`).
    Either way the backend hands back NCHW-contiguous outputs.
    """

    AUTO = "auto"
    CONTIGUOUS = "contiguous"
    CHANNELS_LAST = "channels_last"

    def resolve(self, device: torch.device) -> MemoryFormat:
        """The concrete format for a backend on `device`: AUTO decided, the others as they are."""
        if self is not MemoryFormat.AUTO:
            return self
        return MemoryFormat.CHANNELS_LAST if device.type == "cpu" else MemoryFormat.CONTIGUOUS

    @property
    def torch_format(self) -> torch.memory_format:
        assert self is not MemoryFormat.AUTO, "resolve(device) first"
        return torch.channels_last if self is MemoryFormat.CHANNELS_LAST else torch.contiguous_format


DEFAULT_MEMORY_FORMAT = MemoryFormat.AUTO


def memory_format_choice() -> MemoryFormat:
    """The format from LANGBRT_MEMORY_FORMAT (default DEFAULT_MEMORY_FORMAT); a bad value is one clear error."""
    return choice_from_env(MEMORY_FORMAT_ENV_VAR, MemoryFormat, DEFAULT_MEMORY_FORMAT)
