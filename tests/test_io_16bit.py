"""16-bit files in langbrt.io: 16-bit PNGs (any colour type) and colour TIFFs are read and written back exactly,
alpha too; what cannot keep 16 bits (an LZW TIFF) says so; a damaged 16-bit PNG is one clear line."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import tifffile
import torch
from bad_inputs import CAMERA_TAGS, SIZE, TIFF_LAYOUT_TAGS, deep_noise, png16_bytes, tiff16_bytes
from PIL import Image, ImageOps

from langbrt.errors import LangBRTInputError
from langbrt.io import (
    encode_image,
    load_image,
    load_image_bytes,
    output_note,
    read_image_bytes,
    write_image,
)
from langbrt.pixel_values import from_uint16_hwc, to_uint16_hwc
from langbrt.png16 import decode_png16, encode_png16
from langbrt.runtime import Retoucher
from langbrt.runtime.backends.base import BackendOutput

EXIF_ORIENTATION = 0x0112


def _ihdr_depth_and_colour(data: bytes) -> tuple[int, int]:
    assert data[12:16] == b"IHDR"
    return data[24], data[25]


# ---------------------------------------------------------------------------------------------- reading


def test_every_16bit_value_survives_the_float_round_trip():
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256, 1)  # (H, W, 1): all of them
    assert np.array_equal(to_uint16_hwc(from_uint16_hwc(values)), values)


def test_a_16bit_rgb_png_is_read_at_full_precision():
    samples = deep_noise()
    loaded = load_image_bytes(png16_bytes(samples))
    assert (loaded.bit_depth, loaded.output_bit_depth, loaded.alpha) == (16, 16, None)
    assert torch.equal(loaded.rgb, from_uint16_hwc(samples))  # samples / 65535, not the high byte / 255


def test_a_16bit_rgba_png_keeps_its_alpha_at_16_bits():
    samples = deep_noise(channels=4)
    loaded = load_image_bytes(png16_bytes(samples))
    assert loaded.alpha is not None
    assert np.array_equal(to_uint16_hwc(loaded.alpha), samples[:, :, 3:])
    assert np.array_equal(to_uint16_hwc(loaded.rgb), samples[:, :, :3])


def test_a_16bit_grey_with_alpha_png_is_read_at_8_bits_and_says_so():
    """libspng cannot give grey+alpha at 16 bits, and pypng's pure-Python decode is too slow to serve: Pillow
    reads it at 8 bits, and the caller is told."""
    samples = deep_noise(channels=2)
    loaded = load_image_bytes(png16_bytes(samples), "ga.png")
    assert (loaded.bit_depth, loaded.output_bit_depth) == (16, 8)
    assert np.array_equal(to_uint16_hwc(loaded.rgb), np.repeat(samples[:, :, :1] >> 8, 3, axis=2) * 257)
    assert loaded.alpha is not None and np.array_equal(to_uint16_hwc(loaded.alpha), (samples[:, :, 1:] >> 8) * 257)
    assert output_note(loaded, "ga.png").startswith("ga.png: 16-bit PNG comes back as 8-bit")


def test_a_16bit_colour_key_becomes_alpha():
    samples = deep_noise((4, 1))
    key = samples[0, 2]
    data = png16_bytes(samples)
    data = data[:33] + _png_chunk(b"tRNS", struct.pack(">3H", *key.tolist())) + data[33:]  # after IHDR
    loaded = load_image_bytes(data)
    assert loaded.alpha is not None and to_uint16_hwc(loaded.alpha)[0, :, 0].tolist() == [65535, 65535, 0, 65535]


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_16bit_png_is_turned_upright_exactly_as_pillow_turns_its_8bit_decode(orientation):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    data = encode_png16(deep_noise((6, 4)), exif=exif.tobytes())
    loaded = load_image_bytes(data)
    with Image.open(io.BytesIO(data)) as pillow:  # Pillow keeps the high byte of each sample
        upright = np.asarray(ImageOps.exif_transpose(pillow))
    assert np.array_equal(to_uint16_hwc(loaded.rgb) >> 8, upright)
    kept = Image.Exif()
    kept.load(loaded.exif or b"")
    assert kept.get(EXIF_ORIENTATION, 1) == 1  # applied, so removed (1 is "as stored")


def test_a_16bit_grey_png_and_a_16bit_grey_tiff_keep_16_bits(tmp_path):
    grey = deep_noise(channels=1)[:, :, 0]  # (H, W)
    for name in ("grey16.png", "grey16.tif"):
        Image.fromarray(grey).save(tmp_path / name)
        loaded = load_image(tmp_path / name)
        assert loaded.output_bit_depth == 16 and output_note(loaded, name) is None
        assert np.array_equal(to_uint16_hwc(loaded.rgb)[:, :, 0], grey)


@pytest.mark.parametrize("layout", [
    {}, {"compression": "zlib", "predictor": True}, {"compression": "lzma"}, {"tile": (16, 16)}, {"byteorder": ">"},
    {"extrasamples": ["unassalpha"]}, *({"extratags": [(274, 3, 1, turn, True)]} for turn in range(2, 9)),
], ids=lambda layout: "-".join(map(str, layout)) or "plain")
def test_a_16bit_colour_tiff_keeps_16_bits_upright_as_pillow_turns_it(layout):
    """tifffile's samples, in the orientation Pillow's own (8-bit) decoding of the same file has."""
    samples = deep_noise(channels=4 if "extrasamples" in layout else 3)
    data = io.BytesIO()
    tifffile.imwrite(data, samples, photometric="rgb", **layout)
    loaded = load_image_bytes(data.getvalue(), "deep.tif")
    assert (loaded.bit_depth, loaded.output_bit_depth, output_note(loaded)) == (16, 16, None)
    with Image.open(data) as img:
        eight_bit = np.asarray(img.convert("RGBA" if "extrasamples" in layout else "RGB"))  # upright, >> 8
    got = to_uint16_hwc(loaded.rgb if loaded.alpha is None else torch.cat([loaded.rgb, loaded.alpha]))
    assert loaded.size == (got.shape[1], got.shape[0]) and np.array_equal(got >> 8, eight_bit)
    if "extratags" not in layout:
        assert np.array_equal(got, samples)


def test_an_lzw_16bit_colour_tiff_is_read_at_8_bits_and_says_so():
    """LZW needs tifffile's optional imagecodecs, which LangBRT does not require."""
    loaded = load_image_bytes(tiff16_bytes(deep_noise(), lzw=True), "deep.tif")
    assert (loaded.bit_depth, loaded.output_bit_depth) == (16, 8)
    note = output_note(loaded, "deep.tif")
    assert note is not None and "\n" not in note and note.startswith("deep.tif: 16-bit TIFF comes back as 8-bit")


