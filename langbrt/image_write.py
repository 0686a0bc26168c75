"""Encoding a (3, H, W) tensor as a PNG, JPEG or WebP image: to bytes for a server (`encode_image`) or
atomically to a file (`write_image`), with the alpha, metadata, bit depth and losslessness a LoadedImage carries.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from langbrt.atomic import atomic_path
from langbrt.errors import OutputWriteError, input_error
from langbrt.pixel_values import to_uint8_hwc, to_uint16_hwc, unit_float
from langbrt.png16 import encode_png16

WRITE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_ALPHA_FORMATS = ("PNG", "WEBP")
FAST_PNG_LEVEL = 1  # zlib level of `encode_image(fast=True)` PNGs


def _resolve_format(fmt: str, name: str) -> str:
    """'png', '.JPG', 'jpeg', 'WEBP' -> Pillow's format name; anything else is a user error."""
    key = fmt.lower() if fmt.startswith(".") else "." + fmt.lower()
    if key not in WRITE_SUFFIXES:
        supported = ", ".join(WRITE_SUFFIXES)
        raise input_error(name, f"unsupported output format '{fmt}' (use one of {supported})")
    return WRITE_SUFFIXES[key]


def _to_pil(tensor: torch.Tensor, alpha: torch.Tensor | None, fmt: str) -> Image.Image:
    rgb = to_uint8_hwc(tensor)  # (H, W, 3)
    if alpha is None or fmt not in _ALPHA_FORMATS:  # JPEG has no alpha channel: it is dropped
        return Image.fromarray(rgb)
    a = to_uint8_hwc(alpha.reshape(1, *alpha.shape[-2:]))  # (H, W, 1)
    return Image.fromarray(np.concatenate([rgb, a], axis=2))  # (H, W, 4) -> RGBA


def _to_uint16_samples(tensor: torch.Tensor, alpha: torch.Tensor | None) -> np.ndarray:
    """(3, H, W) RGB and optional (1, H, W) alpha -> (H, W, 3 or 4) uint16: `_to_pil` for 16-bit PNG."""
    rgb = to_uint16_hwc(tensor)  # (H, W, 3)
    if alpha is None:
        return rgb
    a = to_uint16_hwc(alpha.reshape(1, *alpha.shape[-2:]))  # (H, W, 1)
    return np.concatenate([rgb, a], axis=2)  # (H, W, 4)


def _check_shapes(tensor: torch.Tensor, alpha: torch.Tensor | None, name: str) -> None:
    """A LangBRTInputError unless `tensor` is (3, H, W) or (1, 3, H, W) and `alpha`, if any, (H, W), (1, H, W) or
    (1, 1, H, W). Why: a wrong shape (a (1, H, W) mask written as an image) was an AssertionError, and under
    `python -O` Pillow's TypeError, where every other bad tensor is one line naming the file."""
    rgb_shape = tuple(tensor.shape[1:]) if tensor.ndim == 4 and tensor.shape[0] == 1 else tuple(tensor.shape)
    if len(rgb_shape) != 3 or rgb_shape[0] != 3:
        raise input_error(name, f"expected an RGB image tensor (3, H, W) or (1, 3, H, W), got {tuple(tensor.shape)}")
    hw = rgb_shape[1:]
    if alpha is not None and tuple(alpha.shape) not in (hw, (1, *hw), (1, 1, *hw)):
        raise input_error(name, f"alpha {tuple(alpha.shape)} does not match the image's {hw[0]}x{hw[1]}")


def _encoder(
    tensor: torch.Tensor, alpha: torch.Tensor | None, fmt: str, quality: int, exif: bytes | None,
    icc: bytes | None, bit_depth: int, fast: bool, name: str, lossless: bool = False,
) -> Callable[[BinaryIO], object]:
    """Convert the tensor now, so a bad one fails before any file is opened; the result writes it to a file."""
    if bit_depth not in (8, 16):
        raise input_error(name, f"bit depth must be 8 or 16, got {bit_depth}")
    # The conversion clamps to [0, 1]: a 0-255 or NaN tensor would be written all white or all black without a word.
    tensor = unit_float(tensor, name)
    alpha = None if alpha is None else unit_float(alpha, f"{name}: alpha")
    _check_shapes(tensor, alpha, name)
    if bit_depth == 16:
        if fmt != "PNG":
            raise input_error(name, f"16-bit output needs PNG; {fmt} holds 8 bits per sample")
        data = encode_png16(_to_uint16_samples(tensor, alpha), compression=FAST_PNG_LEVEL if fast else None,
                            exif=exif, icc_profile=icc)
        return lambda fp: fp.write(data)
    img = _to_pil(tensor, alpha, fmt)
    return lambda fp: _save(img, fp, fmt, quality, exif, icc, fast, lossless)


