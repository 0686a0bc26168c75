"""The catalogue of bad (and awkward-but-valid) inputs that every entry point is fed in `test_bad_inputs.py`.

Each case is a builder that writes one file (or folder) into a given folder and returns its path, plus what
every entry point must make of it: `ok` cases must WORK (and come out upright at `size`), the others must
be refused with one clear line. Builders only use Pillow and the standard library, so the catalogue can be
reused by any test without a model.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (48, 30)  # (W, H) of every generated photo: not square, so a transposed output is caught
ROTATED_STORED = (80, 40)  # (W, H) as stored in the EXIF-rotated JPEG; upright it is (40, 80)
BOMB_SIDE = 20_000  # the bomb's header claims BOMB_SIDE x BOMB_SIDE = 400 MP
EXIF_ORIENTATION = 0x0112


def _noise(size: tuple[int, int] = SIZE, channels: int = 3, seed: int = 0) -> np.ndarray:
    """(H, W, C) uint8 noise: incompressible, so truncating or flipping its bytes always hits pixel data."""
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)


def _encoded(fmt: str, size: tuple[int, int] = SIZE) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_noise(size)).save(buf, format=fmt)
    return buf.getvalue()


def _chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, tag, data, CRC-32 of tag + data."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def deep_noise(size: tuple[int, int] = SIZE, channels: int = 3, seed: int = 1) -> np.ndarray:
    """(H, W, C) uint16 noise with no multiple of 257: an 8-bit value stretched to 16 bits is always one, so
    any value that went through 8 bits comes back different."""
    samples = np.random.default_rng(seed).integers(0, 65536, (size[1], size[0], channels), dtype=np.uint16)
    samples[samples % 257 == 0] ^= 1  # one step off: multiples of 257 are 257 apart
    return samples


def png16_bytes(samples: np.ndarray) -> bytes:
    """(H, W, C) uint16 -> a 16-bit PNG written by hand (C: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA); Pillow
    cannot write 16-bit colour PNGs."""
    height, width, channels = samples.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    big_endian = samples.astype(">u2").reshape(height, width * channels)  # (H, W*C)
    rows = b"".join(b"\x00" + big_endian[y].tobytes() for y in range(height))  # filter byte 0 per row
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows))
            + _chunk(b"IEND", b""))


def tiff16_bytes(samples: np.ndarray, *, lzw: bool = False) -> bytes:
    """(H, W, 3) uint16 -> a 16-bit RGB TIFF written by hand (Pillow cannot write one), uncompressed or, with
    `lzw`, LZW-compressed: the compression tifffile needs imagecodecs for. The LZW strip is Pillow's (libtiff's)
    for a 16-bit grey image of the same bytes, 3W samples per row."""
    height, width, _ = samples.shape
    pixels, compression = samples.astype("<u2").tobytes(), 1
    if lzw:
        grey = io.BytesIO()
        Image.fromarray(samples.astype("<u2").reshape(height, width * 3)).save(grey, format="TIFF",
                                                                              compression="tiff_lzw")
        with Image.open(grey) as written:
            (offset,), (length,) = written.tag_v2[273], written.tag_v2[279]  # one strip: offset, bytes
        pixels, compression = grey.getvalue()[offset: offset + length], 5
    count = 10  # IFD entries
    bits_at = 8 + 2 + 12 * count + 4  # after the header and the IFD
    pixels_at = bits_at + 6  # after BitsPerSample's three SHORTs
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 3, bits_at), (259, 3, 1, compression), (262, 3, 1, 2),
               (273, 4, 1, pixels_at), (277, 3, 1, 3), (278, 4, 1, height), (279, 4, 1, len(pixels)),
               (284, 3, 1, 1)]  # width, height, bits, compression, RGB, strip, 3 samples, rows, bytes, chunky
    assert len(entries) == count
    ifd = struct.pack("<H", count) + b"".join(
        struct.pack("<HHI", tag, kind, n) + (struct.pack("<HH", value, 0) if kind == 3 and n == 1
                                             else struct.pack("<I", value))
        for tag, kind, n, value in entries) + struct.pack("<I", 0)  # no next IFD
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<3H", 16, 16, 16) + pixels


CAMERA_TAGS = {0x010F: "LangBRT test camera", 0x0110: "Model 7", 0x0131: "darktable 4.6"}  # Make, Model, Software
EXIF_IFD, CAPTURE_TIME = 0x8769, 0x9003  # the Exif sub-IFD and its DateTimeOriginal
TIFF_LAYOUT_TAGS = (256, 257, 258, 259, 262, 273, 277, 278, 279)  # width ... strip bytes: the TIFF's own, not EXIF


def camera_tiff_bytes(size: tuple[int, int] = SIZE, orientation: int = 1) -> bytes:
    """An 8-bit RGB TIFF as a raw developer writes one: CAMERA_TAGS and `orientation` in its first IFD beside
    TIFF_LAYOUT_TAGS, a capture time in an Exif sub-IFD, an ICC profile."""
    exif = Image.Exif()
    exif.update(CAMERA_TAGS)
    exif[EXIF_ORIENTATION] = orientation
    exif[EXIF_IFD] = {CAPTURE_TIME: "2026:01:02 03:04:05"}
    from_file = Image.Exif()
    from_file.load(exif.tobytes())  # Pillow writes a TIFF's sub-IFDs only from EXIF read from a file
    buf = io.BytesIO()
    Image.fromarray(_noise(size)).save(buf, format="TIFF", exif=from_file, icc_profile=b"fake-icc")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- builders


def zero_byte(folder: Path) -> Path:
    path = folder / "zero.png"
    path.write_bytes(b"")
    return path


def truncated_jpeg(folder: Path) -> Path:
    data = _encoded("JPEG", (64, 64))
    path = folder / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


def truncated_png(folder: Path) -> Path:
    data = _encoded("PNG", (64, 64))
    path = folder / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    return path


def corrupt_png(folder: Path) -> Path:
    """A complete PNG with 64 bytes in the middle of its pixel data flipped (CRC and deflate both break)."""
    data = bytearray(_encoded("PNG", (64, 64)))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path = folder / "corrupt.png"
    path.write_bytes(bytes(data))
    return path


def text_as_jpg(folder: Path) -> Path:
    path = folder / "notes.jpg"
    path.write_text("this is a shopping list, not a photo\n", encoding="utf-8")
    return path


def decompression_bomb(folder: Path) -> Path:
    """A real 8x8 PNG whose IHDR is patched to claim 20000x20000, with the IHDR CRC recomputed."""
    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR", "Pillow always writes IHDR first"
    data[16:24] = struct.pack(">II", BOMB_SIDE, BOMB_SIDE)  # width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC over tag + 13 data bytes
    path = folder / "bomb.png"
    path.write_bytes(bytes(data))
    return path


def one_by_one(folder: Path) -> Path:
    path = folder / "dot.png"
    Image.new("RGB", (1, 1), (200, 150, 130)).save(path)
    return path


def grayscale(folder: Path) -> Path:
    path = folder / "gray.png"
    Image.fromarray(_noise(channels=1)[:, :, 0], "L").save(path)
    return path


def palette(folder: Path) -> Path:
    path = folder / "palette.png"
    Image.fromarray(_noise()).quantize(16).save(path)
    return path


def rgba(folder: Path) -> Path:
    path = folder / "rgba.png"
    Image.fromarray(_noise(channels=4), "RGBA").save(path)
    return path


def cmyk_jpeg(folder: Path) -> Path:
    path = folder / "cmyk.jpg"
    Image.fromarray(_noise(channels=4), "CMYK").save(path, format="JPEG")
    return path


def png_16bit(folder: Path) -> Path:
    path = folder / "deep.png"
    path.write_bytes(png16_bytes(deep_noise()))
    return path


def png_16bit_rgba(folder: Path) -> Path:
    path = folder / "deep-rgba.png"
    path.write_bytes(png16_bytes(deep_noise(channels=4)))
    return path


def truncated_png_16bit(folder: Path) -> Path:
    data = png16_bytes(deep_noise((64, 64)))
    path = folder / "truncated-deep.png"
    path.write_bytes(data[: len(data) // 2])
    return path


def tiff_16bit(folder: Path) -> Path:
    path = folder / "deep.tif"
    path.write_bytes(tiff16_bytes(deep_noise()))
    return path


def exif_rotated_jpeg(folder: Path) -> Path:
    """Stored 80x40 landscape with EXIF orientation 6 (rotate 90 degrees clockwise): upright it is 40x80."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    path = folder / "rotated.jpg"
    Image.fromarray(_noise(ROTATED_STORED)).save(path, exif=exif.tobytes())
    return path


