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

    CONTIGUOUS (default): NCHW, as the model is built and trained.
    CHANNELS_LAST: NHWC. cuDNN's NCHW<->NHWC transposes around each convolution go, and the fused GroupNorm
    takes its NHWC kernels: one paper-preset fp16 batch-8 forward on an H100 took 10.4 ms median against
    NCHW's 12.0 (`benchmarks/profile_forward.py --channels-last`, 2026-11-27). Opt-in until a GPU session has
    timed the backend itself (batch-1 CUDA graphs, host copies) both ways with `langbrt-bench`.
    Either way the backend hands back NCHW-contiguous outputs.
    """

    CONTIGUOUS = "contiguous"
    CHANNELS_LAST = "channels_last"

    @property
    def torch_format(self) -> torch.memory_format:
        return torch.channels_last if self is MemoryFormat.CHANNELS_LAST else torch.contiguous_format


DEFAULT_MEMORY_FORMAT = MemoryFormat.CONTIGUOUS


def memory_format_choice() -> MemoryFormat:
    """The format from LANGBRT_MEMORY_FORMAT (default DEFAULT_MEMORY_FORMAT); a bad value is one clear error."""
    return choice_from_env(MEMORY_FORMAT_ENV_VAR, MemoryFormat, DEFAULT_MEMORY_FORMAT)
