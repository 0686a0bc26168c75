"""Which device a command runs on: the name a user typed, checked against this machine once, in one line."""

from __future__ import annotations

import torch

from langbrt.errors import LangBRTInputError


def default_device() -> str:
    """cuda where PyTorch sees a GPU, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def require_device(name: str) -> torch.device:
    """`name` ("cpu", "cuda", "cuda:1") as a torch.device, or one LangBRTInputError line naming what this machine
    lacks. Why here: otherwise the first tensor moved there fails, deep inside a model load, in a traceback."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise LangBRTInputError(f"--device {name}: not a device ({err}); use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":  # mps, xpu, meta: PyTorch names them, but LangBRT's kernels and tests are CPU/CUDA
        raise LangBRTInputError(f"--device {name}: LangBRT runs on cpu, cuda or cuda:N, not {device.type}")
    if not torch.cuda.is_available():
        raise LangBRTInputError(f"--device {name}: PyTorch sees no CUDA GPU on this machine; use --device cpu")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        which = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise LangBRTInputError(f"--device {name}: this machine has {count} CUDA GPU{'s' * (count != 1)} ({which})")
    return device