# ---------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class ImageCase:
    """One image file and what every entry point must do with it."""

    name: str
    build: Callable[[Path], Path]
    ok: bool  # True: must work; False: refused with one line
    size: tuple[int, int] | None = None  # (W, H) the output must have, upright; ok cases only
    status: int = 200  # the server's answer
    media_type: str = "image/png"  # what a client would send it as

    def __str__(self) -> str:
        return self.name


IMAGE_CASES = (
    ImageCase("zero-byte", zero_byte, ok=False, status=422),
    ImageCase("truncated-jpeg", truncated_jpeg, ok=False, status=422, media_type="image/jpeg"),
    ImageCase("truncated-png", truncated_png, ok=False, status=422),
    ImageCase("truncated-16-bit-png", truncated_png_16bit, ok=False, status=422),
    ImageCase("corrupt-png", corrupt_png, ok=False, status=422),
    # A client uploading a text file usually says so: the server refuses the media type before decoding.
    ImageCase("text-as-jpg", text_as_jpg, ok=False, status=415, media_type="text/plain"),
    ImageCase("bomb-20000x20000", decompression_bomb, ok=False, status=413),
    ImageCase("1x1", one_by_one, ok=True, size=(1, 1)),
    ImageCase("grayscale", grayscale, ok=True, size=SIZE),
    ImageCase("palette", palette, ok=True, size=SIZE),
    ImageCase("rgba", rgba, ok=True, size=SIZE),
    ImageCase("cmyk-jpeg", cmyk_jpeg, ok=True, size=SIZE, media_type="image/jpeg"),
    ImageCase("16-bit-png", png_16bit, ok=True, size=SIZE),
    ImageCase("16-bit-rgba-png", png_16bit_rgba, ok=True, size=SIZE),
    ImageCase("16-bit-rgb-tiff", tiff_16bit, ok=True, size=SIZE, media_type="image/tiff"),  # read at 16 bits
    ImageCase("exif-rotated", exif_rotated_jpeg, ok=True, size=ROTATED_STORED[::-1], media_type="image/jpeg"),
)
BAD_IMAGES = tuple(c for c in IMAGE_CASES if not c.ok)


