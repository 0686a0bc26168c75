"""Whether a PNG's pixel stream holds every row its header declares.

Why: Pillow decodes a PNG whose zlib stream ends, cleanly, before the last row as if the missing rows were
black, and its decoder reports that exactly as it reports a whole image. A damaged upload would then be
retouched and written back with a black band and no word said. libspng (which reads 16-bit colour PNGs
here, `png16`) refuses such a file; this check gives every other PNG the same treatment by inflating the
IDAT stream once more, counting bytes only, and never past what the header declares (a stream that goes
on, a zip bomb, costs no more than a whole image). The cost is one more inflate: 0.14 s on top of a 0.55 s
load for a 12-MP photo PNG on the 2-core dev box.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel (grey, RGB, palette, GA, RGBA)
BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # legal per colour type
# Adam7 passes as (first column, first row, column step, row step), PNG spec section 8.2.
ADAM7_PASSES = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
INFLATE_STEP = 1 << 20  # bytes of output per inflate call: the count needs no more memory than this


def _row_bytes(pixels: int, bits_per_pixel: int) -> int:
    """One filtered row of `pixels`: its filter-type byte and the packed samples."""
    return 1 + (pixels * bits_per_pixel + 7) // 8


def stream_bytes(width: int, height: int, bit_depth: int, colour_type: int, interlaced: bool) -> int:
    """How many bytes the inflated IDAT stream of such an image holds: every (pass's) row, filter byte
    included; a pass with no pixels has no rows at all."""
    bits_per_pixel = CHANNELS[colour_type] * bit_depth
    if not interlaced:
        return height * _row_bytes(width, bits_per_pixel)
    total = 0
    for x0, y0, dx, dy in ADAM7_PASSES:
        pass_width, pass_height = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pass_width > 0 and pass_height > 0:
            total += pass_height * _row_bytes(pass_width, bits_per_pixel)
    return total


class _Truncated(Exception):
    """A chunk's length runs past the end of the data."""


def _chunks(data: bytes) -> Iterator[tuple[bytes, memoryview]]:
    """(type, payload) of each chunk up to IEND, as views (a file of a million one-byte IDAT chunks costs
    no list of copies); raises _Truncated where a chunk runs past the data."""
    view, offset = memoryview(data), len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        if offset + 12 + length > len(data):  # length, type, payload, CRC
            raise _Truncated
        yield kind, view[offset + 8:offset + 8 + length]
        if kind == b"IEND":
            return
        offset += 12 + length


def _header_problem(width: int, height: int, bit_depth: int, colour_type: int, methods: tuple[int, int],
                    interlace: int) -> str | None:
    """Why an IHDR's fields are not a legal PNG's (PNG spec 11.2.2), or None. Pillow reads some of these
    anyway (an interlace byte of 2 as Adam7); libspng refuses them all, and so does LangBRT."""
    if width == 0 or height == 0:
        return f"its header declares {width}x{height} pixels"
    if bit_depth not in BIT_DEPTHS.get(colour_type, ()):
        return f"its header's colour type {colour_type} with bit depth {bit_depth} is not a PNG's"
    if methods != (0, 0) or interlace not in (0, 1):
        return (f"its header's compression, filter or interlace method ({methods[0]}, {methods[1]}, {interlace}) "
                "is unknown")
    return None


def missing_rows(data: bytes) -> str | None:
    """None when the PNG `data`'s pixel stream holds every row its IHDR declares, else why not, in words;
    also a reason for a PNG whose header is not one LangBRT can check (the first chunk not a 13-byte IHDR,
    a second IHDR, a field no PNG has), which libspng refuses too. Data that is not a PNG at all is None:
    whether it decodes is Pillow's question, asked before this one.
    """
    if not data.startswith(PNG_SIGNATURE):
        return None
    inflater, produced, expected, width, height = zlib.decompressobj(), 0, None, 0, 0
    try:
        for index, (kind, payload) in enumerate(_chunks(data)):
            if kind == b"IHDR":
                if index != 0 or len(payload) != 13:
                    return "its header (IHDR) is not a single 13-byte chunk at the start"
                width, height, bit_depth, colour_type, *methods, interlace = struct.unpack(">IIBBBBB", payload)
                problem = _header_problem(width, height, bit_depth, colour_type, tuple(methods), interlace)
                if problem is not None:
                    return problem
                expected = stream_bytes(width, height, bit_depth, colour_type, interlace == 1)
                row = None if interlace == 1 else _row_bytes(width, CHANNELS[colour_type] * bit_depth)
            elif index == 0:
                return "its header (IHDR) is not a single 13-byte chunk at the start"
            elif kind == b"IDAT" and produced < expected and not inflater.eof:
                pending = payload
                while pending and produced < expected and not inflater.eof:
                    produced += len(inflater.decompress(pending, min(expected - produced, INFLATE_STEP)))
                    pending = inflater.unconsumed_tail
        while expected is not None and produced < expected and not inflater.eof:  # output zlib still holds
            out = inflater.decompress(b"", min(expected - produced, INFLATE_STEP))
            if not out:
                break
            produced += len(out)
    except zlib.error as err:
        return f"its pixel data is corrupt ({err})"
    except _Truncated:
        return "a chunk runs past the end of the file (it was cut short)"
    if expected is None or produced >= expected:
        return None
    if row is None:
        return f"its pixel data ends early ({produced} of the {expected} bytes its {width}x{height} pixels need)"
    return f"its pixel data ends after {produced // row} of its {height} rows"
