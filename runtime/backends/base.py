"""The one interface every inference backend implements, and the prompt plumbing they share.

A backend takes square model-size batches (the letterboxing lives in `runtime.preprocess`) and prompt
strings, and returns the retouched batch with one map per prompt of each image, in that image's order.
Backends differ only in what executes the network (eager torch, ONNX Runtime, a TensorRT engine), so
the retoucher, the CLIs and the tests can treat them alike and compare them numerically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from langbrt.checkpoint import SINGLE_FILE_SUFFIX
from langbrt.errors import CheckpointError, LangBRTInputError
from langbrt.pixel_values import scaled_float


class BackendName(str, Enum):
    """The backends `Retoucher.load` and the CLIs accept; AUTO picks by the model path."""

    AUTO = "auto"
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"


PRECISIONS = ("fp32", "fp16")
ENGINE_SUFFIXES = (".engine", ".plan")
ONNX_SUFFIXES = (".onnx",)


@dataclass
class BackendOutput:
    """One batch through a backend; K = the most prompts any image of the batch has (zero maps pad)."""

    image: torch.Tensor  # (B, 3, S, S) float32 in [0, 1]
    mask: torch.Tensor  # (B, 1, S, S) float32, 0 where the image is untouched
    maps: torch.Tensor  # (B, K, S, S) float32, each image's prompts in its order


@runtime_checkable
class Backend(Protocol):
    """What the retoucher needs from an executor of the LangBRT network."""

    name: str  # a `BackendName` value
    device: str  # "cpu", "cuda", "cuda:0", ...
    image_size: int  # S: the square input size the network was built or exported for

    @property
    def prompts(self) -> list[str]:
        """Normalised prompt texts this backend knows without a text encoder (pre-defined first)."""
        ...

    @property
    def predefined_prompts(self) -> list[str]:
        """The prompts used when the caller gives none."""
        ...

    def prepare_prompts(self, prompts: Sequence[Sequence[str]]) -> None:
        """Embed (and cache) prompts now, or raise LangBRTInputError if a batch of them could not run.

        Why: a CLI checks its prompts once, before it writes anything, rather than failing file by file
        after the model has run.
        """
        ...

    def run(self, images: torch.Tensor | np.ndarray, prompts: Sequence[Sequence[str]]) -> BackendOutput:
        """images (B, 3, S, S) in [0, 1]; prompts: one non-empty list of strings per image."""
        ...


def backend_for_path(path: str | Path) -> BackendName:
    """The backend `auto` means for `path`: a checkpoint (folder or .safetensors file) is torch, .onnx ONNX
    Runtime, .engine/.plan TensorRT."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise CheckpointError(f"{path}: no such model file or folder")
    if path.is_dir() or suffix == SINGLE_FILE_SUFFIX:
        return BackendName.TORCH
    if suffix in ONNX_SUFFIXES:
        return BackendName.ONNXRUNTIME
    if suffix in ENGINE_SUFFIXES:
        return BackendName.TENSORRT
    raise LangBRTInputError(
        f"{path}: cannot tell which backend loads this (expected a checkpoint folder or .safetensors file, "
        "a .onnx file, or a .engine/.plan TensorRT engine)"
    )


def concat_outputs(parts: Sequence[BackendOutput]) -> BackendOutput:
    """Batches run in pieces, joined back in order; each piece's maps are zero-padded to the widest K."""
    K = max(part.maps.shape[1] for part in parts)
    maps = [torch.nn.functional.pad(part.maps, (0, 0, 0, 0, 0, K - part.maps.shape[1])) for part in parts]
    return BackendOutput(image=torch.cat([part.image for part in parts]),  # (B, 3, S, S)
                         mask=torch.cat([part.mask for part in parts]),  # (B, 1, S, S)
                         maps=torch.cat(maps))  # (B, K, S, S)


def as_float_tensor(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Accept a tensor or an ndarray batch (B, 3, S, S); return a float32 tensor without copying if possible.

    Pixels follow the Retoucher's dtype rule (`scaled_float`): uint8 and uint16 are scaled to [0, 1], any other
    non-float dtype is refused, so every backend reads a batch alike (a uint8 batch was run as 0-255 floats,
    a white input, without a word). Float values are taken as given: `Retoucher.retouch` has checked them.
    An empty batch is refused here: the executors (torch's upsampling, ONNX Runtime, TensorRT profiles) each
    fail on B = 0 in their own words, and there is nothing to retouch (`Retoucher.retouch([])` returns []).
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise LangBRTInputError(f"images must be a (B, 3, S, S) tensor or array, got {type(images).__name__}; "
                                "Retoucher.retouch takes a list of photos")
    if images.ndim != 4 or images.shape[1] != 3:
        raise LangBRTInputError(f"images must be (B, 3, S, S), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise LangBRTInputError("images is an empty batch (B = 0): give at least one image")
    return scaled_float(images, "images")


def check_square(images: torch.Tensor, size: int) -> None:
    """Backends run the network's own size only; the retoucher letterboxes anything else to it."""
    if tuple(images.shape[-2:]) != (size, size):
        raise LangBRTInputError(
            f"backend input must be {size}x{size}, got {tuple(images.shape[-2:])}; "
            "use Retoucher for photos of any size"
        )
