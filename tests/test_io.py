"""Specification of langbrt.io: a file becomes a (3, H, W) float32 RGB tensor in [0, 1] or one clear error."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from bad_inputs import CAMERA_TAGS, CAPTURE_TIME, EXIF_IFD, EXIF_ORIENTATION, SIZE, TIFF_LAYOUT_TAGS, camera_tiff_bytes
from PIL import Image

from langbrt.atomic import atomic_write_text
from langbrt.errors import LangBRTInputError, OutputWriteError, TooManyPixelsError
from langbrt.io import (
    READ_SUFFIXES,
    encode_image,
    image_pixels,
    load_image,
    load_image_bytes,
    output_note,
    read_image,
    read_image_bytes,
    write_image,
)
from langbrt.pixel_values import from_uint8_hwc, to_uint8_hwc, to_uint16_hwc
from langbrt.png16 import encode_png16

# ---------------------------------------------------------------------------------------------- helpers


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG written by hand, for headers and sample depths Pillow will not write."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def _noise_rgb(h: int = 16, w: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)  # (H, W, 3)


def _save(img: Image.Image, path: Path, **options: object) -> Path:
    img.save(path, **options)
    return path


def _one_line_error(kind: type[Exception], fn, *args, **kwargs) -> str:
    """Call fn, expect `kind` (LangBRTInputError; OutputWriteError when the disk failed), return its message
    after checking it is one line."""
    with pytest.raises(kind) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def _check_image_tensor(t: torch.Tensor, h: int, w: int) -> None:
    assert t.shape == (3, h, w)
    assert t.dtype == torch.float32
    assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0


# ---------------------------------------------------------------------------------------------- modes


def test_rgb_png_reads_as_chw_float_divided_by_255(tmp_path):
    arr = _noise_rgb()
    t = read_image(_save(Image.fromarray(arr), tmp_path / "rgb.png"))
    _check_image_tensor(t, 16, 24)
    assert torch.equal(t, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)


def test_gray_L_is_replicated_to_three_channels(tmp_path):
    arr = np.array([[0, 128, 255]], dtype=np.uint8)
    t = read_image(_save(Image.fromarray(arr), tmp_path / "gray.png"))
    _check_image_tensor(t, 1, 3)
    for c in range(3):
        assert torch.allclose(t[c, 0], torch.tensor([0.0, 128 / 255, 1.0]))


def test_gray_with_alpha_LA_keeps_alpha_aside(tmp_path):
    img = Image.new("LA", (2, 2), (200, 50))
    loaded = load_image(_save(img, tmp_path / "la.png"))
    _check_image_tensor(loaded.rgb, 2, 2)
    assert torch.allclose(loaded.rgb, torch.full((3, 2, 2), 200 / 255))
    assert loaded.alpha is not None and loaded.alpha.shape == (1, 2, 2)
    assert torch.allclose(loaded.alpha, torch.full((1, 2, 2), 50 / 255))


def test_a_lab_tiff_has_no_alpha(tmp_path):
    """QA: the 'A' of mode LAB was taken for an alpha channel, so a CIELAB TIFF came back as an RGBA PNG with an
    opaque alpha plane it never had (and `langbrt-infer` named it as an RGBA photo)."""
    img = Image.fromarray(_noise_rgb()).convert("LAB")
    loaded = load_image(_save(img, tmp_path / "lab.tif"))
    assert loaded.alpha is None
    assert torch.equal(loaded.rgb, from_uint8_hwc(np.asarray(img.convert("RGB"))))


def test_palette_colors_are_looked_up(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    img.putdata([0, 1])
    loaded = load_image(_save(img, tmp_path / "palette.png"))
    _check_image_tensor(loaded.rgb, 1, 2)
    assert loaded.rgb[:, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert loaded.rgb[:, 0, 1].tolist() == [0.0, 0.0, 1.0]
    assert loaded.alpha is None


def test_palette_with_transparency_gives_alpha(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    img.putdata([0, 1])
    loaded = load_image(_save(img, tmp_path / "palette_t.png", transparency=1))
    assert loaded.alpha is not None
    assert loaded.alpha[0, 0].tolist() == [1.0, 0.0]
    assert loaded.rgb[:, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_rgba_alpha_is_kept_aside(tmp_path):
    arr = np.zeros((2, 3, 4), dtype=np.uint8)  # (H, W, 4)
    arr[..., 1] = 255
    arr[..., 3] = [[0, 128, 255], [255, 255, 255]]
    loaded = load_image(_save(Image.fromarray(arr), tmp_path / "rgba.png"))
    _check_image_tensor(loaded.rgb, 2, 3)
    assert torch.equal(loaded.rgb[1], torch.ones(2, 3))  # colour not premultiplied by alpha
    assert loaded.alpha is not None and loaded.alpha.shape == (1, 2, 3)
    assert torch.allclose(loaded.alpha[0, 0], torch.tensor([0.0, 128 / 255, 1.0]))


@pytest.mark.parametrize("suffix", [".tif", ".jpg"])
def test_cmyk_pure_cyan_reads_as_rgb_cyan(tmp_path, suffix):
    t = read_image(_save(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), tmp_path / f"cyan{suffix}"))
    _check_image_tensor(t, 8, 8)
    assert torch.allclose(t.mean(dim=(1, 2)), torch.tensor([0.0, 1.0, 1.0]), atol=0.02)


def test_16bit_gray_png_divides_by_65535_not_clipped_at_255(tmp_path):
    arr = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    loaded = load_image(_save(Image.fromarray(arr), tmp_path / "gray16.png"))
    _check_image_tensor(loaded.rgb, 1, 4)
    assert torch.allclose(loaded.rgb[0, 0], torch.tensor([0.0, 1000 / 65535, 32768 / 65535, 1.0]))
    assert loaded.bit_depth == 16


def test_16bit_big_endian_gray_reads_like_little_endian(tmp_path):
    img = Image.new("I;16B", (3, 1))
    img.putdata([0, 32768, 65535])
    t = read_image(_save(img, tmp_path / "gray16b.tif"))
    assert torch.allclose(t[0, 0], torch.tensor([0.0, 32768 / 65535, 1.0]))


def test_32bit_int_mode_I_is_scaled_as_16bit_and_clipped(tmp_path):
    img = Image.new("I", (3, 1))
    img.putdata([0, 32768, 70000])
    t = read_image(_save(img, tmp_path / "int32.tif"))
    assert torch.allclose(t[0, 0], torch.tensor([0.0, 32768 / 65535, 1.0]))


def test_bilevel_mode_1_reads_as_black_and_white(tmp_path):
    img = Image.new("1", (2, 1))
    img.putdata([0, 255])
    t = read_image(_save(img, tmp_path / "bilevel.png"))
    assert t[:, 0, 0].tolist() == [0.0, 0.0, 0.0]
    assert t[:, 0, 1].tolist() == [1.0, 1.0, 1.0]


def test_float_mode_F_is_clipped_to_unit_range(tmp_path):
    img = Image.fromarray(np.array([[-0.5, 0.25, 2.0]], dtype=np.float32))
    loaded = load_image(_save(img, tmp_path / "float.tif"))
    assert torch.allclose(loaded.rgb[0, 0], torch.tensor([0.0, 0.25, 1.0]))
    assert loaded.bit_depth == 32


def test_one_by_one_image_reads(tmp_path):
    t = read_image(_save(Image.new("RGB", (1, 1), (10, 20, 30)), tmp_path / "tiny.png"))
    _check_image_tensor(t, 1, 1)


# ---------------------------------------------------------------------------------------------- orientation


def test_exif_orientation_6_is_applied_so_the_tensor_is_upright(tmp_path):
    img = Image.new("RGB", (4, 2))  # W=4, H=2, as the sensor stored it
    img.putpixel((0, 0), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    loaded = load_image(_save(img, tmp_path / "rotated.png", exif=exif.tobytes()))
    _check_image_tensor(loaded.rgb, 4, 2)
    assert loaded.size == (2, 4)
    assert loaded.rgb[:, 0, 1].tolist() == [1.0, 0.0, 0.0]  # top-left went to top-right
    assert loaded.rgb[0].sum() == 1.0


@pytest.mark.parametrize("suffix", [".png", ".webp", ".jpg"])
def test_a_photo_whose_exif_block_cannot_be_read_is_still_retouchable(tmp_path, suffix):
    """QA: a PNG or WebP whose EXIF block was damaged (as some editors leave it) was refused as 'corrupt or
    truncated image' although its pixels were whole and every viewer showed it; a JPEG with the same block was
    read. The pixels are taken as stored (no orientation can be read), the block carried as it is."""
    arr = _noise_rgb()
    loaded = load_image(_save(Image.fromarray(arr), tmp_path / f"junk{suffix}", exif=b"\xff" * 50, lossless=True))
    assert loaded.size == (arr.shape[1], arr.shape[0])
    if suffix != ".jpg":
        assert torch.equal(loaded.rgb, from_uint8_hwc(arr))


def test_a_damaged_exif_block_prints_no_python_warning(tmp_path):
    """QA: Pillow's 'UserWarning: Corrupt EXIF data ...' reached langbrt-infer's stderr as two raw lines naming a
    site-packages file but not the photo, beside the one-line messages; the photo itself is read all the same."""
    truncated = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03"  # an IFD cut off in its entry
    path = _save(Image.fromarray(_noise_rgb()), tmp_path / "cut.jpg", exif=truncated)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_image(path)
    assert [str(w.message) for w in caught] == []


def test_a_16_bit_png_whose_exif_block_cannot_be_read_is_still_read_at_16_bits():
    samples = (_noise_rgb().astype(np.uint16) * 257 + 3).astype(np.uint16)
    loaded = load_image_bytes(encode_png16(samples, exif=b"\xff" * 50), "deep.png")
    assert loaded.output_bit_depth == 16
    assert torch.equal(loaded.rgb, torch.from_numpy(samples.astype(np.float32) / 65535).permute(2, 0, 1))


def test_loaded_image_records_format_size_path_and_icc_profile(tmp_path):
    path = _save(Image.new("RGB", (5, 3)), tmp_path / "meta.jpg", icc_profile=b"fake-icc")
    loaded = load_image(path)
    assert (loaded.format, loaded.size, loaded.path, loaded.bit_depth) == ("JPEG", (5, 3), path, 8)
    assert loaded.icc_profile == b"fake-icc"


def _icc_header(colour_space: bytes) -> bytes:
    """The first 128 bytes of an ICC profile: its data colour space sits at bytes 16-19."""
    header = bytearray(128)
    header[0:4] = struct.pack(">I", 128)
    header[12:16], header[16:20], header[20:24], header[36:40] = b"mntr", colour_space, b"XYZ ", b"acsp"
    return bytes(header)


@pytest.mark.parametrize(("mode", "suffix", "colour_space"),
                         [("L", ".jpg", b"GRAY"), ("L", ".png", b"GRAY"), ("CMYK", ".jpg", b"CMYK")])
def test_an_icc_profile_of_another_colour_space_than_rgb_is_not_carried(tmp_path, mode, suffix, colour_space):
    """QA: a grey photo's grey profile (Photoshop's 'Dot Gain 20%') or a CMYK JPEG's CMYK profile was written into
    the RGB output, which no colour-managed viewer can then read (lcms: 'cannot build transform'; libpng rejects a
    GRAY iCCP in an RGB PNG). Pillow converts such pixels to RGB without the profile, so none describes them."""
    img = Image.fromarray(_noise_rgb()).convert(mode)
    loaded = load_image(_save(img, tmp_path / f"photo{suffix}", icc_profile=_icc_header(colour_space)))
    assert loaded.icc_profile is None
    rgb = _icc_header(b"RGB ")
    kept = load_image(_save(Image.fromarray(_noise_rgb()), tmp_path / f"rgb{suffix}", icc_profile=rgb))
    assert kept.icc_profile == rgb


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_a_tiffs_exif_is_carried_into_the_output_without_the_tiffs_layout_tags(tmp_path, suffix):
    """QA: a TIFF's Make, Model and Software were lost (Pillow keeps them among the TIFF's own tags, not as an EXIF
    block as for JPEG, PNG and WebP); its width or strip offsets, copied along, would misdescribe the output."""
    loaded = load_image_bytes(camera_tiff_bytes(orientation=6), "scan.tif")
    assert loaded.size == SIZE[::-1]  # turned upright, so the orientation tag must go
    out = write_image(tmp_path / f"out{suffix}", loaded.rgb, exif=loaded.exif, icc_profile=loaded.icc_profile)
    with Image.open(out) as img:
        exif = img.getexif()
        assert {tag: exif.get(tag) for tag in CAMERA_TAGS} == CAMERA_TAGS
        assert exif.get_ifd(EXIF_IFD) == {CAPTURE_TIME: "2026:01:02 03:04:05"}
        assert not set(exif) & {*TIFF_LAYOUT_TAGS, EXIF_ORIENTATION}
        assert img.info["icc_profile"] == b"fake-icc"


def test_a_tiff_without_camera_tags_carries_no_exif():
    buf = io.BytesIO()
    Image.fromarray(_noise_rgb()).save(buf, format="TIFF")
    assert load_image_bytes(buf.getvalue()).exif is None  # its layout tags alone are no EXIF


def test_read_image_bytes_matches_read_image(tmp_path):
    path = _save(Image.fromarray(_noise_rgb()), tmp_path / "same.png")
    from_bytes = load_image_bytes(path.read_bytes(), "upload.png")
    assert torch.equal(from_bytes.rgb, read_image(path))
    assert torch.equal(read_image_bytes(path.read_bytes()), from_bytes.rgb)
    assert from_bytes.path is None


def test_reading_never_modifies_the_input_file(tmp_path):
    path = _save(Image.fromarray(_noise_rgb()), tmp_path / "input.jpg")
    before = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    load_image(path)
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before


# ---------------------------------------------------------------------------------------------- bad files


def test_zero_byte_file_is_rejected_by_name(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    message = _one_line_error(LangBRTInputError, read_image, path)
    assert "empty.png" in message and "empty" in message


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_is_rejected_by_name(tmp_path, suffix):
    full = tmp_path / f"full{suffix}"
    _save(Image.fromarray(_noise_rgb(64, 64)), full)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert f"cut{suffix}" in _one_line_error(LangBRTInputError, read_image, cut)


def test_png_with_corrupt_bytes_in_the_middle_is_rejected(tmp_path):
    data = bytearray(_save(Image.fromarray(_noise_rgb(64, 64)), tmp_path / "ok.png").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    assert "corrupt.png" in _one_line_error(LangBRTInputError, read_image, path)


def _tiff_with_a_damaged_second_page() -> bytes:
    """Two pages; the second's width and height tags renamed (65000, 65001), so Pillow finds no dimensions."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 6)).save(buf, format="TIFF", save_all=True, append_images=[Image.new("RGB", (8, 6))])
    data = bytearray(buf.getvalue())
    first = struct.unpack_from("<I", data, 4)[0]
    second = struct.unpack_from("<I", data, first + 2 + 12 * struct.unpack_from("<H", data, first)[0])[0]
    for entry in range(struct.unpack_from("<H", data, second)[0]):
        at = second + 2 + 12 * entry
        tag = struct.unpack_from("<H", data, at)[0]
        if tag in (256, 257):
            struct.pack_into("<H", data, at, tag + 64744)
    return bytes(data)