def test_8bit_files_need_no_note_and_stay_8bit():
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (10, 20, 30)).save(buf, format="PNG")
    loaded = load_image_bytes(buf.getvalue(), "face.png")
    assert (loaded.bit_depth, loaded.output_bit_depth, output_note(loaded, "face.png")) == (8, 8, None)


# ---------------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("channels", [3, 4])
def test_a_16bit_png_written_back_is_bit_identical_with_its_metadata(tmp_path, channels):
    samples = deep_noise(channels=channels)
    exif = Image.Exif()
    exif[0x010F] = "LangBRT test camera"  # Make
    source = encode_png16(samples, exif=exif.tobytes(), icc_profile=b"fake-icc")
    loaded = load_image_bytes(source)
    out = write_image(tmp_path / "out.png", loaded.rgb, alpha=loaded.alpha, exif=loaded.exif,
                      icc_profile=loaded.icc_profile, bit_depth=loaded.output_bit_depth)
    data = out.read_bytes()
    assert _ihdr_depth_and_colour(data) == (16, 6 if channels == 4 else 2)
    assert np.array_equal(decode_png16(data, alpha=channels == 4), samples)
    with Image.open(out) as img:
        assert img.info["icc_profile"] == b"fake-icc" and img.getexif()[0x010F] == "LangBRT test camera"


