"""Decoded samples as LangBRT's planes: a (3, H, W) RGB and an optional (1, H, W) alpha tensor, float32 in [0, 1].

From a Pillow image of any mode (`to_planes`), or from the 16-bit samples `png16` and `tiff16` read at full depth
(`planes_16`), which those readers leave as stored: `upright` applies their EXIF orientation.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from langbrt.errors import input_error
from langbrt.image_properties import SIXTEEN_BIT_MODES
from langbrt.pixel_values import from_uint8_hwc, from_uint16_hwc

# Pillow modes with an alpha band, by name: a test for an "A" in the mode took LAB (CIELAB) for one (QA)
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


_EXIF_TURNS = {1: (False, 0), 2: (True, 0), 3: (False, 2), 4: (True, 2), 5: (True, 1), 6: (False, 3),
               7: (True, 3), 8: (False, 1)}
"""EXIF orientation -> (mirror left-right first, then this many counter-clockwise quarter turns)."""


def upright(samples: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, C) as stored -> as displayed, for an EXIF orientation: what `ImageOps.exif_transpose` does."""
    mirror, turns = _EXIF_TURNS.get(orientation, (False, 0))
    if mirror:
        samples = samples[:, ::-1]
    return np.ascontiguousarray(np.rot90(samples, turns))  # (H, W, C), or (W, H, C) after an odd turn


def planes_16(samples: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(H, W, C) uint16, C = 3 RGB or 4 RGBA -> (3, H, W) RGB and optional (1, H, W) alpha."""
    planes = from_uint16_hwc(samples)  # (C, H, W)
    return planes[:3].contiguous(), (planes[3:].contiguous() if planes.shape[0] == 4 else None)


def to_planes(img: Image.Image, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Any Pillow mode -> (3, H, W) RGB and optional (1, H, W) alpha, float32 in [0, 1]."""
    if img.mode in SIXTEEN_BIT_MODES or img.mode == "F":
        # 16-bit gray must not go through Pillow's convert("RGB"), which clips at 255; F is taken as [0, 1].
        samples = np.asarray(img)  # (H, W)
        gray = samples.astype(np.float32)
        if img.mode != "F":
            gray /= 65535.0
        gray = np.clip(np.nan_to_num(gray), 0.0, 1.0)
        rgb = torch.from_numpy(gray).unsqueeze(0).expand(3, -1, -1).contiguous()  # (3, H, W)
        key = img.info.get("transparency")  # a 16-bit grey PNG's tRNS grey level, as Pillow's 8-bit path keeps it
        if key is None or img.mode == "F":
            return rgb, None
        return rgb, torch.from_numpy((samples != key).astype(np.float32)).unsqueeze(0)  # (1, H, W): 0 at the key
    has_alpha = img.mode in _ALPHA_MODES or "transparency" in img.info  # also P, L or RGB with a tRNS colour key
    mode = "RGBA" if has_alpha else "RGB"
    try:
        # CMYK, YCbCr, P, L, 1 all land here; an image already in the mode is not copied (0.03 s at 12 MP)
        converted = img if img.mode == mode else img.convert(mode)
    except ValueError as err:
        raise input_error(name, f"unsupported image mode {img.mode}") from err
    planes = from_uint8_hwc(np.asarray(converted))  # (3 or 4, H, W)
    if has_alpha:
        return planes[:3].contiguous(), planes[3:].contiguous()  # (3, H, W), (1, H, W)
    return planes, None