def _bigtiff_with_a_strip_past_any_seek() -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((6, 8, 3), np.uint8), photometric="rgb", bigtiff=True)
    with tifffile.TiffFile(io.BytesIO(buf.getvalue())) as tif:
        at = tif.pages[0].tags["StripOffsets"].valueoffset
    data = bytearray(buf.getvalue())
    struct.pack_into("<Q", data, at, 2**63 + 5)
    return bytes(data)


@pytest.mark.parametrize("damaged", [_tiff_with_a_damaged_second_page, _bigtiff_with_a_strip_past_any_seek])
def test_a_tiff_damaged_where_pillow_raises_type_or_overflow_errors_is_one_bad_file_line(tmp_path, damaged):
    """QA, 2026-11-26: Pillow's page count raised TypeError, its BigTIFF seek OverflowError: tracebacks."""
    path = tmp_path / "damaged.tif"
    path.write_bytes(damaged())
    message = _one_line_error(LangBRTInputError, read_image, path)
    assert "damaged.tif" in message and "corrupt" in message


def test_text_file_named_jpg_is_not_an_image(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_text("this is not a picture\n")
    message = _one_line_error(LangBRTInputError, read_image, path)
    assert message.startswith(str(path)) and "not an image file" in message


@pytest.mark.parametrize(("fmt", "suffix"), [("TGA", ".tga"), ("ICO", ".ico"), ("PCX", ".pcx")])
def test_an_image_in_a_format_we_do_not_read_is_named_with_the_suffixes_we_do(tmp_path, fmt, suffix):
    """QA, 2026-11-26: Pillow reads these, and they were called 'not an image file (cannot identify image
    format)', which sent the user looking for a damaged file."""
    path = tmp_path / f"face{suffix}"
    Image.new("RGB", (16, 16)).save(path, fmt)
    message = _one_line_error(LangBRTInputError, read_image, path)
    assert message == (f"{path}: {fmt} is not a supported image format; convert it to one that is "
                       f"({', '.join(sorted(READ_SUFFIXES))})")


@pytest.mark.parametrize(("name", "layout"), [
    ("planar.tif", {"photometric": "rgb", "planarconfig": "separate"}),  # one plane per colour
    ("float.tif", {"photometric": "rgb"}),  # 32-bit float RGB
])
def test_a_tiff_whose_layout_pillow_cannot_read_is_named_as_a_tiff(tmp_path, name, layout):
    """QA: a TIFF with one plane per colour, or float RGB samples, was called 'not an image file (cannot identify
    image format)', which sent the user looking for a damaged file rather than converting a valid one."""
    samples = _noise_rgb().astype(np.float32 if name == "float.tif" else np.uint8)
    tifffile.imwrite(tmp_path / name, samples, **layout)
    message = _one_line_error(LangBRTInputError, read_image, tmp_path / name)
    assert message.startswith(f"{tmp_path / name}: a TIFF file this reader cannot decode (")
    assert message.endswith("); convert it to an 8- or 16-bit RGB(A) PNG") and "not an image file" not in message


def test_missing_file_is_rejected_by_name(tmp_path):
    message = _one_line_error(LangBRTInputError, read_image, tmp_path / "nowhere.png")
    assert "nowhere.png" in message and "no such file" in message


def test_directory_is_rejected_by_name(tmp_path):
    folder = tmp_path / "album.png"
    folder.mkdir()
    message = _one_line_error(LangBRTInputError, read_image, folder)
    assert "album.png" in message and "folder" in message


def test_20000x20000_header_is_rejected_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(_raw_png(20000, 20000, 1, 0, b"\x00" * 16))
    assert path.stat().st_size < 200
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded a bomb"))
    message = _one_line_error(LangBRTInputError, read_image, path)
    assert "bomb.png" in message and "too many pixels" in message


def test_header_over_default_pixel_limit_is_rejected_with_the_limit(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_raw_png(9000, 9000, 1, 0, b"\x00" * 16))  # 81 MP: under Pillow's limit, over ours
    message = _one_line_error(LangBRTInputError, read_image, path)
    assert "huge.png" in message and "9000x9000" in message and "64 MP" in message


def test_a_header_over_twice_pillows_limit_is_refused_naming_our_limit(tmp_path):
    """Pillow's own bomb error fires inside Image.open, before our check; the message still names our limit."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_raw_png(20000, 20000, 1, 0, b"\x00" * 16))  # 400 MP: over twice Pillow's 89 MP
    message = _one_line_error(LangBRTInputError, read_image, path)
    assert "too many pixels, over the 64 MP limit" in message


@pytest.mark.parametrize("side", [10000, 20000])  # over Pillow's warning limit (89 MP); over its error limit
def test_a_header_over_pillows_limits_names_ours_alone(tmp_path, side):
    """QA: a 200 MP file's message quoted Pillow's 178 MP limit beside our 64 MP one."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_raw_png(side, side, 1, 0, b"\x00" * 16))
    message = _one_line_error(TooManyPixelsError, read_image, path)
    assert message == f"{path}: too many pixels, over the 64 MP limit; refusing to decode"


def test_a_raised_max_pixels_lifts_pillows_limit_that_far_and_no_further(tmp_path, monkeypatch):
    """A 200 MP header passes both checks with max_pixels=300 MP (decoding is reached) and Pillow's limit is
    back afterwards; a 400 MP one is still refused, naming our limit."""
    from PIL import ImageFile

    def decoding_reached(self):
        raise OSError("decoding reached")  # what a 200 MP decode would cost is not what is tested

    pillows = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(ImageFile.ImageFile, "load", decoding_reached)
    path = tmp_path / "big.png"
    path.write_bytes(_raw_png(20000, 10000, 1, 0, b"\x00" * 16))
    assert "decoding reached" in _one_line_error(LangBRTInputError, read_image, path, max_pixels=300_000_000)
    assert "over the 150 MP limit" in _one_line_error(TooManyPixelsError, read_image, path, max_pixels=150_000_000)
    path.write_bytes(_raw_png(20000, 20000, 1, 0, b"\x00" * 16))
    message = _one_line_error(TooManyPixelsError, read_image, path, max_pixels=300_000_000)
    assert message == f"{path}: too many pixels, over the 300 MP limit; refusing to decode"
    assert Image.MAX_IMAGE_PIXELS == pillows


def test_image_pixels_counts_a_header_over_pillows_limit_when_max_pixels_allows_it():
    """A server with --max-pixels over 179 MP must count such an upload against its pixel budget, not as 0."""
    header = _raw_png(20000, 10000, 1, 0, b"\x00" * 16)
    assert image_pixels(header) is None
    assert image_pixels(header, max_pixels=300_000_000) == 200_000_000


@pytest.mark.parametrize("side", [9000, 20000])  # over our limit only; over Pillow's own as well
def test_both_pixel_limits_raise_the_error_a_server_answers_with_413(tmp_path, side):
    path = tmp_path / "big.png"
    path.write_bytes(_raw_png(side, side, 1, 0, b"\x00" * 16))
    with pytest.raises(TooManyPixelsError, match="big.png.*MP limit"):
        read_image(path)


def test_image_pixels_reads_the_header_only():
    assert image_pixels(_raw_png(9000, 9000, 1, 0, b"\x00" * 16)) == 81_000_000  # a stream too short to decode
    assert image_pixels(b"not an image") is None
    assert image_pixels(_raw_png(20000, 20000, 1, 0, b"\x00" * 16)) is None  # Pillow refuses even the header


def test_max_pixels_parameter_overrides_the_limit(tmp_path):
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "small.png")
    assert "small.png" in _one_line_error(LangBRTInputError, read_image, path, max_pixels=9_999)
    assert read_image(path, max_pixels=10_000).shape == (3, 100, 100)