def test_a_16bit_colour_tiffs_exif_is_carried_into_its_16bit_png(tmp_path):
    """QA: a TIFF's Make, Model and Software were lost; the 16-bit path (tifffile's samples) keeps them too."""
    data = io.BytesIO()
    tifffile.imwrite(data, deep_noise(), photometric="rgb", software=CAMERA_TAGS[0x0131], extratags=[
        (0x010F, "s", 0, CAMERA_TAGS[0x010F], True), (0x0110, "s", 0, CAMERA_TAGS[0x0110], True),
        (EXIF_ORIENTATION, 3, 1, 8, True)])
    loaded = load_image_bytes(data.getvalue(), "deep.tif")
    assert loaded.output_bit_depth == 16 and loaded.size == SIZE[::-1]  # upright, at 16 bits
    out = write_image(tmp_path / "out.png", loaded.rgb, exif=loaded.exif, bit_depth=loaded.output_bit_depth)
    with Image.open(out) as img:
        exif = img.getexif()
        assert {tag: exif.get(tag) for tag in CAMERA_TAGS} == CAMERA_TAGS
        assert not set(exif) & {*TIFF_LAYOUT_TAGS, EXIF_ORIENTATION}


def test_encode_image_gives_the_16bit_bytes_write_image_writes(tmp_path):
    t = from_uint16_hwc(deep_noise())
    data = encode_image(t, "png", bit_depth=16)
    assert data == write_image(tmp_path / "same.png", t, bit_depth=16).read_bytes()
    assert torch.equal(read_image_bytes(data), t)


def test_fast_16bit_png_is_still_exact():
    samples = deep_noise()
    data = encode_image(from_uint16_hwc(samples), "png", fast=True, bit_depth=16)
    assert np.array_equal(decode_png16(data, alpha=False), samples)


@pytest.mark.parametrize(("fmt", "bit_depth", "reason"),
                         [("jpeg", 16, "16-bit output needs PNG"), ("png", 12, "bit depth must be 8 or 16")])
def test_a_bit_depth_the_format_cannot_hold_is_one_line(fmt, bit_depth, reason):
    with pytest.raises(LangBRTInputError, match=reason) as info:
        encode_image(torch.rand(3, 4, 4), fmt, bit_depth=bit_depth)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- bad files


