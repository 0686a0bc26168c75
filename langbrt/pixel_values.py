"""Which tensors count as an image's pixels: floats in [0, 1] (give or take a little), uint8 or uint16.

Why one rule in one place: the model's input (`Retoucher.retouch`) and a written file (`langbrt.io.write_image`)
both clamp to [0, 1], so a float photo in 0-255 or one with NaNs would otherwise come out all white or all black
without a word. Both refuse it the same way, with one LangBRTInputError line.

The conversions between such tensors and the (H, W, C) uint8 and uint16 arrays files hold live here too
(`from_uint8_hwc`, `to_uint16_hwc`, ...): one scaling and one rounding for every reader and writer, so a file's
samples come back exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from langbrt.errors import LangBRTInputError

_INTEGER_SCALES = {torch.uint8: 255.0, torch.uint16: 65535.0}  # a 16-bit photo: `to_uint16_hwc` gives every value back
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# How far past [0, 1] a float photo may stray and still be taken: a bicubic resize overshoots at sharp edges by a
# few percent, and such a photo is fine to retouch or write (it is clamped; pixels outside a retouch's mask come
# back as given). A 0-255 photo or an ImageNet-normalised tensor is far past it.
FLOAT_RANGE_SLACK = 0.1


def unit_float(pixels: torch.Tensor, name: str) -> torch.Tensor:
    """`pixels` (any shape) as float32 on CPU, in [0, 1] up to FLOAT_RANGE_SLACK: uint8 and uint16 are scaled.

    Anything else is one LangBRTInputError starting '<name>: ': no pixels, another dtype (an int32 0-255 photo),
    NaN or infinite values, floats past the slack. A float32 CPU tensor comes back as it is, not copied.
    """
    if pixels.numel() == 0 or pixels.is_meta:
        raise LangBRTInputError(f"{name}: has no pixels ({tuple(pixels.shape)}, on {pixels.device.type})")
    if pixels.dtype in _INTEGER_SCALES:
        return scaled_float(pixels.detach().cpu(), name)
    pixels = scaled_float(pixels.detach(), name).cpu()
    low, high = (float(v) for v in pixels.aminmax())  # NaN anywhere makes both NaN
    if not (-FLOAT_RANGE_SLACK <= low and high <= 1.0 + FLOAT_RANGE_SLACK):
        if not (math.isfinite(low) and math.isfinite(high)):
            raise LangBRTInputError(f"{name}: has NaN or infinite values; float values must be in [0, 1]")
        hint = "divide it by 255" if 1.0 < high <= 255.0 and low >= 0.0 else "clamp it to [0, 1]"
        raise LangBRTInputError(f"{name}: float values must be in [0, 1], found [{low:.4g}, {high:.4g}]; {hint}")
    return pixels


def scaled_float(pixels: torch.Tensor, name: str) -> torch.Tensor:
    """`pixels` as float32 on their own device, uint8 and uint16 scaled to [0, 1]; another dtype (an int32 0-255
    photo, bool, complex) is one LangBRTInputError starting '<name>: '.

    `unit_float`'s dtype rule without its pass over the values: a backend's batch takes this one, on the device
    it is on, since its caller (`Retoucher.retouch`) checked the values already and a second pass would cost
    a server time on every batch.
    """
    if pixels.dtype in _INTEGER_SCALES:
        return pixels.float().div(_INTEGER_SCALES[pixels.dtype])
    if pixels.dtype not in _FLOAT_DTYPES:
        raise LangBRTInputError(f"{name}: {pixels.dtype} tensors are not taken; pass float values in [0, 1], "
                                "uint8 (0-255) or uint16 (0-65535)")
    return pixels.float()


def from_uint8_hwc(arr: np.ndarray) -> torch.Tensor:
    """(H, W, C) or (H, W) uint8 -> (C, H, W) float32 in [0, 1]; the inverse of `to_uint8_hwc`."""
    assert arr.dtype == np.uint8, f"expected uint8, got {arr.dtype}"
    if arr.ndim == 2:
        arr = arr[:, :, None]  # (H, W, 1)
    assert arr.ndim == 3, f"expected (H, W, C), got shape {arr.shape}"
    if not arr.flags.writeable:  # torch.from_numpy warns on read-only arrays (np.asarray of a PIL image)
        arr = arr.copy()
    # (C, H, W) float32: one transposing copy in torch, faster than numpy's strided astype (512x512 RGB: ~0.4
    # against ~2.6 ms on the 2-core dev box); the division is the same IEEE float32 one
    return torch.from_numpy(arr).permute(2, 0, 1).to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def from_uint16_hwc(arr: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint16 -> (C, H, W) float32 in [0, 1]; `to_uint16_hwc` gives back every value exactly."""
    assert arr.dtype == np.uint16 and arr.ndim == 3, f"expected (H, W, C) uint16, got {arr.dtype} {arr.shape}"
    return torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1).contiguous().div_(65535.0)


def to_uint8_hwc(tensor: torch.Tensor) -> np.ndarray:
    """(C, H, W) or (1, C, H, W) float -> (H, W, C) uint8, clamped to [0, 1], rounded half-to-even.

    Rounding (not truncation) is what makes uint8 -> float -> uint8 an exact round trip.
    """
    return _scaled_hwc(tensor, 255.0).to(torch.uint8).numpy()


def to_uint16_hwc(tensor: torch.Tensor) -> np.ndarray:
    """(C, H, W) or (1, C, H, W) float -> (H, W, C) uint16, as `to_uint8_hwc` at 16 bits (the inverse of
    `from_uint16_hwc`)."""
    return _scaled_hwc(tensor, 65535.0).to(torch.uint16).numpy()


def _scaled_hwc(tensor: torch.Tensor, top: float) -> torch.Tensor:
    """(C, H, W) or (1, C, H, W) float -> (H, W, C) float32: NaN as 0, clamped to [0, 1], times `top`, rounded."""
    t = tensor.detach().cpu()
    if t.ndim == 4:
        assert t.shape[0] == 1, f"expected a batch of one, got shape {tuple(t.shape)}"
        t = t[0]  # (C, H, W)
    assert t.ndim == 3 and t.shape[0] in (1, 3, 4), (
        f"expected (C, H, W) with C in 1/3/4, got {tuple(t.shape)}"
    )
    if t.shape[0] > 1 and t.stride(0) == 0:  # one plane expanded to C (a grey mask written as RGB): scale it once
        return _scaled_hwc(t[:1], top).expand(-1, -1, t.shape[0])  # (H, W, C), each channel the same values
    # Transpose first, into a fresh float32 copy, then work in place: one pass over a contiguous (H, W, C)
    # buffer (512x512 RGB: ~0.6 against ~2.9 ms for the ops in (C, H, W) followed by a transposing copy).
    hwc = t.permute(1, 2, 0).to(torch.float32, memory_format=torch.contiguous_format, copy=True)  # (H, W, C)
    return hwc.nan_to_num_(nan=0.0).clamp_(0.0, 1.0).mul_(top).round_()