def test_twelve_megapixel_photo_is_within_the_default_limit(tmp_path):
    path = tmp_path / "12mp.png"
    path.write_bytes(_raw_png(4000, 3000, 1, 0, bytes(3000 * 501)))  # bilevel: small file, quick decode
    assert read_image(path).shape == (3, 3000, 4000)


def test_bad_bytes_are_reported_under_the_given_name():
    message = _one_line_error(LangBRTInputError, read_image_bytes, b"GIF89a-garbage", "upload-42.gif")
    assert message.startswith("upload-42.gif: ")


# ---------------------------------------------------------------------------------------------- writing


def test_png_round_trip_is_exact(tmp_path):
    t = from_uint8_hwc(_noise_rgb())  # (3, H, W)
    assert torch.equal(read_image(write_image(tmp_path / "out.png", t)), t)


def test_batch_of_one_is_accepted(tmp_path):
    t = from_uint8_hwc(_noise_rgb())
    assert torch.equal(read_image(write_image(tmp_path / "out.png", t.unsqueeze(0))), t)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".webp"])
def test_lossy_formats_round_trip_approximately(tmp_path, suffix):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 48), indexing="ij")
    t = torch.stack([yy, xx, (yy + xx) / 2])  # (3, 32, 48), smooth like skin
    back = read_image(write_image(tmp_path / f"out{suffix}", t))
    assert back.shape == t.shape
    assert (back - t).abs().mean() < 0.01