def _save(
    img: Image.Image, fp: BinaryIO, fmt: str, quality: int, exif: bytes | None, icc: bytes | None,
    fast: bool = False, lossless: bool = False,
) -> None:
    options: dict[str, object] = {}
    if exif:
        options["exif"] = exif
    if icc:
        options["icc_profile"] = icc
    if fmt == "JPEG":
        options.update(quality=quality, subsampling=0)  # 4:4:4: chroma subsampling smears skin-tone edges
    elif fmt == "WEBP" and lossless:
        options.update(lossless=True, exact=True)  # exact: keep the RGB of fully transparent pixels too
        if fast:
            options["method"] = 0
    elif fmt == "WEBP":
        options["quality"] = quality
        if fast:
            options["method"] = 0  # Pillow's default effort is 4
    elif fmt == "PNG" and fast:
        options["compress_level"] = FAST_PNG_LEVEL
    img.save(fp, format=fmt, **options)


def _check_quality(quality: int, name: str) -> None:
    if not 1 <= quality <= 100:
        raise input_error(name, f"quality must be between 1 and 100, got {quality}")


def encode_image(
    tensor: torch.Tensor,
    format: str,
    alpha: torch.Tensor | None = None,
    quality: int = 95,
    *,
    exif: bytes | None = None,
    icc_profile: bytes | None = None,
    fast: bool = False,
    bit_depth: int = 8,
    lossless: bool = False,
) -> bytes:
    """Encode a (3, H, W) tensor to PNG/JPEG/WebP bytes (for servers); same conversion as `write_image`.

    `fast` trades bytes for encoding time, as a server answering a waiting client should: PNG at zlib
    level `FAST_PNG_LEVEL` instead of 6, WebP at effort 0 instead of 4; JPEG is fast as it is. On 512x512
    photos (`benchmarks/encode_speed.py`, 2-core dev box): PNG ~88 -> ~21 ms for ~15 % more bytes (still
    lossless), WebP ~28 -> ~10 ms for ~5 % more bytes and 0.2-0.3 dB less PSNR, where the model step
    takes a few ms on a GPU.
    """
    fmt = _resolve_format(format, "<bytes>")
    _check_quality(quality, "<bytes>")
    buf = io.BytesIO()
    _encoder(tensor, alpha, fmt, quality, exif, icc_profile, bit_depth, fast, "<bytes>", lossless)(buf)
    return buf.getvalue()


def write_image(
    path: str | os.PathLike[str],
    tensor: torch.Tensor,
    *,
    alpha: torch.Tensor | None = None,
    quality: int = 95,
    format: str | None = None,
    exif: bytes | None = None,
    icc_profile: bytes | None = None,
    bit_depth: int = 8,
    lossless: bool = False,
    fast: bool = False,
) -> Path:
    """Write a (3, H, W) or (1, 3, H, W) tensor in [0, 1] atomically; returns the path written.

    The tensor (and alpha) follow `Retoucher.retouch`'s rule (`unit_float`): uint8 and uint16 are scaled, floats
    may stray 0.1 past [0, 1] and are clamped; NaN or values further out are a LangBRTInputError.

    The format comes from the suffix (.png, .jpg/.jpeg, .webp) unless `format` says otherwise. Alpha is
    written for PNG and WebP, dropped for JPEG. `bit_depth=16` (PNG only; pass a loaded image's
    `output_bit_depth`) writes 16 bits per sample; `lossless` (pass a loaded image's `lossless`) writes WebP
    losslessly (PNG always is, JPEG never; `quality` is then unused). `fast` trades bytes for encoding time as
    `encode_image`'s does (the same pixels), for side outputs such as `langbrt-infer`'s map overlays: a 12-MP
    photo's overlay took 5.2 s of CPU at PNG's default zlib level 6 and takes 0.9 s at level 1, 13 % larger.
    The image goes to a hidden temporary file in the same folder, is fsynced, then renamed over the target, so
    readers never see a partial file.
    A failure to write it (a full disk) is an `OutputWriteError`; a bad tensor or format, or a missing
    folder, a LangBRTInputError.
    """
    path = Path(path)
    fmt = _resolve_format(format if format is not None else path.suffix or "(none)", str(path))
    _check_quality(quality, str(path))
    write = _encoder(tensor, alpha, fmt, quality, exif, icc_profile, bit_depth, fast, str(path),
                     lossless)  # disk untouched
    folder = path.parent
    if not folder.is_dir():
        raise input_error(str(folder), "output folder does not exist")
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            write(handle)
    except OSError as err:
        raise OutputWriteError(f"{path}: cannot write file ({err.strerror or err})") from err
    return path
