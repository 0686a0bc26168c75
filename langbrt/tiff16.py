"""16-bit colour TIFF samples at full depth, for the TIFFs Pillow decodes to 8 bits.

Pillow has no 16-bit RGB mode: it opens a 16-bit RGB(A) TIFF as 8-bit RGB(A), so a raw developer's export
would come back with 8 of its 16 bits. tifffile (pure Python over numpy, the reader scientific imaging
uses) returns the file's own samples. Without its optional `imagecodecs` it decodes uncompressed,
Deflate/ZIP and LZMA strips and tiles, with or without the horizontal predictor; LZW, PackBits and JPEG
need imagecodecs, a large compiled package we do not require, and those files keep Pillow's 8-bit pixels
(the caller says so).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

_RGB = 2  # TIFF PhotometricInterpretation
_UNASSOCIATED_ALPHA = 2  # TIFF ExtraSamples: straight (not premultiplied) alpha, what Pillow's RGBA is


def decode_tiff16(fh: BinaryIO) -> np.ndarray | None:
    """The first page of a 16-bit RGB or RGBA TIFF as stored: (H, W, 3) or (H, W, 4) uint16 samples.

    None when this reader does not give them exactly: a compression that needs imagecodecs, another
    colour space (YCbCr, CMYK), premultiplied alpha, more extra samples, or any decoding error. Pillow has
    already decoded the file at 8 bits by then, so None only means "keep those". EXIF orientation is not
    applied: the caller owns metadata.
    """
    import tifffile  # here, not at import: only 16-bit colour TIFFs need it

    fh.seek(0)
    try:
        with _tifffile_quiet(), tifffile.TiffFile(fh) as tif:
            page = tif.pages[0]
            samples = page.samplesperpixel
            if (page.photometric != _RGB or page.dtype != np.uint16 or samples not in (3, 4)
                    or (samples == 4 and tuple(page.extrasamples) != (_UNASSOCIATED_ALPHA,))):
                return None
            data = page.asarray()  # (H, W, S), or (S, H, W) for planar files
            if page.axes.endswith("YX"):
                data = np.moveaxis(data, 0, -1)
    except Exception:
        # Any: Pillow has decoded this file already, so a failure here costs 8 bits, never the photo. tifffile's
        # parser raises more than its own errors on tags Pillow reads past (QA: an ImageWidth stored as two SHORTs,
        # a TypeError; fuzzed headers gave ZeroDivisionError, OverflowError, MemoryError), and the named list
        # (TiffFileError, ValueError for "requires the 'imagecodecs' package", zlib.error, ...) let those end
        # langbrt-infer in a traceback for a photo it used to retouch.
        return None
    if data.shape != (page.imagelength, page.imagewidth, samples):
        return None
    return np.ascontiguousarray(data)


@contextlib.contextmanager
def _tifffile_quiet() -> Iterator[None]:
    """Drop what tifffile logs from this thread while it reads. Why: it logs a tag it cannot parse (a
    ResolutionUnit of 96, a damaged IFD) as an error and carries on; with no logging set up, Python prints that
    on stderr, a stray '<tifffile.TiffTag 296 @166> raised ValueError(...)' line around langbrt-infer's own
    output (QA). Such a file is still read, or None keeps Pillow's pixels; either way there is nothing to say."""
    logger = logging.getLogger("tifffile")
    thread = threading.get_ident()

    def other_threads(record: logging.LogRecord) -> bool:
        return record.thread != thread

    logger.addFilter(other_threads)
    try:
        yield
    finally:
        logger.removeFilter(other_threads)
