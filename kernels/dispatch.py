"""One entry point for the TCA attention; the implementation behind it is chosen per call.

`LANGBRT_ATTENTION=triton|reference|auto` (default auto) overrides the caller's choice. `auto` runs the
fused Triton kernel on CUDA tensors and the PyTorch reference elsewhere. `triton` on a CPU tensor runs
the kernel in Triton's interpreter, which only works with `TRITON_INTERPRET=1` set before triton is
imported: that is how CPU tests compare the kernel with the reference. `plugin-node` is for ONNX export
only: the reference maths, traced as one TensorRT plugin node (`plugin_node.py`).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from enum import Enum
from typing import TypeVar

import torch

from langbrt.errors import LangBRTInputError

from .reference import TCAParams, windowed_sigmoid_cross_attention_reference

ENV_VAR = "LANGBRT_ATTENTION"
# The largest window the fused kernels take. They hold a window's (w*w, w*w) scores, padded to a power of two,
# on chip, so the shared memory a build needs grows with the window (sm_80 / sm_90 builds, triton 3.8,
# `benchmarks/kernel_resources.py --windows`): up to w = 16 (256 tokens) both kernels fit 99 KB per block,
# which every GPU from sm_80 on gives; w = 17-22 (512 tokens) take up to 193 KB, past an A100's 163 KB and
# sm_86 / sm_89's 99 KB; w = 23-32 (1 024 tokens) take 229 KB (folded) and 385 KB (direct), past even an
# H100's 227 KB, so `auto` picked a kernel that Triton then refused to launch (OutOfResources). Past w = 32
# Triton cannot build them at all (a tensor over 2**20 elements). Wider windows run the reference; the
# config allows up to 64 (MAX_SIZES).
MAX_KERNEL_WINDOW = 16
E = TypeVar("E", bound=Enum)


class AttentionImpl(str, Enum):
    AUTO = "auto"
    TRITON = "triton"
    REFERENCE = "reference"
    PLUGIN_NODE = "plugin-node"


@contextlib.contextmanager
def environ_set(variable: str, value: str) -> Iterator[None]:
    """`variable` = `value` in the process environment for the duration, then as it was (unset included).
    Not thread-safe by itself: the environment is process-wide."""
    previous = os.environ.get(variable)
    os.environ[variable] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[variable]
        else:
            os.environ[variable] = previous


def choice_from_env(variable: str, choices: type[E], default: E) -> E:
    """The member of `choices` named by environment `variable`, else `default`; a bad value is one clear error."""
    raw = os.environ.get(variable, "").strip().lower() or default.value
    try:
        return choices(raw)
    except ValueError:
        names = ", ".join(c.value for c in choices)
        raise LangBRTInputError(f"{variable}={raw!r} is not one of: {names}") from None


def requested_impl(configured: str | AttentionImpl = AttentionImpl.AUTO) -> AttentionImpl:
    """The implementation asked for: the environment variable if set, else the configured one."""
    return choice_from_env(ENV_VAR, AttentionImpl, AttentionImpl(configured))


def cuda_device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """`device` made the current CUDA device for the block, a no-op off CUDA. Why: Triton launches, streams
    and graph captures use the current device, which is GPU 0 in a thread that never chose one."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


@functools.cache
def triton_available() -> bool:
    """True when the triton package imports (it is absent on macOS/Windows and on non-x86 Linux); asked once,
    since GroupNorm asks on every inference call and a failed import searches the path each time."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_impl(configured: str | AttentionImpl, device: torch.device,
                 window_size: int | None = None) -> AttentionImpl:
    """The implementation a call on `device` (with windows of `window_size`, if given) will run: never AUTO.
    AUTO runs the reference for a window wider than the kernels take (`MAX_KERNEL_WINDOW`)."""
    impl = requested_impl(configured)
    if impl is AttentionImpl.AUTO:
        fits = window_size is None or window_size <= MAX_KERNEL_WINDOW
        use_triton = device.type == "cuda" and fits and triton_available()
        return AttentionImpl.TRITON if use_triton else AttentionImpl.REFERENCE
    if impl is AttentionImpl.TRITON and not triton_available():
        raise LangBRTInputError(f"the Triton TCA kernel was asked for ({ENV_VAR} or the model config) but the "
                                f"triton package is not installed; set {ENV_VAR}=reference or auto")
    return impl


def check_impl_runs(configured: str | AttentionImpl, device: torch.device) -> None:
    """Raise LangBRTInputError now when the implementation asked for cannot run on `device`.

    Why: a loader calls this once, so `LANGBRT_ATTENTION=triton` on a CPU-only machine (or a kernel / MMA path
    pair the kernels refuse) is one error line at start-up instead of the same error for every image a
    command processes.
    """
    if resolve_impl(configured, device) is AttentionImpl.TRITON:
        from .tca_choices import check_device, kernel_choice, mma_choice, sigmoid_choice

        mma_choice(kernel_choice())  # LANGBRT_TCA_KERNEL / LANGBRT_TCA_MMA: a bad value or pair, now
        sigmoid_choice()  # LANGBRT_TCA_SIGMOID: a bad value, now
        if device.type != "cuda":
            check_device(device)


def windowed_sigmoid_cross_attention(
    x: torch.Tensor,
    map_features: torch.Tensor,
    params: TCAParams,
    num_heads: int,
    window_size: int,
    shift: int,
    impl: str | AttentionImpl = AttentionImpl.AUTO,
) -> torch.Tensor:
    """TCA attention (see `reference.py` for the maths): x (B, H, W, C), map_features (B, H, W, Cm)."""
    chosen = resolve_impl(impl, x.device, window_size)
    if chosen is AttentionImpl.TRITON:
        from .tca_triton import windowed_sigmoid_cross_attention_triton

        return windowed_sigmoid_cross_attention_triton(x, map_features, params, num_heads, window_size, shift)
    if chosen is AttentionImpl.PLUGIN_NODE:
        from .plugin_node import windowed_sigmoid_cross_attention_plugin_node

        return windowed_sigmoid_cross_attention_plugin_node(x, map_features, params, num_heads, window_size, shift)
    return windowed_sigmoid_cross_attention_reference(x, map_features, params, num_heads, window_size, shift)
