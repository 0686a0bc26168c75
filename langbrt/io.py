"""The library's only boundary between image files and tensors.

Inside LangBRT an image is a float32 tensor in [0, 1], RGB, channels-first: (3, H, W). Everything that
can go wrong with a file (missing, empty, truncated, not an image, a decompression bomb, a PNG whose pixel
data stops before its last row, which Pillow would read with the missing rows black: `png_rows`) is turned
into one `LangBRTInputError` line naming the file, so CLIs and servers never show a Pillow traceback.
Writes are atomic: a crash mid-write leaves the old target (or nothing), never half an image.

16-bit files keep their 16 bits where they can: 16-bit RGB, RGBA and grey PNGs and 16-bit grayscale TIFFs are
read exactly (samples / 65535) and can be written back as 16-bit PNG (`LoadedImage.output_bit_depth`), so the
pixels a retouch leaves alone come back bit for bit. Pillow does everything else; `png16` (pyspng to read,
pypng to write) does the 16-bit colour PNG samples Pillow would cut to 8 bits.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, TiffImagePlugin

from langbrt.atomic import atomic_path
from langbrt.errors import LangBRTError, LangBRTInputError, OutputWriteError, TooManyPixelsError
from langbrt.pillow_guard import pillow_limit_at_least
from langbrt.pixel_values import unit_float
from langbrt.png16 import decode_png16, encode_png16
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

WRITE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_ALPHA_FORMATS = ("PNG", "WEBP")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Pillow modes with an alpha band, by name: a test for an "A" in the mode took LAB (CIELAB) for one (QA)
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_DEEP_PNG_RAW_MODES = ("RGB;16B", "RGBA;16B")  # 16-bit colour PNGs, which `png16` reads at full depth
_BITS_PER_SAMPLE = 258  # TIFF tag
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # little/big-endian TIFF and BigTIFF
# What Pillow raises while decoding a damaged stream; anything else escaping is a bug worth seeing. Overflow:
# a BigTIFF offset past what a seek takes (QA, 2026-11-26: a traceback from load_image).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, OverflowError, struct.error, zlib.error)


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded, upright image plus what an output needs to carry back (alpha, metadata)."""

    rgb: torch.Tensor  # (3, H, W) float32 in [0, 1]
    alpha: torch.Tensor | None  # (1, H, W) float32 in [0, 1], or None when the file has no transparency
    format: str  # Pillow's name: "PNG", "JPEG", "WEBP", ...
    size: tuple[int, int]  # (W, H) after EXIF orientation
    path: Path | None  # None when decoded from bytes
    exif: bytes | None = None  # orientation tag already applied and removed
    icc_profile: bytes | None = None  # None too for a profile of another colour space (`_rgb_profile`)
    bit_depth: int = 8  # bits per sample in the file: 8, 16, or 32 (float TIFF)
    # Bits per sample a PNG output needs to give back every bit that was read: 16 for 16-bit PNG and TIFF, 8
    # otherwise (an LZW 16-bit colour TIFF is read at 8 bits, `tiff16`; float TIFF is written at 8).
    output_bit_depth: int = 8
    # The file stores its pixels exactly (every format but JPEG and lossy WebP): a WebP output is then written
    # lossless, so the pixels outside the mask come back as they were read.
    lossless: bool = True
    frames: int = 1  # images in the file (an animation's frames, a TIFF's pages); only the first is read


def _input_error(name: str, reason: object, kind: type[LangBRTInputError] = LangBRTInputError) -> LangBRTInputError:
    """One line, '<name>: <reason>', whatever Pillow put in its message."""
    return kind(f"{name}: {' '.join(str(reason).split())}")


# ---------------------------------------------------------------------------------------------- reading