def test_values_are_clamped_and_rounded_not_truncated():
    t = torch.tensor([-0.3, 1.7, float("nan"), 200.7 / 255, 200.2 / 255, 0.5]).view(1, 1, 6).expand(3, 1, 6)
    assert to_uint8_hwc(t)[0, :, 0].tolist() == [0, 255, 0, 201, 200, 128]


@pytest.mark.parametrize(("values", "says"), [
    (torch.full((3, 4, 4), 200.0), "found [200, 200]; divide it by 255"),
    (torch.full((3, 4, 4), float("nan")), "has NaN or infinite values"),
    (torch.full((3, 4, 4), float("-inf")), "has NaN or infinite values"),
    (torch.full((3, 4, 4), -0.5), "found [-0.5, -0.5]; clamp it to [0, 1]"),
    (torch.zeros(3, 4, 4, dtype=torch.int32), "torch.int32 tensors are not taken"),
    (torch.zeros(3, 0, 4), "has no pixels"),  # Pillow's ValueError, a traceback, before
], ids=["0-255", "nan", "inf", "negative", "int32", "empty"])
def test_a_tensor_that_would_be_clamped_all_white_or_black_is_refused_before_anything_is_written(tmp_path, values,
                                                                                                  says):
    """QA: these came out as an all-white or all-black file; `Retoucher.retouch` refuses them with one line."""
    message = _one_line_error(LangBRTInputError, write_image, tmp_path / "out.png", values)
    assert message.startswith(f"{tmp_path / 'out.png'}: ") and says in message
    assert not any(tmp_path.iterdir())
    assert says in _one_line_error(LangBRTInputError, encode_image, values, "png")


