"""16-bit PNG samples in and out through pypng, for the PNGs Pillow cannot carry at full depth.

Pillow decodes 16-bit RGB, RGBA and grey+alpha PNGs to 8 bits and cannot write them (16-bit grey, its mode
I;16, it handles itself). pypng, the pure-Python PNG library, reads and writes them exactly. The price is
speed: it undoes row filters in Python, about 1.6 s per megapixel for Paeth-filtered rows on the 2-core dev
box (0.1 s unfiltered), where Pillow takes milliseconds; only 16-bit PNGs take this path.
"""

from __future__ import annotations

import io
import itertools
import struct
import zlib

import numpy as np
import png

PNG_ERRORS = (png.Error,)
"""What pypng raises for a damaged stream (FormatError, ChunkError, ...)."""

EXIF_PREFIX = b"Exif\x00\x00"  # Pillow's `info["exif"]` starts with it; a PNG eXIf chunk does not
ICC_NAME = b"ICC Profile"  # the iCCP profile name Pillow writes
_PLANES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
_INFLATE_STEP = 1 << 20  # bytes inflated per call while checking the size


def decode_png16(data: bytes) -> np.ndarray:
    """16-bit PNG bytes -> (H, W, C) uint16 samples as stored: C is 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA.

    A tRNS colour key becomes an alpha plane (0 where a pixel has the key colour, 65535 elsewhere), as Pillow
    does for 8-bit files. EXIF orientation is not applied: the caller owns metadata. Raises `PNG_ERRORS`,
    ValueError or zlib.error for damaged data.
    """
    _check_inflated_size(data)
    width, height, rows, info = png.Reader(bytes=data).read()
    if info["bitdepth"] != 16:
        raise ValueError(f"expected a 16-bit PNG, got {info['bitdepth']} bits per sample")
    planes = info["planes"]
    samples = np.empty((height, width * planes), dtype=np.uint16)  # (H, W*C)
    count = 0
    for y, row in enumerate(itertools.islice(rows, height)):  # rows past the header's height are never unfiltered
        samples[y] = np.frombuffer(row, dtype=np.uint16)  # pypng's array('H'): native byte order
        count = y + 1
    if count != height:
        raise ValueError(f"pixel data ends after {count} of {height} rows")
    samples = samples.reshape(height, width, planes)  # (H, W, C)
    key = info.get("transparent")
    if key is None:
        return samples
    alpha = np.where((samples == np.asarray(key, dtype=np.uint16)).all(axis=2), 0, 65535).astype(np.uint16)
    return np.concatenate([samples, alpha[:, :, None]], axis=2)  # (H, W, C + 1)


def _check_inflated_size(data: bytes) -> None:
    """Refuse pixel data that inflates past twice what the header's size needs, before pypng inflates it.

    Why: pypng inflates each IDAT chunk whole, so one chunk of compressed zeros in a 25 MB upload (a zip bomb)
    would take ~25 GB before any check. Twice the need leaves room for interlacing's extra filter bytes;
    pypng checks the exact size itself.
    """
    inflater = zlib.decompressobj()
    limit = total = 0
    for tag, body in png.Reader(bytes=data).chunks():
        if tag == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            limit = 2 * height * (1 + width * _PLANES.get(colour_type, 4) * depth // 8) + 65536
        elif tag == b"IDAT":
            pending = body
            while pending:
                total += len(inflater.decompress(pending, _INFLATE_STEP))
                pending = inflater.unconsumed_tail
                if total > limit:
                    raise ValueError(f"pixel data inflates past {limit} bytes, more than the image size allows")


def encode_png16(
    samples: np.ndarray, *, compression: int | None = None, exif: bytes | None = None,
    icc_profile: bytes | None = None,
) -> bytes:
    """(H, W, C) uint16 samples, C = 3 (RGB) or 4 (RGBA) -> 16-bit PNG bytes.

    `compression` is the zlib level (None: zlib's default, 6, as Pillow). EXIF goes into an eXIf chunk and the
    ICC profile into an iCCP chunk, both right after IHDR: the metadata Pillow writes for an 8-bit PNG.
    """
    assert samples.dtype == np.uint16 and samples.ndim == 3 and samples.shape[2] in (3, 4), (
        f"expected (H, W, 3 or 4) uint16, got {samples.dtype} {samples.shape}"
    )
    height, width, channels = samples.shape
    big_endian = samples.astype(">u2").reshape(height, width * channels)  # (H, W*C): PNG's sample order
    writer = png.Writer(width, height, greyscale=False, alpha=channels == 4, bitdepth=16, compression=compression)
    buf = io.BytesIO()
    writer.write_packed(buf, (row.tobytes() for row in big_endian))
    metadata = _metadata_chunks(exif, icc_profile)
    if not metadata:
        return buf.getvalue()
    header, *rest = png.Reader(bytes=buf.getvalue()).chunks()  # IHDR, IDAT..., IEND
    out = io.BytesIO()
    png.write_chunks(out, [header, *metadata, *rest])
    return out.getvalue()


def _metadata_chunks(exif: bytes | None, icc_profile: bytes | None) -> list[tuple[bytes, bytes]]:
    chunks = []
    if icc_profile:
        chunks.append((b"iCCP", ICC_NAME + b"\x00\x00" + zlib.compress(icc_profile)))  # name, NUL, method 0
    if exif:
        chunks.append((b"eXIf", exif[len(EXIF_PREFIX):] if exif.startswith(EXIF_PREFIX) else exif))
    return chunks