def load_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an image file into an upright RGB tensor, alpha kept aside; the file is only ever read.

    An image whose header announces more than `max_pixels` (W*H; default DEFAULT_MAX_PIXELS, 64 MP) is refused
    before decoding, with `TooManyPixelsError`; a larger `max_pixels` also lifts Pillow's own limit that far.
    """
    path = Path(path)
    name = str(path)
    if path.is_dir():
        raise _input_error(name, "is a folder, not an image file")
    try:
        fh = open(path, "rb")
    except FileNotFoundError as err:
        raise _input_error(name, "no such file") from err
    except OSError as err:
        raise _input_error(name, f"cannot open file ({err.strerror or err})") from err
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
    except (Image.UnidentifiedImageError, *_DECODE_ERRORS):
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
        raise _input_error(name, "empty file (0 bytes)")
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
                raise _input_error(
                    name,
                    f"image is {width}x{height} = {width * height / 1e6:.1f} MP, over the "
                    f"{max_pixels / 1e6:g} MP limit",
                    TooManyPixelsError,
                )
            fmt = "JPEG" if img.format == "MPO" else str(img.format)
            bit_depth = _bit_depth(img)  # reads the tile list, which load() empties
            # 16-bit RGB(A) PNG: Pillow's pixels are 8-bit, pyspng's are the file's (grey+alpha, which Pillow
            # also opens as RGBA, stays 8-bit)
            raw_mode = _raw_mode(img)
            deep_png = fmt == "PNG" and raw_mode in _DEEP_PNG_RAW_MODES
            with_alpha = deep_png and raw_mode == "RGBA;16B"
            deep_tiff = fmt == "TIFF" and bit_depth == 16 and img.mode in ("RGB", "RGBA")  # `tiff16` may read them
            frames = _frame_count(img)  # before load(): Pillow counts them from the header and file
            # Before load(), which turns a TIFF upright as it decodes it and drops the tag; tiff16's samples
            # are as stored.
            tiff_orientation = img.getexif().get(ExifTags.Base.Orientation, 1) if deep_tiff else 1
            img.load()  # decode everything now, so a truncated file fails here and not in a caller
            if fmt == "PNG" and not deep_png:  # libspng, which reads the deep ones, checks this itself
                fh.seek(0)
                if (shortfall := missing_rows(fh.read())) is not None:
                    raise ValueError(shortfall)  # Pillow would hand back the missing rows black
            # A PNG's before exif_transpose removes it (an eXIf chunk after the pixels is read by load()).
            exif_orientation = _exif_orientation(img)
            orientation = (exif_orientation or 1) if deep_png else tiff_orientation
            colour_key = img.info.get("transparency") if deep_png and not with_alpha else None
            if exif_orientation is not None:
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
                rgb, alpha = _planes_16(_upright(samples, orientation))
            else:
                rgb, alpha = _to_planes(img, name)
    except LangBRTError:
        raise
    except Image.UnidentifiedImageError as err:
        raise _input_error(name, _unread_format(fh)) from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow's message would name its own limit beside ours (QA, 2026-11-26)
        reason = f"too many pixels, over the {max_pixels / 1e6:g} MP limit; refusing to decode"
        raise _input_error(name, reason, TooManyPixelsError) from err
    except _DECODE_ERRORS as err:
        raise _input_error(name, f"corrupt or truncated image ({err})") from err
    return LoadedImage(
        rgb=rgb,
        alpha=alpha,
        format=fmt,
        size=img.size,
        path=path,
        exif=exif,
        icc_profile=_rgb_profile(img.info.get("icc_profile")),
        bit_depth=bit_depth,
        output_bit_depth=16 if samples is not None or img.mode in _SIXTEEN_BIT_MODES else 8,
        lossless=_stores_exact_pixels(fmt, fh),
        frames=frames,
    )


def _exif_orientation(img: Image.Image) -> int | None:
    """The EXIF orientation (1: as stored), or None when the EXIF block cannot be read.

    Why: Pillow raises on a damaged block (SyntaxError 'not a TIFF file' for a PNG's or WebP's), and such a photo,
    whose pixels are whole and which every viewer shows, was refused as 'corrupt or truncated'. Its pixels are
    then taken as stored, and the block is carried as it is, as a JPEG's already was.
    """
    try:
        return img.getexif().get(ExifTags.Base.Orientation, 1)
    except _DECODE_ERRORS:
        return None


def _rgb_profile(profile: bytes | None) -> bytes | None:
    """The file's ICC profile when it can describe an output, which is always RGB; None for another colour space.

    Why: a grey photo's grey profile or a CMYK JPEG's CMYK one, written into the RGB output, made it unreadable
    to colour-managed software (lcms builds no transform from it; libpng rejects a GRAY iCCP in an RGB PNG), and
    Pillow converts such pixels to RGB without the profile, so it would not describe them anyway. Bytes 16-19
    of a profile name its colour space; anything too short to say is kept, as before.
    """
    if not profile or (len(profile) >= 20 and profile[16:20] != b"RGB "):
        return None
    return profile


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
    except (Image.UnidentifiedImageError, Image.DecompressionBombError, *_DECODE_ERRORS):
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
    except (*_DECODE_ERRORS, IndexError, KeyError, TypeError) as err:
        return f"a TIFF file this reader cannot decode ({err}); convert it to an 8- or 16-bit RGB(A) PNG"
    return None


def _frame_count(img: Image.Image) -> int:
    """The frames (pages) Pillow finds; counting walks every page's header, and a damaged later TIFF page
    raised TypeError ('Missing dimensions') there, a traceback rather than a bad-file line (QA, 2026-11-26)."""
    try:
        return getattr(img, "n_frames", 1)
    except TypeError as err:
        raise ValueError(f"a later page is damaged: {err}") from None


def _stores_exact_pixels(fmt: str, fh: BinaryIO) -> bool:
    """Whether a file of Pillow format `fmt` holds its pixels exactly: not JPEG, and a WebP only when its
    (first) image is VP8L, WebP's lossless coding. Only a WebP output asks (PNG is always written lossless,
    JPEG never), and Pillow does not say which a WebP is, so its RIFF chunk headers are read: a simple file
    is one VP8 / VP8L chunk, an extended one (VP8X) lists its chunks, an animated one nests them in ANMF
    frames (16 bytes of frame header, then the frame's chunks)."""
    if fmt == "JPEG":
        return False
    if fmt != "WEBP":
        return True
    offset = 12  # past 'RIFF', size, 'WEBP'
    while True:
        fh.seek(offset)
        header = fh.read(8)
        if len(header) < 8:
            return False
        kind, size = header[:4], int.from_bytes(header[4:], "little")
        if kind in (b"VP8L", b"VP8 "):
            return kind == b"VP8L"
        offset += 8 + 16 if kind == b"ANMF" else 8 + size + (size & 1)


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


def _bit_depth(img: Image.Image) -> int:
    """Bits per sample in the file: 8, 16 or 32. Pillow decodes 16-bit colour PNG, TIFF and PPM to 8 bits and
    32-bit integer TIFF to mode I, but the PNG's raw mode, the TIFF's BitsPerSample tag and the PPM's maxval
    say what the file holds, so `output_note` can say what an output loses."""
    if img.mode == "F":
        return 32
    if isinstance(img, TiffImagePlugin.TiffImageFile):  # compressed TIFFs do not name the depth in their raw mode
        bits = img.tag_v2.get(_BITS_PER_SAMPLE, 8)  # one value, or one per sample
        deepest = max(bits if isinstance(bits, tuple) else (bits,))
        return 32 if deepest > 16 else 16 if deepest > 8 else 8
    if img.mode in _SIXTEEN_BIT_MODES:
        return 16
    if img.format == "PPM" and img.tile and isinstance(img.tile[0].args, tuple):  # ("RGB", maxval)
        maxval = img.tile[0].args[-1]
        return 16 if isinstance(maxval, int) and maxval > 255 else 8
    rawmode = _raw_mode(img)
    return 16 if rawmode is not None and ";16" in rawmode else 8


def _raw_mode(img: Image.Image) -> str | None:
    """The sample layout of the file's first tile ("RGB;16B", ...), before `load()` empties the tile list."""
    rawmode = img.tile[0].args if img.tile else None
    return rawmode if isinstance(rawmode, str) else None


_EXIF_TURNS = {1: (False, 0), 2: (True, 0), 3: (False, 2), 4: (True, 2), 5: (True, 1), 6: (False, 3),
               7: (True, 3), 8: (False, 1)}
"""EXIF orientation -> (mirror left-right first, then this many counter-clockwise quarter turns)."""


def _upright(samples: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, C) as stored -> as displayed, for an EXIF orientation: what `ImageOps.exif_transpose` does."""
    mirror, turns = _EXIF_TURNS.get(orientation, (False, 0))
    if mirror:
        samples = samples[:, ::-1]
    return np.ascontiguousarray(np.rot90(samples, turns))  # (H, W, C), or (W, H, C) after an odd turn


def _planes_16(samples: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(H, W, C) uint16, C = 3 RGB or 4 RGBA -> (3, H, W) RGB and optional (1, H, W) alpha."""
    planes = from_uint16_hwc(samples)  # (C, H, W)
    return planes[:3].contiguous(), (planes[3:].contiguous() if planes.shape[0] == 4 else None)


def _to_planes(img: Image.Image, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Any Pillow mode -> (3, H, W) RGB and optional (1, H, W) alpha, float32 in [0, 1]."""
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
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
    try:
        converted = img.convert("RGBA" if has_alpha else "RGB")  # CMYK, YCbCr, P, L, 1 all land here
    except ValueError as err:
        raise _input_error(name, f"unsupported image mode {img.mode}") from err
    planes = from_uint8_hwc(np.asarray(converted))  # (3 or 4, H, W)
    if has_alpha:
        return planes[:3].contiguous(), planes[3:].contiguous()  # (3, H, W), (1, H, W)
    return planes, None


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


# ---------------------------------------------------------------------------------------------- writing


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
    # Transpose first, into a fresh float32 copy, then work in place: one pass over a contiguous (H, W, C)
    # buffer (512x512 RGB: ~0.6 against ~2.9 ms for the ops in (C, H, W) followed by a transposing copy).
    hwc = t.permute(1, 2, 0).to(torch.float32, memory_format=torch.contiguous_format, copy=True)  # (H, W, C)
    return hwc.nan_to_num_(nan=0.0).clamp_(0.0, 1.0).mul_(top).round_()


FAST_PNG_LEVEL = 1  # zlib level of `encode_image(fast=True)` PNGs


def _resolve_format(fmt: str, name: str) -> str:
    """'png', '.JPG', 'jpeg', 'WEBP' -> Pillow's format name; anything else is a user error."""
    key = fmt.lower() if fmt.startswith(".") else "." + fmt.lower()
    if key not in WRITE_SUFFIXES:
        supported = ", ".join(WRITE_SUFFIXES)
        raise _input_error(name, f"unsupported output format '{fmt}' (use one of {supported})")
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
        raise _input_error(name, f"expected an RGB image tensor (3, H, W) or (1, 3, H, W), got {tuple(tensor.shape)}")
    hw = rgb_shape[1:]
    if alpha is not None and tuple(alpha.shape) not in (hw, (1, *hw), (1, 1, *hw)):
        raise _input_error(name, f"alpha {tuple(alpha.shape)} does not match the image's {hw[0]}x{hw[1]}")


def _encoder(
    tensor: torch.Tensor, alpha: torch.Tensor | None, fmt: str, quality: int, exif: bytes | None,
    icc: bytes | None, bit_depth: int, fast: bool, name: str, lossless: bool = False,
) -> Callable[[BinaryIO], object]:
    """Convert the tensor now, so a bad one fails before any file is opened; the result writes it to a file."""
    if bit_depth not in (8, 16):
        raise _input_error(name, f"bit depth must be 8 or 16, got {bit_depth}")
    # The conversion clamps to [0, 1]: a 0-255 or NaN tensor would be written all white or all black without a word.
    tensor = unit_float(tensor, name)
    alpha = None if alpha is None else unit_float(alpha, f"{name}: alpha")
    _check_shapes(tensor, alpha, name)
    if bit_depth == 16:
        if fmt != "PNG":
            raise _input_error(name, f"16-bit output needs PNG; {fmt} holds 8 bits per sample")
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
        raise _input_error(name, f"quality must be between 1 and 100, got {quality}")


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
) -> Path:
    """Write a (3, H, W) or (1, 3, H, W) tensor in [0, 1] atomically; returns the path written.

    The tensor (and alpha) follow `Retoucher.retouch`'s rule (`unit_float`): uint8 and uint16 are scaled, floats
    may stray 0.1 past [0, 1] and are clamped; NaN or values further out are a LangBRTInputError.

    The format comes from the suffix (.png, .jpg/.jpeg, .webp) unless `format` says otherwise. Alpha is
    written for PNG and WebP, dropped for JPEG. `bit_depth=16` (PNG only; pass a loaded image's
    `output_bit_depth`) writes 16 bits per sample; `lossless` (pass a loaded image's `lossless`) writes WebP
    losslessly (PNG always is, JPEG never; `quality` is then unused). The image goes to a hidden temporary
    file in the same folder, is fsynced, then renamed over the target, so readers never see a partial file.
    A failure to write it (a full disk) is an `OutputWriteError`; a bad tensor or format, or a missing
    folder, a LangBRTInputError.
    """
    path = Path(path)
    fmt = _resolve_format(format if format is not None else path.suffix or "(none)", str(path))
    _check_quality(quality, str(path))
    write = _encoder(tensor, alpha, fmt, quality, exif, icc_profile, bit_depth, False, str(path),
                     lossless)  # disk untouched
    folder = path.parent
    if not folder.is_dir():
        raise _input_error(str(folder), "output folder does not exist")
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            write(handle)
    except OSError as err:
        raise OutputWriteError(f"{path}: cannot write file ({err.strerror or err})") from err
    return path