def test_a_nan_alpha_is_refused_too(tmp_path):
    alpha = torch.full((1, 4, 4), float("nan"))
    message = _one_line_error(LangBRTInputError, write_image, tmp_path / "out.png", torch.rand(3, 4, 4), alpha=alpha)
    assert message.startswith(f"{tmp_path / 'out.png'}: alpha: has NaN")


@pytest.mark.parametrize(("image", "alpha", "says"), [
    (torch.rand(1, 4, 4), None, "expected an RGB image tensor (3, H, W) or (1, 3, H, W), got (1, 4, 4)"),
    (torch.rand(4, 4), None, "got (4, 4)"),
    (torch.rand(2, 3, 4, 4), None, "got (2, 3, 4, 4)"),
    (torch.rand(3, 4, 4), torch.rand(1, 4, 5), "alpha (1, 4, 5) does not match the image's 4x4"),
], ids=["mask", "2d", "batch-of-two", "alpha-size"])
def test_a_tensor_of_the_wrong_shape_is_one_line_not_an_assertion(tmp_path, image, alpha, says):
    """QA: `write_image("mask.png", result.mask)` raised AssertionError (under `python -O`, Pillow's TypeError), where
    the docstring promises a LangBRTInputError for a bad tensor, before anything is written."""
    message = _one_line_error(LangBRTInputError, write_image, tmp_path / "out.png", image, alpha=alpha)
    assert message.startswith(f"{tmp_path / 'out.png'}: ") and says in message
    assert not any(tmp_path.iterdir())
    assert says in _one_line_error(LangBRTInputError, encode_image, image, "png", alpha)


