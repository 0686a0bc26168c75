"""Which tensors count as an image's pixels: floats in [0, 1] (give or take a little), uint8 or uint16.

Why one rule in one place: the model's input (`Retoucher.retouch`) and a written file (`langbrt.io.write_image`)
both clamp to [0, 1], so a float photo in 0-255 or one with NaNs would otherwise come out all white or all black
without a word. Both refuse it the same way, with one LangBRTInputError line.
"""

from __future__ import annotations

import math

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
        return pixels.detach().cpu().float().div(_INTEGER_SCALES[pixels.dtype])
    if pixels.dtype not in _FLOAT_DTYPES:
        raise LangBRTInputError(f"{name}: {pixels.dtype} tensors are not taken; pass float values in [0, 1], "
                                "uint8 (0-255) or uint16 (0-65535)")
    pixels = pixels.detach().float().cpu()
    low, high = (float(v) for v in pixels.aminmax())  # NaN anywhere makes both NaN
    if not (-FLOAT_RANGE_SLACK <= low and high <= 1.0 + FLOAT_RANGE_SLACK):
        if not (math.isfinite(low) and math.isfinite(high)):
            raise LangBRTInputError(f"{name}: has NaN or infinite values; float values must be in [0, 1]")
        hint = "divide it by 255" if 1.0 < high <= 255.0 and low >= 0.0 else "clamp it to [0, 1]"
        raise LangBRTInputError(f"{name}: float values must be in [0, 1], found [{low:.4g}, {high:.4g}]; {hint}")
    return pixels
