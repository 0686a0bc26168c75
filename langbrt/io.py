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

This module is the public front of that boundary, the import path the README documents (`from langbrt.io import
read_image, write_image`); it re-exports the API and holds no code. The work is done by one module per job:
`image_read` decodes a photo into a LoadedImage (with `image_properties` for what the file holds besides its
pixels, and `image_planes` for its pixels as tensors), `image_write` encodes and writes one, and
`pixel_values` converts between tensors and uint8 / uint16 arrays.
"""

from langbrt.image_read import (
    DEFAULT_MAX_PIXELS,
    READ_FORMATS,
    READ_SUFFIXES,
    LoadedImage,
    image_pixels,
    load_image,
    load_image_bytes,
    output_note,
    read_image,
    read_image_bytes,
)
from langbrt.image_write import FAST_PNG_LEVEL, WRITE_SUFFIXES, encode_image, write_image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FAST_PNG_LEVEL",
    "READ_FORMATS",
    "READ_SUFFIXES",
    "WRITE_SUFFIXES",
    "LoadedImage",
    "encode_image",
    "image_pixels",
    "load_image",
    "load_image_bytes",
    "output_note",
    "read_image",
    "read_image_bytes",
    "write_image",
]