def test_a_resize_overshoot_within_the_slack_is_written_clamped(tmp_path):
    t = torch.tensor([-0.05, 1.08, 0.5]).view(1, 1, 3).expand(3, 1, 3)  # bicubic rings a few percent past [0, 1]
    assert to_uint8_hwc(read_image(write_image(tmp_path / "ring.png", t)))[0, :, 0].tolist() == [0, 255, 128]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16])
def test_integer_tensors_are_scaled_as_the_retoucher_scales_them(dtype):
    top = torch.iinfo(dtype).max
    t = from_uint8_hwc(_noise_rgb())
    assert encode_image((t * top).round().to(dtype), "png") == encode_image(t, "png")


def test_alpha_is_written_to_png(tmp_path):
    t = from_uint8_hwc(_noise_rgb(4, 4))
    alpha = torch.linspace(0, 1, 16).view(1, 4, 4)
    loaded = load_image(write_image(tmp_path / "cutout.png", t, alpha=alpha))
    assert loaded.alpha is not None
    assert torch.allclose(loaded.alpha, alpha, atol=0.5 / 255)
    assert torch.equal(loaded.rgb, t)


def test_alpha_is_dropped_for_jpeg(tmp_path):
    path = write_image(tmp_path / "flat.jpg", torch.rand(3, 8, 8), alpha=torch.ones(1, 8, 8))
    with Image.open(path) as img:
        assert img.mode == "RGB"


