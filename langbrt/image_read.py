"""Decoding a photo, a file or bytes already in memory, into a LoadedImage: upright RGB planes, alpha kept aside,
and what an output needs to carry back (EXIF, ICC profile, bit depth, whether its pixels are exact).

`langbrt.io` re-exports this module's public names and states the contract they keep: a (3, H, W) float32 tensor
in [0, 1], or one LangBRTInputError line naming the file.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from PIL import ExifTags, Image, ImageOps, TiffImagePlugin

from langbrt.errors import LangBRTError, TooManyPixelsError, input_error
from langbrt.image_planes import planes_16, to_planes, upright
from langbrt.image_properties import (
    SIXTEEN_BIT_MODES,
    bits_per_sample,
    frame_count,
    rgb_profile,
    stores_exact_pixels,
    tile_raw_mode,
)
from langbrt.pillow_guard import pillow_limit_at_least
from langbrt.png16 import decode_png16
from langbrt.png_rows import missing_rows
from langbrt.tiff16 import decode_tiff16
from langbrt.tiff_exif import tiff_exif

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest W*H accepted before decoding: a 48-MP phone photo passes, a crafted 20000x20000 header does not."""

READ_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "PPM")
"""Pillow plugins tried on read (JPEG covers MPO); formats that shell out (EPS) or are rare stay out."""

READ_SUFFIXES = frozenset({".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".tif", ".tiff", ".gif",
                           ".ppm"})
"""File suffixes (lower case) of the READ_FORMATS: what a folder given to langbrt-infer, langbrt-train or
langbrt-eval is read for, so a folder means the same images to every command. An animated PNG (.apng), like
an animated GIF or WebP, is read as its first frame (`output_note` says so)."""

_DEEP_PNG_RAW_MODES = ("RGB;16B", "RGBA;16B")  # 16-bit colour PNGs, which `png16` reads at full depth
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # little/big-endian TIFF and BigTIFF
# What Pillow raises while decoding a damaged stream; anything else escaping is a bug worth seeing. Overflow:
# a BigTIFF offset past what a seek takes (QA, 2026-11-26: a traceback from load_image).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, OverflowError, struct.error, zlib.error)


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded, upright image plus what an output needs to carry back (alpha, metadata)."""

    rgb: torch.Tensor  # (3, H, W) float32 in [0, 1]
    alpha: torch.Tensor | None  # (1, H, W) float32 in [0, 1], or None when the file has no transparency
    format: str  # Pillow's name: "PNG", "JPEG", "WEBP", ...
    size: tuple[int, int]  # (W, H) after EXIF orientation
    path: Path | None  # None when decoded from bytes
    exif: bytes | None = None  # orientation tag already applied and removed
    icc_profile: bytes | None = None  # None too for a profile of another colour space (`image_properties.rgb_profile`)
    bit_depth: int = 8  # bits per sample in the file: 8, 16, or 32 (float TIFF)
    # Bits per sample a PNG output needs to give back every bit that was read: 16 for 16-bit PNG and TIFF, 8
    # otherwise (an LZW 16-bit colour TIFF is read at 8 bits, `tiff16`; float TIFF is written at 8).
    output_bit_depth: int = 8
    # The file stores its pixels exactly (every format but JPEG and lossy WebP): a WebP output is then written
    # lossless, so the pixels outside the mask come back as they were read.
    lossless: bool = True
    frames: int = 1  # images in the file (an animation's frames, a TIFF's pages); only the first is read


def load_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an image file into an upright RGB tensor, alpha kept aside; the file is only ever read.

    An image whose header announces more than `max_pixels` (W*H; default DEFAULT_MAX_PIXELS, 64 MP) is refused
    before decoding, with `TooManyPixelsError`; a larger `max_pixels` also lifts Pillow's own limit that far.
    """
    path = Path(path)
    name = str(path)
    if path.is_dir():
        raise input_error(name, "is a folder, not an image file")
    try:
        fh = open(path, "rb")
    except FileNotFoundError as err:
        raise input_error(name, "no such file") from err
    except OSError as err:
        raise input_error(name, f"cannot open file ({err.strerror or err})") from err
    with fh:
        return _load(fh, name, path, max_pixels)