@dataclass(frozen=True)
class PromptCase:
    name: str
    text: str
    ok: bool

    def __str__(self) -> str:
        return self.name


PROMPT_CASES = (
    PromptCase("empty", "", ok=False),
    PromptCase("whitespace", " \t\n  ", ok=False),
    PromptCase("10000-chars", "acne " * 2000, ok=False),
    PromptCase("french", "acné sur la joue droite", ok=True),  # not in any baked table: the encoder runs
    PromptCase("japanese", "にきび", ok=True),
)


def text_file_model(folder: Path) -> Path:
    path = folder / "model.txt"
    path.write_text("not a model\n", encoding="utf-8")
    return path


def folder_without_config(folder: Path) -> Path:
    path = folder / "not-a-checkpoint"
    path.mkdir()
    (path / "model.safetensors").write_bytes(b"\x00" * 16)
    return path


def config_with_a_string_format_version(folder: Path) -> Path:
    """A checkpoint folder whose hand-edited config.json has `"format_version": "x"`."""
    path = folder / "edited-checkpoint"
    path.mkdir()
    (path / "model.safetensors").write_bytes(b"\x00" * 16)
    (path / "config.json").write_text(json.dumps({"format": "langbrt-checkpoint", "format_version": "x"}),
                                      encoding="utf-8")
    return path


def config_with_a_number_of_5000_digits(folder: Path) -> Path:
    """json.loads raises a plain ValueError for it (Python's int-from-string limit), not JSONDecodeError."""
    path = folder / "huge-number-checkpoint"
    path.mkdir()
    (path / "config.json").write_text('{"format": "langbrt-checkpoint", "format_version": ' + "1" * 5000 + "}",
                                      encoding="utf-8")
    return path


def config_nested_100000_deep(folder: Path) -> Path:
    """json.loads raises RecursionError for it."""
    path = folder / "deep-checkpoint"
    path.mkdir()
    (path / "config.json").write_text("[" * 100_000, encoding="utf-8")
    return path


MODEL_CASES = {"text-file": text_file_model, "folder-without-config": folder_without_config,
               "string-format-version": config_with_a_string_format_version,
               "number-of-5000-digits": config_with_a_number_of_5000_digits,
               "nested-100000-deep": config_nested_100000_deep}


def file_where_a_folder_is_expected(folder: Path) -> Path:
    """An output "folder" that cannot be written into. As root, chmod 0o555 does not stop writes, so an
    existing FILE stands in for the read-only folder: every mkdir/open below it fails with an OSError."""
    path = folder / "out"
    path.write_text("I am a file\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- checks


def checksums(*roots: Path) -> dict[Path, str]:
    """sha256 of every file under `roots` (files or folders): compare before and after a run."""
    files = [p for root in roots for p in ([root] if root.is_file() else sorted(root.rglob("*"))) if p.is_file()]
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