def test_encode_image_gives_the_bytes_write_image_writes(tmp_path):
    t = from_uint8_hwc(_noise_rgb())
    data = encode_image(t, "png")
    assert data == write_image(tmp_path / "same.png", t).read_bytes()
    assert torch.equal(read_image_bytes(data), t)


@pytest.mark.parametrize("channels", [1, 3])
def test_uint8_conversion_leaves_its_input_alone(channels):
    """to_uint8_hwc works in place on its own copy; a one-channel (1, H, W) tensor's (H, W, 1) view is
    already contiguous, so only an explicit copy keeps the caller's tensor (a map, a mask) intact."""
    x = torch.linspace(-0.5, 1.5, channels * 5 * 6).reshape(channels, 5, 6)  # (C, H, W), some out of range
    x[0, 0, 0] = float("nan")
    before = x.clone()
    out = to_uint8_hwc(x)
    torch.testing.assert_close(x, before, rtol=0, atol=0, equal_nan=True)
    assert out.shape == (5, 6, channels) and out[0, 0, 0] == 0 and out[-1, -1, -1] == 255


@pytest.mark.parametrize("convert", [to_uint8_hwc, to_uint16_hwc])
@pytest.mark.parametrize("channels", [3, 4])
def test_a_plane_expanded_to_channels_converts_to_the_samples_of_its_full_copy(convert, channels):
    """`langbrt-infer`'s mask is one plane expanded to RGB, converted once: the same contiguous samples."""
    plane = torch.linspace(-0.5, 1.5, 7 * 9).reshape(1, 7, 9)  # (1, H, W), some out of range
    plane[0, 0, 0] = float("nan")
    out = convert(plane.expand(channels, -1, -1))
    expected = convert(plane.expand(channels, -1, -1).contiguous())
    assert out.flags["C_CONTIGUOUS"] and out.dtype == expected.dtype and np.array_equal(out, expected)


def png_zlib_level_class(data: bytes) -> int:
    """FLEVEL of the first IDAT's zlib stream: 0 for zlib levels 0-1, 1 for 2-5, 2 for 6, 3 for 7-9."""
    idat = data.index(b"IDAT") + 4
    return data[idat + 1] >> 6


def test_fast_encoding_keeps_png_lossless_at_zlib_level_1_and_webp_close(tmp_path):
    """What `langbrt-serve` replies with: cheaper compression, the same pixels (PNG) or nearly (WebP)."""
    t = from_uint8_hwc(_noise_rgb())
    fast, default = encode_image(t, "png", fast=True), encode_image(t, "png")
    assert torch.equal(read_image_bytes(fast), t)
    assert (png_zlib_level_class(fast), png_zlib_level_class(default)) == (0, 2)
    smooth = torch.linspace(0, 1, 64).expand(3, 64, 64).contiguous()  # (3, H, W)
    webp = read_image_bytes(encode_image(smooth, "webp", fast=True))
    assert (webp - smooth).abs().mean() < 0.02


def test_write_image_fast_writes_a_png_at_zlib_level_1_with_the_same_pixels(tmp_path):
    """What `langbrt-infer --save-maps` writes its overlays with: cheaper compression, the same pixels."""
    t = from_uint8_hwc(_noise_rgb())
    fast, default = write_image(tmp_path / "fast.png", t, fast=True), write_image(tmp_path / "default.png", t)
    assert torch.equal(read_image(fast), t)
    levels = (png_zlib_level_class(fast.read_bytes()), png_zlib_level_class(default.read_bytes()))
    assert levels == (0, 2)


def test_unsupported_suffix_lists_the_supported_ones(tmp_path):
    message = _one_line_error(LangBRTInputError, write_image, tmp_path / "out.bmp", torch.rand(3, 4, 4))
    assert "out.bmp" in message and ".png" in message and ".jpg" in message and ".webp" in message
    assert not any(tmp_path.iterdir())


def test_missing_output_folder_is_named(tmp_path):
    folder = tmp_path / "not-there"
    message = _one_line_error(LangBRTInputError, write_image, folder / "out.png", torch.rand(3, 4, 4))
    assert message.startswith(str(folder))


def test_a_text_file_that_cannot_be_written_is_one_output_write_error_naming_it(tmp_path):
    target = tmp_path / "gone" / "report.json"
    with pytest.raises(OutputWriteError, match=r"report\.json: cannot write file \(No such file or directory\)"):
        atomic_write_text(target, "{}")
    assert not tmp_path.joinpath("gone").exists()