def load_image_bytes(
    data: bytes, name: str = "<bytes>", *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> LoadedImage:
    """Same as `load_image` for an upload already in memory; `name` is what error messages call it."""
    return _load(io.BytesIO(data), name, None, max_pixels)


def image_pixels(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> int | None:
    """W*H announced by an encoded image's header, without decoding it; None when the header is unreadable or
    over twice Pillow's limit (raised to `max_pixels` where that is higher), so over `max_pixels` too.

    Why: a server must know what an upload will cost in memory before it decodes it (a 1 MB JPEG of one
    colour can announce 60 MP, gigabytes once decoded and pasted back); `load_image_bytes` reports the reason
    for an unreadable header. A server allowing more than Pillow's 179 MP passes its `max_pixels`, or such an
    upload, which it would decode, would be counted as nothing.
    """
    try:
        with warnings.catch_warnings(), pillow_limit_at_least(max_pixels):
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=READ_FORMATS) as img:  # lazy: header only
                width, height = img.size
    except Image.DecompressionBombError:
        return None  # over twice Pillow's limit, and ours: decoding refuses it with the reason
    except (Image.UnidentifiedImageError, *DECODE_ERRORS):
        return None
    return width * height


def read_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """The (3, H, W) float32 RGB tensor in [0, 1] of an image file; `load_image` adds alpha and metadata."""
    return load_image(path, max_pixels=max_pixels).rgb


def read_image_bytes(
    data: bytes, name: str = "<bytes>", *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """The (3, H, W) float32 RGB tensor in [0, 1] of encoded image bytes."""
    return load_image_bytes(data, name, max_pixels=max_pixels).rgb


def _load(fh: BinaryIO, name: str, path: Path | None, max_pixels: int) -> LoadedImage:
    fh.seek(0, io.SEEK_END)
    if fh.tell() == 0:
        raise input_error(name, "empty file (0 bytes)")
    fh.seek(0)
    try:
        with warnings.catch_warnings(), pillow_limit_at_least(max_pixels):
            # Pillow's own bomb check runs inside Image.open, at a limit raised to ours where ours is higher
            # (`pillow_guard`): its warning is then over our limit too, so it becomes our error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Pillow's EXIF and TIFF tag parser warns of damaged metadata ("Corrupt EXIF data") as raw lines that
            # name its own file, not the photo; the pixels are read all the same, so there is nothing to say.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")
            img = Image.open(fh, formats=READ_FORMATS)  # lazy: header only
            width, height = img.size
            if width * height > max_pixels:
                raise input_error(
                    name,
                    f"image is {width}x{height} = {width * height / 1e6:.1f} MP, over the "
                    f"{max_pixels / 1e6:g} MP limit",
                    TooManyPixelsError,
                )
            fmt = "JPEG" if img.format == "MPO" else str(img.format)
            bit_depth = bits_per_sample(img)  # reads the tile list, which load() empties
            # 16-bit RGB(A) PNG: Pillow's pixels are 8-bit, pyspng's are the file's (grey+alpha, which Pillow
            # also opens as RGBA, stays 8-bit)
            raw_mode = tile_raw_mode(img)
            deep_png = fmt == "PNG" and raw_mode in _DEEP_PNG_RAW_MODES
            with_alpha = deep_png and raw_mode == "RGBA;16B"
            deep_tiff = fmt == "TIFF" and bit_depth == 16 and img.mode in ("RGB", "RGBA")  # `tiff16` may read them
            frames = frame_count(img)  # before load(): Pillow counts them from the header and file
            # Before load(), which turns a TIFF upright as it decodes it and drops the tag; tiff16's samples
            # are as stored.
            tiff_orientation = img.getexif().get(ExifTags.Base.Orientation, 1) if deep_tiff else 1
            img.load()  # decode everything now, so a truncated file fails here and not in a caller
            if fmt == "PNG" and not deep_png:  # libspng, which reads the deep ones, checks this itself
                fh.seek(0)
                if (shortfall := missing_rows(fh.read())) is not None:
                    raise ValueError(shortfall)  # Pillow would hand back the missing rows black
            # A PNG's before exif_transpose removes it (an eXIf chunk after the pixels is read by load()).
            stored_orientation = exif_orientation(img)
            orientation = (stored_orientation or 1) if deep_png else tiff_orientation
            colour_key = img.info.get("transparency") if deep_png and not with_alpha else None
            if stored_orientation is not None:
                ImageOps.exif_transpose(img, in_place=True)
            # A TIFF keeps its EXIF among the tags that lay out its pixels, not as a block an output can take.
            exif = tiff_exif(img) if fmt == "TIFF" else img.info.get("exif") or None
            samples = None
            if deep_png:
                fh.seek(0)
                samples = decode_png16(fh.read(), alpha=with_alpha, colour_key=colour_key)
            elif deep_tiff:
                samples = decode_tiff16(fh)  # None: a compression it cannot decode; Pillow's 8 bits stay
            if samples is not None:
                rgb, alpha = planes_16(upright(samples, orientation))
            else:
                rgb, alpha = to_planes(img, name)
    except LangBRTError:
        raise
    except Image.UnidentifiedImageError as err:
        raise input_error(name, _unread_format(fh)) from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow's message would name its own limit beside ours (QA, 2026-11-26)
        reason = f"too many pixels, over the {max_pixels / 1e6:g} MP limit; refusing to decode"
        raise input_error(name, reason, TooManyPixelsError) from err
    except DECODE_ERRORS as err:
        raise input_error(name, f"corrupt or truncated image ({err})") from err
    return LoadedImage(
        rgb=rgb,
        alpha=alpha,
        format=fmt,
        size=img.size,
        path=path,
        exif=exif,
        icc_profile=rgb_profile(img.info.get("icc_profile")),
        bit_depth=bit_depth,
        output_bit_depth=16 if samples is not None or img.mode in SIXTEEN_BIT_MODES else 8,
        lossless=stores_exact_pixels(fmt, fh),
        frames=frames,
    )


def exif_orientation(img: Image.Image) -> int | None:
    """The EXIF orientation (1: as stored), or None when the EXIF block cannot be read.

    Why: Pillow raises on a damaged block (SyntaxError 'not a TIFF file' for a PNG's or WebP's), and such a photo,
    whose pixels are whole and which every viewer shows, was refused as 'corrupt or truncated'. Its pixels are
    then taken as stored, and the block is carried as it is, as a JPEG's already was.
    """
    try:
        return img.getexif().get(ExifTags.Base.Orientation, 1)
    except DECODE_ERRORS:
        return None


def _unread_format(fh: BinaryIO) -> str:
    """Why no READ_FORMATS plugin opened a file: it is an image Pillow knows in another format, said with the
    suffixes read here (QA, 2026-11-26: TGA, ICO and PCX files were called 'not an image file'), or none.

    Pillow's other plugins only look at the header here, for the format's name: nothing is decoded.
    """
    if (undecodable := _undecodable_tiff(fh)) is not None:
        return undecodable
    fh.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's bomb warning, a plugin's own: only the name is wanted
            with Image.open(fh) as img:
                fmt = img.format
    except (Image.UnidentifiedImageError, Image.DecompressionBombError, *DECODE_ERRORS):
        return "not an image file (cannot identify image format)"
    return f"{fmt} is not a supported image format; convert it to one that is ({', '.join(sorted(READ_SUFFIXES))})"


def _undecodable_tiff(fh: BinaryIO) -> str | None:
    """Why Pillow's TIFF reader refused a file with a TIFF header, or None for another file.

    Why: Pillow opens no TIFF with one plane per colour, float RGB or 16-bit grey+alpha samples, and such a
    valid file was called 'not an image file', which sent the user looking for damage rather than converting it.
    """
    fh.seek(0)
    if fh.read(4) not in _TIFF_MAGIC:
        return None
    fh.seek(0)
    try:
        TiffImagePlugin.TiffImageFile(fh)
    except (*DECODE_ERRORS, IndexError, KeyError, TypeError) as err:
        return f"a TIFF file this reader cannot decode ({err}); convert it to an 8- or 16-bit RGB(A) PNG"
    return None


def output_note(image: LoadedImage, name: str | None = None) -> str | None:
    """One line (starting '<name>: ' when named) when an output of `image` gives back less than its file
    holds, else None: fewer bits per sample, or only the first of its frames.

    Why: "every other pixel unchanged" then holds only at 8 bits, or for one frame of an animation; the user
    must hear it, not find out later.
    """
    notes = []
    if image.bit_depth > image.output_bit_depth:
        notes.append(f"{image.bit_depth}-bit {image.format} comes back as {image.output_bit_depth}-bit (16-bit "
                     "RGB, RGBA and grey PNG and TIFF keep 16 bits, but not a grey+alpha PNG, a TIFF compressed with "
                     "LZW, PackBits or JPEG, or one with premultiplied alpha); convert it to a 16-bit RGB(A) PNG to "
                     "keep every bit")
    if image.frames > 1:
        notes.append(f"{image.format} holds {image.frames} frames (an animation or pages); only the first is "
                     "retouched and comes back, as a still image")
    if not notes:
        return None
    note = "; ".join(notes)
    return note if name is None else f"{name}: {note}"
