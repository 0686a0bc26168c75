"""16-bit colour PNG samples in and out, for the PNGs Pillow cannot carry at full depth.

Pillow decodes 16-bit RGB and RGBA PNGs to 8 bits and cannot write them (16-bit grey, its mode I;16, it
handles itself). pyspng (libspng, C) decodes them exactly, at about 0.03 s per megapixel on the 2-core dev
box; pypng (pure Python) writes them, at about 0.17 s per megapixel. pypng also reads them, but undoes row
filters in Python (about 2 s per megapixel for Paeth rows): a small, highly compressible upload could hold a
server's Python lock for over a minute, so it only writes. 16-bit grey+alpha PNGs, which pyspng's public
`load` cannot give at 16 bits, are read by Pillow at 8 bits (and the caller says so).
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import png
import pyspng

EXIF_PREFIX = b"Exif\x00\x00"  # Pillow's `info["exif"]` starts with it; a PNG eXIf chunk does not
ICC_NAME = b"ICC Profile"  # the iCCP profile name Pillow writes
OPAQUE = 65535


def decode_png16(data: bytes, *, alpha: bool, colour_key: tuple[int, int, int] | None = None) -> np.ndarray:
    """16-bit RGB or RGBA PNG bytes -> (H, W, 3) or, with `alpha` or a `colour_key`, (H, W, 4) uint16 samples.

    `alpha`: the file is RGBA. `colour_key`: an RGB file's tRNS colour (Pillow's `info["transparency"]`),
    which becomes an alpha plane, 0 where a pixel has that colour, as Pillow does for 8-bit files (libspng
    leaves it to us). EXIF orientation is not applied: the caller owns metadata. libspng decodes only the
    rows the header declares, so pixel data past them (a zip bomb) is never inflated. Raises ValueError for
    damaged data.
    """
    try:
        decoded = pyspng.load(data)  # (H, W, 4): libspng gives RGB16 files an opaque alpha plane
    except RuntimeError as err:  # pyspng's only error type: "could not decode image: end of stream", ...
        raise ValueError(str(err).removeprefix("pyspng: ")) from None
    if decoded.dtype != np.uint16 or decoded.ndim != 3 or decoded.shape[2] not in (3, 4):
        raise ValueError(f"expected 16-bit RGB(A) samples, got {decoded.dtype} {decoded.shape}")
    rgb = decoded[:, :, :3]  # (H, W, 3)
    if alpha and decoded.shape[2] == 4:
        return np.ascontiguousarray(decoded)
    if colour_key is None:
        return np.ascontiguousarray(rgb)
    keyed = (rgb == np.asarray(colour_key, dtype=np.uint16)).all(axis=2)  # (H, W)
    return np.concatenate([rgb, np.where(keyed, 0, OPAQUE).astype(np.uint16)[:, :, None]], axis=2)  # (H, W, 4)


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