def test_unwritable_folder_is_named(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("langbrt.atomic.tempfile.mkstemp", refuse)
    message = _one_line_error(OutputWriteError, write_image, tmp_path / "out.png", torch.rand(3, 4, 4))
    assert message.startswith(str(tmp_path)) and "Permission denied" in message


def _save_that_fails_midway(exc: BaseException):
    def save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half an image")
        raise exc

    return save


def test_failure_while_writing_leaves_no_temp_file_and_no_target(tmp_path, monkeypatch):
    monkeypatch.setattr(Image.Image, "save", _save_that_fails_midway(RuntimeError("encoder crashed")))
    with pytest.raises(RuntimeError, match="encoder crashed"):
        write_image(tmp_path / "out.png", torch.rand(3, 4, 4))
    assert list(tmp_path.iterdir()) == []


def test_disk_error_while_writing_is_reported_and_cleaned_up(tmp_path, monkeypatch):
    monkeypatch.setattr(Image.Image, "save", _save_that_fails_midway(OSError(28, "No space left on device")))
    message = _one_line_error(OutputWriteError, write_image, tmp_path / "out.png", torch.rand(3, 4, 4))
    assert "out.png" in message and "No space left" in message
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_previous_file(tmp_path, monkeypatch):
    path = write_image(tmp_path / "out.png", torch.zeros(3, 4, 4))
    before = path.read_bytes()
    monkeypatch.setattr(Image.Image, "save", _save_that_fails_midway(RuntimeError("encoder crashed")))
    with pytest.raises(RuntimeError):
        write_image(path, torch.ones(3, 4, 4))
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_written_file_gets_ordinary_permissions_not_tempfile_0600(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = write_image(tmp_path / "out.png", torch.rand(3, 4, 4))
    if os.name == "posix":
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_written_png_decodes_with_pillow(tmp_path):
    path = write_image(tmp_path / "out.png", torch.rand(3, 5, 7))
    with Image.open(io.BytesIO(path.read_bytes())) as img:
        assert (img.format, img.size, img.mode) == ("PNG", (7, 5), "RGB")


@pytest.mark.parametrize(("fmt", "save", "lossless"), [
    pytest.param("PNG", {}, True, id="png"),
    pytest.param("JPEG", {"quality": 95}, False, id="jpeg"),
    pytest.param("WEBP", {"lossless": True}, True, id="webp-lossless"),
    pytest.param("WEBP", {"quality": 90}, False, id="webp-lossy"),
    pytest.param("WEBP", {"lossless": True, "exif": b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00"}, True,
                 id="webp-lossless-extended"),  # VP8X then EXIF chunks before the image
    pytest.param("WEBP", {"lossless": True, "save_all": True, "append_images": "more"}, True,
                 id="webp-lossless-animated"),  # the image chunks nest in ANMF frames
    pytest.param("WEBP", {"quality": 90, "save_all": True, "append_images": "more"}, False,
                 id="webp-lossy-animated"),
])
def test_a_loaded_image_knows_whether_its_file_stores_exact_pixels(fmt, save, lossless):
    """LoadedImage.lossless: a WebP output of a lossless WebP is written lossless (write_image(lossless=...))."""
    frame = Image.fromarray(_noise_rgb(24, 16))
    if save.get("append_images") == "more":
        save = {**save, "append_images": [Image.fromarray(_noise_rgb(24, 16))]}
    buffer = io.BytesIO()
    frame.save(buffer, fmt, **save)
    assert load_image_bytes(buffer.getvalue(), f"x.{fmt.lower()}").lossless is lossless


def test_a_lossless_webp_write_gives_back_every_pixel():
    loaded = load_image_bytes(_encoded_webp_lossless(), "in.webp")
    again = load_image_bytes(encode_image(loaded.rgb, "webp", lossless=loaded.lossless), "out.webp")
    assert torch.equal(again.rgb, loaded.rgb)


def _encoded_webp_lossless() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_noise_rgb(20, 12)).save(buffer, "WEBP", lossless=True)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "TIFF"])
def test_an_animation_or_multipage_file_says_only_its_first_frame_comes_back(fmt):
    """QA, 2026-11-26: an animated GIF / WebP / APNG came back as its first frame with no word said."""
    frames = [Image.fromarray(_noise_rgb(12, 20, seed=k)) for k in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
    loaded = load_image_bytes(buffer.getvalue(), f"anim.{fmt.lower()}")
    assert loaded.frames == 3 and loaded.size == (20, 12)
    assert output_note(loaded, "anim") == (f"anim: {fmt} holds 3 frames (an animation or pages); only the first is "
                                           "retouched and comes back, as a still image")
    still = io.BytesIO()
    frames[0].save(still, fmt)
    assert output_note(load_image_bytes(still.getvalue(), "still")) is None
