"""`Retoucher`: photos of any size + prompts in, full-resolution retouched photos and maps out.

It is the one place that joins a backend (which only knows S x S batches) to real photos: letterbox,
batch, run, paste back (see `preprocess`). Servers and the CLIs use it; so can a notebook:

    r = Retoucher.load("runs/langbrt/final")           # or model.onnx, model.engine
    [res] = r.retouch([load_image("me.jpg")], ["acne on the cheeks"])
"""

from __future__ import annotations

import numbers
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from langbrt.bundled import default_model_path
from langbrt.errors import LangBRTInputError
from langbrt.io import LoadedImage
from langbrt.pixel_values import unit_float
from langbrt.text.prompts import normalize_prompt_lists

from .backends import Backend, load_backend
from .preprocess import letterbox, paste_back, upsample_maps

DEFAULT_BATCH_SIZE = 8

PromptsArg = Sequence[Sequence[str]] | Sequence[str] | None


@dataclass
class RetouchResult:
    """One photo after retouching, at its original resolution."""

    image: torch.Tensor  # (3, H, W) float32 in [0, 1]; identical to the input wherever mask == 0
    mask: torch.Tensor  # (1, H, W) combined map: where anything was changed
    maps: torch.Tensor  # (K, H, W) one map per prompt, in `prompts` order
    prompts: list[str]  # normalised prompt texts
    timing: dict[str, float] = field(default_factory=dict)  # ms: preprocess, model, postprocess, total


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class Retoucher:
    """A loaded backend plus the letterbox/paste-back around it."""

    def __init__(self, backend: Backend, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        # bool is an int to Python; 1.5 would fail later in range(), '8' or None in the comparison (TypeError)
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise LangBRTInputError(f"batch size must be a whole number >= 1, got {batch_size!r}")
        self.backend = backend
        self.batch_size = int(batch_size)

    @classmethod
    def load(cls, path: str | Path | None = None, backend: str = "auto", device: str | None = None,
             precision: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> Retoucher:
        """Open a checkpoint folder or .safetensors file (torch), .onnx (onnxruntime) or .engine/.plan (tensorrt).

        `path=None` opens the model bundled with the package.

        `precision=None` means fp32 for checkpoints and the artifact's own precision for exports.
        """
        path = default_model_path() if path is None else path
        return cls(load_backend(str(path), backend, device, precision), batch_size)

    @property
    def image_size(self) -> int:
        return self.backend.image_size

    @property
    def prompts(self) -> list[str]:
        """Prompts the model knows without a text encoder."""
        return self.backend.prompts

    @property
    def device(self) -> str:
        """Where the backend runs the network ("cpu", "cuda", ...)."""
        return self.backend.device

    @property
    def predefined_prompts(self) -> list[str]:
        return self.backend.predefined_prompts

    def resolve_prompts(self, prompts: PromptsArg, count: int) -> list[list[str]]:
        """None -> the pre-defined prompts; a list of strings -> the same for every image; else per image (an
        image's None: its pre-defined prompts)."""
        if isinstance(prompts, str | bytes | bytearray):  # iterating would make each character a prompt
            fix = f"pass [{prompts!r}]" if isinstance(prompts, str) else "decode it to str and pass it in a list"
            raise LangBRTInputError(f"prompts must be a list of strings, got a bare {type(prompts).__name__}; {fix}")
        if prompts is not None and not isinstance(prompts, Sequence):  # a generator, a set, a number
            if not isinstance(prompts, Iterable):
                raise LangBRTInputError(f"prompts must be a list of strings or one list per image, got "
                                        f"{type(prompts).__name__}: {prompts!r}")
            prompts = list(prompts)
        if prompts is not None and len(prompts) == 0 and count > 0:  # was "got 0 prompt lists for 1 images"
            raise LangBRTInputError("prompts is an empty list: give at least one prompt, or None for the model's "
                                    "pre-defined ones")
        if prompts is None:
            lists: Sequence[Sequence[str]] = [self.predefined_prompts] * count
        elif len(prompts) > 0 and all(isinstance(p, str) for p in prompts):
            lists = [list(prompts)] * count  # type: ignore[list-item]
        else:  # one entry per image; None there is that image's pre-defined prompts, as for a server request
            lists = [self.predefined_prompts if p is None else p for p in prompts]  # type: ignore[misc]
        return normalize_prompt_lists(lists, count)

    def check_prompts(self, prompts: PromptsArg, count: int = 1) -> list[list[str]]:
        """`resolve_prompts`, then have the backend embed them: raises LangBRTInputError now for prompts
        it could not run (no text encoder for a new prompt, more new prompts than an export's slots)."""
        lists = self.resolve_prompts(prompts, count)
        self.backend.prepare_prompts(lists)
        return lists

    def retouch(self, images: Sequence[LoadedImage | torch.Tensor], prompts: PromptsArg = None) -> list[RetouchResult]:
        """Retouch photos of any sizes; results come back in input order at each photo's own resolution."""
        if isinstance(images, LoadedImage | str | os.PathLike) or (isinstance(images, torch.Tensor)
                                                                  and images.ndim != 4):
            # One photo, not a list of them: iterating it would give rows or characters, and a misleading error.
            what = (f"a tensor of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor)
                    else f"one {type(images).__name__}")
            raise LangBRTInputError(f"images must be a list of photos (or a (B, 3, H, W) batch), got {what}; "
                                    "for one photo: retouch([photo], prompts)")
        rgbs = [_as_rgb(image, i) for i, image in enumerate(images)]
        lists = self.resolve_prompts(prompts, len(rgbs))
        for own in dict.fromkeys(tuple(p) for p in lists):  # a photo whose own prompts cannot run: before any work
            self.backend.prepare_prompts([list(own)])
        results: list[RetouchResult] = []
        for start in range(0, len(rgbs), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            results += self._retouch_fitting(rgbs[chunk], lists[chunk])
        return results

    def _retouch_fitting(self, rgbs: list[torch.Tensor], prompts: list[list[str]]) -> list[RetouchResult]:
        """`_retouch_batch`, in halves while the backend refuses the batch's prompts together.

        Why: an export's extra prompt slots are shared by one call, so photos that each fit could fail as the
        batch this retoucher formed of them (QA: 3 photos with one new prompt each, 2 slots); as the server's
        batcher does, a batch is split until it fits (`retouch` checked that each photo's prompts do).
        """
        if len(rgbs) > 1:
            try:
                self.backend.prepare_prompts(prompts)
            except LangBRTInputError:
                half = len(rgbs) // 2
                return (self._retouch_fitting(rgbs[:half], prompts[:half])
                        + self._retouch_fitting(rgbs[half:], prompts[half:]))
        return self._retouch_batch(rgbs, prompts)

    def _retouch_batch(self, rgbs: list[torch.Tensor], prompts: list[list[str]]) -> list[RetouchResult]:
        t0 = time.perf_counter()
        boxed = [letterbox(rgb, self.image_size) for rgb in rgbs]
        batch = torch.stack([x for x, _ in boxed])  # (B, 3, S, S)
        pre_ms = _ms(t0) / len(rgbs)
        t0 = time.perf_counter()
        out = self.backend.run(batch, prompts)
        image, mask, maps = out.image.float().cpu(), out.mask.float().cpu(), out.maps.float().cpu()  # syncs
        model_ms = _ms(t0) / len(rgbs)  # a batch runs as one call: each image gets its share
        results = []
        for b, (rgb, (x, box)) in enumerate(zip(rgbs, boxed, strict=True)):
            t0 = time.perf_counter()
            full, full_mask = paste_back(rgb, x, image[b], mask[b], box)
            full_maps = upsample_maps(maps[b, : len(prompts[b])], box)  # (K, H, W)
            post_ms = _ms(t0)
            timing = {"preprocess": pre_ms, "model": model_ms, "postprocess": post_ms,
                      "total": pre_ms + model_ms + post_ms}
            results.append(RetouchResult(full, full_mask, full_maps, prompts[b], timing))
        return results


def _as_rgb(image: LoadedImage | torch.Tensor, index: int) -> torch.Tensor:
    """A LoadedImage or a (3, H, W) tensor (float in [0, 1], uint8 or uint16) -> float32 (3, H, W) on CPU.

    Anything else is one LangBRTInputError: an int32 0-255 photo, a float one in 0-255 or one with NaNs would
    otherwise be clamped into a white or black model input and come back "retouched" without a word
    (`unit_float`, the rule `write_image` applies too).
    """
    rgb = image.rgb if isinstance(image, LoadedImage) else image
    if not isinstance(rgb, torch.Tensor) or rgb.ndim != 3 or rgb.shape[0] != 3:
        shape = tuple(rgb.shape) if isinstance(rgb, torch.Tensor) else type(rgb).__name__
        raise LangBRTInputError(f"image {index}: expected a LoadedImage (langbrt.io.load_image(path)) or a "
                                f"(3, H, W) tensor, got {shape}")
    return unit_float(rgb, f"image {index}")
