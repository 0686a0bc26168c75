"""What a photo's file holds besides its pixels, as an output of it needs to know: its bits per sample, its
frames, whether its pixels are stored exactly, and an ICC profile that can describe RGB.

Asked of Pillow's opened image (its tile list before `load()` empties it, its tags) or of the file's own bytes,
by `image_read` as it builds a LoadedImage.
"""

from __future__ import annotations

from typing import BinaryIO

from PIL import Image, TiffImagePlugin

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_BITS_PER_SAMPLE = 258  # TIFF tag


def rgb_profile(profile: bytes | None) -> bytes | None:
    """The file's ICC profile when it can describe an output, which is always RGB; None for another colour space.

    Why: a grey photo's grey profile or a CMYK JPEG's CMYK one, written into the RGB output, made it unreadable
    to colour-managed software (lcms builds no transform from it; libpng rejects a GRAY iCCP in an RGB PNG), and
    Pillow converts such pixels to RGB without the profile, so it would not describe them anyway. Bytes 16-19
    of a profile name its colour space; anything too short to say is kept, as before.
    """
    if not profile or (len(profile) >= 20 and profile[16:20] != b"RGB "):
        return None
    return profile


def frame_count(img: Image.Image) -> int:
    """The frames (pages) Pillow finds; counting walks every page's header, and a damaged later TIFF page
    raised TypeError ('Missing dimensions') there, a traceback rather than a bad-file line (QA, 2026-11-26)."""
    try:
        return getattr(img, "n_frames", 1)
    except TypeError as err:
        raise ValueError(f"a later page is damaged: {err}") from None


def stores_exact_pixels(fmt: str, fh: BinaryIO) -> bool:
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


def bits_per_sample(img: Image.Image) -> int:
    """Bits per sample in the file: 8, 16 or 32. Pillow decodes 16-bit colour PNG, TIFF and PPM to 8 bits and
    32-bit integer TIFF to mode I, but the PNG's raw mode, the TIFF's BitsPerSample tag and the PPM's maxval
    say what the file holds, so `output_note` can say what an output loses."""
    if img.mode == "F":
        return 32
    if isinstance(img, TiffImagePlugin.TiffImageFile):  # compressed TIFFs do not name the depth in their raw mode
        bits = img.tag_v2.get(_BITS_PER_SAMPLE, 8)  # one value, or one per sample
        deepest = max(bits if isinstance(bits, tuple) else (bits,))
        return 32 if deepest > 16 else 16 if deepest > 8 else 8
    if img.mode in SIXTEEN_BIT_MODES:
        return 16
    if img.format == "PPM" and img.tile and isinstance(img.tile[0].args, tuple):  # ("RGB", maxval)
        maxval = img.tile[0].args[-1]
        return 16 if isinstance(maxval, int) and maxval > 255 else 8
    rawmode = tile_raw_mode(img)
    return 16 if rawmode is not None and ";16" in rawmode else 8


def tile_raw_mode(img: Image.Image) -> str | None:
    """The sample layout of the file's first tile ("RGB;16B", ...), before `load()` empties the tile list."""
    rawmode = img.tile[0].args if img.tile else None
    return rawmode if isinstance(rawmode, str) else None
