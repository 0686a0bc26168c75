"""A PNG whose pixel stream ends before its last row is refused (`langbrt.png_rows`), not read with the missing
rows black as Pillow reads it; every whole PNG still loads, whatever its colour type, depth or interlacing."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from langbrt.errors import LangBRTInputError
from langbrt.io import load_image_bytes, read_image
from langbrt.png_rows import missing_rows, stream_bytes


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(width: int, height: int, bit_depth: int, colour_type: int, interlaced: bool, stream: bytes,
         idat_pieces: int = 1) -> bytes:
    """A PNG of these header fields whose IDAT stream (split over `idat_pieces` chunks) inflates to `stream`."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, int(interlaced))
    palette = _chunk(b"PLTE", bytes(range(48))) if colour_type == 3 else b""
    compressed = zlib.compress(stream)
    step = -(-len(compressed) // idat_pieces)
    idats = b"".join(_chunk(b"IDAT", compressed[i:i + step]) for i in range(0, len(compressed), step))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + palette + idats + _chunk(b"IEND", b"")


def _gradient_rows(width: int, height: int) -> bytes:
    """Filter type 0 rows of an 8-bit RGB image, brighter down the rows: a missing row would read as black."""
    return b"".join(b"\x00" + bytes([(100 + 10 * y) % 256, 50, 25] * width) for y in range(height))


HEADERS = [  # width, height, bit depth, colour type, interlaced
    pytest.param(16, 12, 8, 2, False, id="rgb8"),
    pytest.param(16, 12, 8, 2, True, id="rgb8-adam7"),
    pytest.param(13, 7, 4, 3, True, id="palette4-adam7"),
    pytest.param(5, 3, 1, 0, False, id="grey1"),
    pytest.param(9, 9, 16, 0, True, id="grey16-adam7"),
    pytest.param(10, 6, 8, 6, False, id="rgba8"),
    pytest.param(3, 1, 8, 4, True, id="grey-alpha8-adam7-one-row"),  # passes with no pixels have no rows
]


@pytest.mark.parametrize(("width", "height", "bit_depth", "colour_type", "interlaced"), HEADERS)
def test_a_whole_stream_passes_and_a_short_one_is_named(width, height, bit_depth, colour_type, interlaced):
    """stream_bytes is what Pillow itself decodes from (it loads the whole file); a third less is short."""
    need = stream_bytes(width, height, bit_depth, colour_type, interlaced)
    whole = _png(width, height, bit_depth, colour_type, interlaced, bytes(need), idat_pieces=3)
    Image.open(io.BytesIO(whole)).load()
    assert missing_rows(whole) is None
    assert missing_rows(_png(width, height, bit_depth, colour_type, interlaced, bytes(need + 7))) is None
    short = _png(width, height, bit_depth, colour_type, interlaced, bytes(need - need // 3))
    reason = missing_rows(short)
    assert reason is not None and "ends" in reason


def test_pillow_reads_the_missing_rows_black_and_langbrt_refuses_the_file(tmp_path: Path):
    """The case this guards against: the zlib stream is complete and ends cleanly after 6 of 12 rows."""
    short = _png(16, 12, 8, 2, False, _gradient_rows(16, 6))
    pillow = np.asarray(Image.open(io.BytesIO(short)))
    assert (pillow[6:] == 0).all() and (pillow[:6, :, 0] > 0).all()  # no error from Pillow, black rows
    with pytest.raises(LangBRTInputError) as info:
        load_image_bytes(short, "upload.png")
    assert str(info.value) == "upload.png: corrupt or truncated image (its pixel data ends after 6 of its 12 rows)"
    path = tmp_path / "photo.png"
    path.write_bytes(short)
    with pytest.raises(LangBRTInputError, match="photo.png: corrupt or truncated image"):
        read_image(path)
    assert path.read_bytes() == short  # the input is never modified


def test_a_corrupt_deflate_stream_is_named():
    stream = bytearray(zlib.compress(_gradient_rows(16, 12)))
    stream[2] = 0xFF  # an invalid block type right after the zlib header
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 12, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", bytes(stream)) + _chunk(b"IEND", b""))
    assert "corrupt" in missing_rows(data)


def test_whole_pngs_pillow_writes_pass_unchanged():
    rng = np.random.default_rng(0)
    for mode, shape in (("RGB", (31, 45, 3)), ("RGBA", (8, 9, 4)), ("L", (17, 3)), ("P", (20, 20))):
        pixels = rng.integers(0, 255, shape, dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if mode == "P" else pixels).convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        assert missing_rows(buffer.getvalue()) is None, mode
        loaded = load_image_bytes(buffer.getvalue(), f"{mode}.png")
        assert loaded.size == image.size


def test_not_a_png_is_left_to_the_decoder():
    assert missing_rows(b"GIF89a....") is None


def _short_rgb_idat() -> bytes:
    return _chunk(b"IDAT", zlib.compress(_gradient_rows(16, 6)))  # 6 of 12 rows of a 16x12 RGB image


def _ihdr(width: int, height: int, interlace: int = 0, extra: bytes = b"") -> bytes:
    return _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, interlace) + extra)


SIGNATURE, IEND = b"\x89PNG\r\n\x1a\n", _chunk(b"IEND", b"")


@pytest.mark.parametrize(("data", "reason"), [
    pytest.param(SIGNATURE + _ihdr(1, 1) + _ihdr(16, 12) + _short_rgb_idat() + IEND, "not a single 13-byte chunk",
                 id="second-ihdr"),
    pytest.param(SIGNATURE + _chunk(b"tEXt", b"a\0b") + _ihdr(16, 12) + _short_rgb_idat() + IEND,
                 "not a single 13-byte chunk", id="chunk-before-ihdr"),
    pytest.param(SIGNATURE + _ihdr(16, 12, extra=b"\0") + _short_rgb_idat() + IEND, "not a single 13-byte chunk",
                 id="14-byte-ihdr"),
    pytest.param(SIGNATURE + _ihdr(16, 12, interlace=2) + _short_rgb_idat() + IEND, "interlace method (0, 0, 2)",
                 id="interlace-byte-2"),
    pytest.param(SIGNATURE + IEND, "not a single 13-byte chunk", id="no-ihdr"),
])
def test_a_header_pillow_bends_the_rules_for_is_refused(data, reason):
    """Pillow reads these (the last IHDR, chunks before it, a long IHDR, any non-zero interlace byte as
    Adam7) and hands back the short streams' missing rows black; libspng refuses them, and so does LangBRT
    (QA, 2026-11-26), rather than guess which header Pillow used."""
    assert reason in missing_rows(data)
    if b"IHDR" in data:
        with pytest.raises(LangBRTInputError, match="corrupt or truncated image"):
            load_image_bytes(data, "crafted.png")


def test_a_chunk_cut_short_is_named_as_such():
    """The IDAT's length runs past the end of the file (the zlib stream inside may even be whole)."""
    whole = _png(16, 12, 8, 2, False, _gradient_rows(16, 12))
    cut = whole[:-len(IEND) - 2]  # the last IDAT loses its CRC's last bytes, IEND is gone
    assert missing_rows(cut) == "a chunk runs past the end of the file (it was cut short)"


def test_ninety_thousand_one_byte_idat_chunks_cost_no_list_of_copies():
    """The chunks are walked as views of the file and fed to the inflater one by one."""
    import tracemalloc

    noise = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)  # incompressible
    stream = zlib.compress(b"".join(b"\x00" + row.tobytes() for row in noise), 1)
    data = (SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", 200, 150, 8, 2, 0, 0, 0))
            + b"".join(_chunk(b"IDAT", stream[i:i + 1]) for i in range(len(stream))) + IEND)
    tracemalloc.start()
    try:
        assert missing_rows(data) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(data) // 4, (peak, len(data))


def test_langbrt_infer_refuses_it_in_one_line(tmp_path: Path):
    """The CLI: one error line naming the file, a non-zero exit, and no output written."""
    photo = tmp_path / "short.png"
    photo.write_bytes(_png(16, 12, 8, 2, False, _gradient_rows(16, 6)))
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "langbrt.runtime.cli_infer", str(photo), "--prompt", "acne",
                             "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert any("short.png: corrupt or truncated image (its pixel data ends after 6 of its 12 rows)" in line
               for line in errors), result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())