def test_a_truncated_16bit_png_is_one_line_naming_it():
    data = png16_bytes(deep_noise((64, 64)))
    with pytest.raises(LangBRTInputError) as info:
        load_image_bytes(data[: len(data) // 2], "deep.png")
    assert str(info.value).startswith("deep.png: corrupt or truncated image") and "\n" not in str(info.value)


def test_pixel_data_far_past_the_image_gives_the_image_alone():
    """A zip bomb: an 8x8 image whose one IDAT chunk inflates to 64 MB of zeros after its rows. Both decoders
    stop at the rows the header declares."""
    rows = b"\x00" + bytes(8 * 6)  # one filter byte + 8 RGB16 pixels
    bomb = zlib.compress(rows * 8 + bytes(64 << 20), 9)  # ~64 KB
    header = struct.pack(">IIBBBBB", 8, 8, 16, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", bomb) + _png_chunk(b"IEND", b"")
    loaded = load_image_bytes(data, "bomb.png")
    assert loaded.size == (8, 8) and loaded.output_bit_depth == 16 and not loaded.rgb.any()


# ---------------------------------------------------------------------------------------------- Retoucher


class _ZeroMaskBackend:
    """Changes nothing anywhere: the mask is 0 everywhere."""

    name, device, image_size = "fake", "cpu", 32
    prompts = predefined_prompts = ["acne on the cheeks"]

    def prepare_prompts(self, prompts: object) -> None:
        pass  # any prompt runs

    def run(self, images: torch.Tensor, prompts: object) -> BackendOutput:
        zeros = torch.zeros(images.shape[0], 1, 32, 32)
        return BackendOutput(image=1.0 - images, mask=zeros, maps=zeros)


def test_a_uint16_tensor_is_scaled_by_65535_and_comes_back_exactly():
    samples = deep_noise()  # (H, W, 3)
    chw = torch.from_numpy(samples).permute(2, 0, 1)  # (3, H, W) uint16
    [result] = Retoucher(_ZeroMaskBackend()).retouch([chw])
    assert np.array_equal(to_uint16_hwc(result.image), samples)


def test_a_16bit_grey_png_colour_key_becomes_alpha():
    """tRNS on a 16-bit grey PNG: the 8-bit path turns it into alpha, and so must this one (it was dropped)."""
    samples = deep_noise((4, 1), channels=1)
    data = png16_bytes(samples)
    data = data[:33] + _png_chunk(b"tRNS", struct.pack(">H", int(samples[0, 1, 0]))) + data[33:]  # after IHDR
    loaded = load_image_bytes(data)
    assert loaded.output_bit_depth == 16
    assert loaded.alpha is not None and to_uint16_hwc(loaded.alpha)[0, :, 0].tolist() == [65535, 0, 65535, 65535]


def test_a_16bit_ppm_and_a_32bit_integer_tiff_say_what_their_output_loses(tmp_path):
    """QA: both lost bits without a word (the PPM is read at 8 bits, the TIFF's values clipped at 65535)."""
    ppm = b"P6\n4 3\n65535\n" + (np.arange(36, dtype=">u2") * 1000).tobytes()
    loaded = load_image_bytes(ppm, "deep.ppm")
    assert (loaded.bit_depth, loaded.output_bit_depth) == (16, 8)
    assert output_note(loaded, "deep.ppm").startswith("deep.ppm: 16-bit PPM comes back as 8-bit")
    Image.fromarray(np.array([[58348, 15480, 70000]], dtype=np.int32)).save(tmp_path / "wide.tif")
    loaded = load_image(tmp_path / "wide.tif")
    assert (loaded.bit_depth, loaded.output_bit_depth) == (32, 16)
    assert output_note(loaded).startswith("32-bit TIFF comes back as 16-bit")
    eight_bit_ppm = b"P6\n1 1\n255\n\x01\x02\x03"
    assert output_note(load_image_bytes(eight_bit_ppm)) is None


def test_a_16bit_tiff_with_a_tag_tifffile_cannot_parse_is_read_without_a_stray_log_line(caplog):
    """tifffile logs a ResolutionUnit of 96 as an error and reads on; with no logging set up, Python printed it on
    langbrt-infer's stderr beside the command's own lines (QA)."""
    samples = deep_noise()
    data = io.BytesIO()
    tifffile.imwrite(data, samples, photometric="rgb")
    with tifffile.TiffFile(io.BytesIO(data.getvalue())) as tif:
        unit_at = tif.pages[0].tags[296].offset  # the IFD entry: tag, type, count, then the SHORT value
    broken = bytearray(data.getvalue())
    struct.pack_into("<H", broken, unit_at + 8, 96)
    loaded = load_image_bytes(bytes(broken), "deep.tif")
    assert loaded.output_bit_depth == 16 and np.array_equal(to_uint16_hwc(loaded.rgb), samples)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("tifffile")] == []


@pytest.mark.filterwarnings("ignore:Metadata Warning")  # Pillow's, about the second value it skips
@pytest.mark.parametrize("tag", [256, 257, 277])  # ImageWidth, ImageLength, SamplesPerPixel
@pytest.mark.parametrize("layout", [{}, {"tile": (16, 16)}], ids=["strips", "tiles"])
def test_a_16bit_tiff_pillow_reads_but_tifffile_cannot_parse_keeps_pillows_8_bits(tag, layout):
    """A tag stored as two SHORTs (value, value): Pillow takes the first, tifffile raised TypeError, and a photo
    read at 8 bits before tiff16 ended langbrt-infer in a traceback (QA)."""
    samples = deep_noise()
    data = io.BytesIO()
    tifffile.imwrite(data, samples, photometric="rgb", **layout)
    with tifffile.TiffFile(io.BytesIO(data.getvalue())) as tif:
        entry, value = tif.pages[0].tags[tag].offset, tif.pages[0].tags[tag].value
    odd = bytearray(data.getvalue())
    struct.pack_into("<HIHH", odd, entry + 2, 3, 2, value, value)  # type SHORT, count 2, both inline
    loaded = load_image_bytes(bytes(odd), "deep.tif")
    assert (loaded.bit_depth, loaded.output_bit_depth) == (16, 8)
    assert np.array_equal(to_uint16_hwc(loaded.rgb) >> 8, samples >> 8)


def test_an_uncompressed_16bit_tiff_with_premultiplied_alpha_is_not_told_to_become_an_uncompressed_tiff():
    """It keeps Pillow's 8 bits for its alpha, not its compression: the note used to name only LZW, PackBits and
    JPEG and advise an uncompressed or ZIP TIFF, which it already was (QA)."""
    data = io.BytesIO()
    tifffile.imwrite(data, deep_noise(channels=4), photometric="rgb", extrasamples=["assocalpha"])
    loaded = load_image_bytes(data.getvalue(), "deep.tif")
    note = output_note(loaded, "deep.tif")
    assert loaded.output_bit_depth == 8 and note is not None
    assert "premultiplied alpha" in note and "uncompressed" not in note
