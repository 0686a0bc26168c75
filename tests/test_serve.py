"""The HTTP server: endpoints, formats, limits and their status codes, auth, metrics, OpenAPI, the real CLI.

Most tests run the app in process with a fake retoucher (fast, deterministic); one starts the installed
`langbrt-serve` script on a tiny checkpoint and stops it with SIGINT, as an operator would.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from bad_inputs import CAMERA_TAGS, TIFF_LAYOUT_TAGS, camera_tiff_bytes, deep_noise, png16_bytes, tiff16_bytes
from fastapi.testclient import TestClient
from gated_serve import ENTERED, REPLYING
from PIL import Image
from test_io import png_zlib_level_class

from langbrt.errors import LangBRTInputError
from langbrt.png16 import decode_png16
from langbrt.runtime import RetouchResult
from langbrt.runtime.serve_app import create_app
from langbrt.runtime.serve_config import ServeConfig
from langbrt.runtime.serve_request import MAX_TEXT_FIELD_BYTES
from langbrt.runtime.serve_schemas import WARNING_HEADER
from langbrt.runtime.serve_state import warmup_batch_sizes
from langbrt.text.prompts import MAX_PROMPT_CHARS

PREDEFINED = ["dark circles under the eyes", "forehead wrinkles", "acne on the cheeks"]


class FakeRetoucher:
    """Inverts the image, maps = 0.5 everywhere; records the prompts of every call; optionally slow."""

    prompts = PREDEFINED + ["freckles"]
    predefined_prompts = PREDEFINED

    def __init__(self, sleep_s: float = 0.0, device: str = "cpu") -> None:
        self.sleep_s = sleep_s
        self.device = device
        self.calls: list[list[list[str]] | None] = []
        self.batch_sizes: list[int] = []

    def retouch(self, images: list[torch.Tensor], prompts: list[list[str]] | None = None) -> list[RetouchResult]:
        self.calls.append(prompts)
        self.batch_sizes.append(len(images))
        time.sleep(self.sleep_s)
        lists = prompts or [PREDEFINED] * len(images)
        if any("unknown" in p for ps in lists for p in ps):
            raise LangBRTInputError("prompt 'unknown' is not in the bank and no text encoder is installed")
        return [
            RetouchResult(1.0 - img, torch.full((1, *img.shape[1:]), 0.5),
                          torch.full((len(ps), *img.shape[1:]), 0.5), list(ps), {"model": 1.0})
            for img, ps in zip(images, lists, strict=True)
        ]


def _encode(fmt: str = "PNG", size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def fake() -> FakeRetoucher:
    return FakeRetoucher()


def _client(fake: FakeRetoucher, **config: Any) -> TestClient:
    return TestClient(create_app(ServeConfig(**config), loader=lambda: fake), raise_server_exceptions=False)


def _wait_ready(client: TestClient | httpx.Client) -> None:
    deadline = time.monotonic() + 10
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.01)


@pytest.fixture
def client(fake: FakeRetoucher) -> Iterator[TestClient]:
    with _client(fake) as c:
        _wait_ready(c)
        yield c


def _assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"], body


# ------------------------------------------------------------------------------------------ endpoints


def test_healthz_answers_before_the_model_is_ready_and_readyz_waits_for_warmup(fake: FakeRetoucher) -> None:
    release = threading.Event()

    def slow_loader() -> FakeRetoucher:
        release.wait(5)
        return fake

    with TestClient(create_app(ServeConfig(), loader=slow_loader)) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        _assert_error(c.get("/readyz"), 503, "not_ready")
        _assert_error(c.post("/v1/retouch", content=_encode(), headers={"content-type": "image/png"}), 503,
                      "not_ready")
        release.set()
        _wait_ready(c)
    assert fake.calls[0] is None  # the warm-up ran once with the default prompts
    assert fake.batch_sizes == [1]  # on CPU one image: nothing is tuned there


def test_on_a_gpu_the_warmup_runs_each_batch_size_class_before_ready() -> None:
    """The fused attention autotunes per power-of-two grid size on first use: warm-up reaches each class
    the batcher can form, so no request waits for a tuning run."""
    fake = FakeRetoucher(device="cuda:0")
    with TestClient(create_app(ServeConfig(max_batch=6), loader=lambda: fake)) as c:
        _wait_ready(c)
        assert fake.batch_sizes == [1, 2, 4, 6]


@pytest.mark.parametrize(("max_batch", "device", "sizes"), [
    (8, "cuda", [1, 2, 4, 8]), (1, "cuda", [1]), (5, "cuda:1", [1, 2, 4, 5]), (8, "cpu", [1]),
])
def test_warmup_batch_sizes(max_batch: int, device: str, sizes: list[int]) -> None:
    assert warmup_batch_sizes(max_batch, device) == sizes


def test_a_model_that_fails_to_load_keeps_readyz_at_503_and_reports_it() -> None:
    failures: list[str] = []

    def broken() -> FakeRetoucher:
        raise LangBRTInputError("model.onnx: no such file")

    with TestClient(create_app(ServeConfig(), loader=broken, on_load_failure=failures.append)) as c:
        deadline = time.monotonic() + 5
        while not failures and time.monotonic() < deadline:
            time.sleep(0.01)
        response = c.get("/readyz")
    _assert_error(response, 503, "not_ready")
    assert "no such file" in response.json()["error"]["message"] and failures


def test_without_a_model_the_bundled_one_is_served() -> None:
    with TestClient(create_app(ServeConfig())) as c:
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.get("/readyz").status_code == 200
        assert c.get("/v1/prompts").json()["prompts"][:3] == PREDEFINED


def test_prompts_lists_what_the_model_knows(client: TestClient) -> None:
    body = client.get("/v1/prompts").json()
    assert body["prompts"] == PREDEFINED + ["freckles"] and body["max_prompt_chars"] == MAX_PROMPT_CHARS


@pytest.mark.parametrize(("fmt", "media"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_multipart_image_comes_back_in_its_own_format_and_size(client: TestClient, fmt: str, media: str) -> None:
    response = client.post("/v1/retouch", files={"image": ("face", _encode(fmt), media)})
    assert response.status_code == 200 and response.headers["content-type"] == media
    out = Image.open(io.BytesIO(response.content))
    assert out.format == fmt and out.size == (40, 30)
    if fmt == "PNG":  # encoded for speed: zlib level 1 (FLEVEL 0), not Pillow's default 6
        assert png_zlib_level_class(response.content) == 0


def test_a_raw_image_body_is_accepted(client: TestClient) -> None:
    data = _encode("PNG")
    response = client.post("/v1/retouch", content=data, headers={"content-type": "image/png"})
    assert response.status_code == 200
    expected = 255 - np.asarray(Image.open(io.BytesIO(data)))  # the fake inverts
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(response.content))), expected)


def test_other_formats_come_back_as_png(client: TestClient) -> None:
    response = client.post("/v1/retouch", content=_encode("BMP"), headers={"content-type": "image/bmp"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"


def test_rgba_keeps_its_alpha(client: TestClient) -> None:
    data = _encode("PNG", mode="RGBA")
    response = client.post("/v1/retouch", files={"image": ("face.png", data, "image/png")})
    out = Image.open(io.BytesIO(response.content))
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out)[..., 3], np.asarray(Image.open(io.BytesIO(data)))[..., 3])


def test_a_16bit_png_upload_comes_back_as_a_16bit_png(client: TestClient) -> None:
    samples = deep_noise()  # (H, W, 3) uint16, no multiple of 257
    response = client.post("/v1/retouch", content=png16_bytes(samples), headers={"content-type": "image/png"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert WARNING_HEADER not in response.headers
    assert (response.content[24], response.content[25]) == (16, 2)  # IHDR: 16 bits per sample, RGB
    assert np.array_equal(decode_png16(response.content, alpha=False), 65535 - samples)  # the fake inverts, at 16 bits


def test_a_16bit_rgba_upload_keeps_its_alpha_at_16_bits_in_a_json_reply(client: TestClient) -> None:
    samples = deep_noise(channels=4)
    response = client.post("/v1/retouch", files={"image": ("face.png", png16_bytes(samples), "image/png")},
                           data={"return": "json"})
    body = response.json()
    assert response.status_code == 200 and body["bit_depth"] == 16 and "warning" not in body
    out = decode_png16(base64.b64decode(body["image"]), alpha=True)
    assert out.shape == samples.shape and np.array_equal(out[:, :, 3], samples[:, :, 3])
    mask = base64.b64decode(body["mask"])
    assert (mask[24], mask[25]) == (16, 0)  # IHDR: a 16-bit grey mask beside a 16-bit image


def test_an_8bit_upload_gets_an_8bit_mask_in_a_json_reply(client: TestClient) -> None:
    body = client.post("/v1/retouch", content=_encode(), headers={"content-type": "image/png"},
                       params={"return": "json"}).json()
    mask = base64.b64decode(body["mask"])
    assert (mask[24], mask[25]) == (8, 0)


def test_a_16bit_colour_tiff_upload_comes_back_as_a_16bit_png(client: TestClient) -> None:
    samples = deep_noise()
    response = client.post("/v1/retouch", content=tiff16_bytes(samples), headers={"content-type": "image/tiff"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert WARNING_HEADER not in response.headers
    assert np.array_equal(decode_png16(response.content, alpha=False), 65535 - samples)  # the fake inverts, at 16 bits


def test_a_tiff_uploads_exif_comes_back_in_the_png_reply(client: TestClient) -> None:
    """QA: the reply to a TIFF upload had lost its Make, Model and Software."""
    response = client.post("/v1/retouch", content=camera_tiff_bytes(), headers={"content-type": "image/tiff"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as img:
        exif = img.getexif()
        assert {tag: exif.get(tag) for tag in CAMERA_TAGS} == CAMERA_TAGS and not set(exif) & set(TIFF_LAYOUT_TAGS)


def test_an_lzw_16bit_colour_tiff_upload_comes_back_8bit_and_the_reply_says_so(client: TestClient) -> None:
    """LZW needs imagecodecs, which tifffile lacks here: Pillow's 8 bits, and the reply says so."""
    data = tiff16_bytes(deep_noise(), lzw=True)
    response = client.post("/v1/retouch", files={"image": ("写真.tif", data, "image/tiff")})  # a name no header holds
    assert response.status_code == 200 and response.headers[WARNING_HEADER].startswith("16-bit TIFF comes back as 8")
    assert Image.open(io.BytesIO(response.content)).mode == "RGB"
    body = client.post("/v1/retouch", params={"return": "json"}, content=data,
                       headers={"content-type": "image/tiff"}).json()
    assert body["bit_depth"] == 8 and body["format"] == "PNG" and "16-bit TIFF comes back as 8-bit" in body["warning"]


def test_prompts_from_form_and_query_reach_the_model_normalised(client: TestClient, fake: FakeRetoucher) -> None:
    response = client.post(
        "/v1/retouch", params={"prompt": "Acne  on the cheeks"},
        files={"image": ("f.png", _encode(), "image/png")}, data={"prompt": ["freckles", "forehead wrinkles"]},
    )
    assert response.status_code == 200
    assert fake.calls[-1] == [["acne on the cheeks", "freckles", "forehead wrinkles"]]


def test_no_prompts_means_the_predefined_ones(client: TestClient, fake: FakeRetoucher) -> None:
    client.post("/v1/retouch", content=_encode(), headers={"content-type": "image/png"})
    assert fake.calls[-1] is None


def test_json_reply_carries_image_mask_maps_timing_and_prompts(client: TestClient) -> None:
    response = client.post("/v1/retouch", params={"return": "json", "maps": "true", "prompt": ["freckles", "acne"]},
                           content=_encode("JPEG"), headers={"content-type": "image/jpeg"})
    body = response.json()
    assert response.status_code == 200 and body["format"] == "JPEG" and body["prompts"] == ["freckles", "acne"]
    assert Image.open(io.BytesIO(base64.b64decode(body["image"]))).format == "JPEG"
    mask = Image.open(io.BytesIO(base64.b64decode(body["mask"])))
    assert mask.mode == "L" and mask.size == (40, 30)
    assert [m["prompt"] for m in body["maps"]] == ["freckles", "acne"]
    assert {"model", "decode", "queue_and_model", "encode"} <= set(body["timing_ms"])


def test_json_reply_leaves_maps_out_unless_asked(client: TestClient) -> None:
    response = client.post("/v1/retouch", files={"image": ("f.png", _encode(), "image/png")},
                           data={"return": "json"})
    assert response.status_code == 200 and "maps" not in response.json()


def test_maps_asked_for_with_an_image_reply_are_422_not_dropped(client: TestClient) -> None:
    for params, data in (({"maps": "true"}, {}), ({}, {"maps": "true", "return": "image"})):
        response = client.post("/v1/retouch", params=params, files={"image": ("f.png", _encode(), "image/png")},
                               data=data)
        _assert_error(response, 422, "invalid_request")
        assert "maps=true needs return=json" in response.json()["error"]["message"]
    ok = client.post("/v1/retouch", params={"maps": "false"}, files={"image": ("f.png", _encode(), "image/png")})
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"


# ------------------------------------------------------------------------------------------ limits and errors


def test_content_length_over_the_limit_is_413() -> None:
    with _client(FakeRetoucher(), max_body_bytes=1000) as c:
        _wait_ready(c)
        response = c.post("/v1/retouch", content=b"x" * 2000, headers={"content-type": "image/png"})
    _assert_error(response, 413, "body_too_large")
    assert response.headers["connection"] == "close"  # the body is never read


def test_a_streamed_body_over_the_limit_is_413_without_content_length() -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b"x" * 500

    with _client(FakeRetoucher(), max_body_bytes=1000) as c:
        _wait_ready(c)
        response = c.post("/v1/retouch", content=chunks(), headers={"content-type": "image/png"})
    _assert_error(response, 413, "body_too_large")
    assert response.headers["connection"] == "close"  # the rest of the body is never read


def test_too_many_pixels_is_413() -> None:
    with _client(FakeRetoucher(), max_pixels=1000) as c:
        _wait_ready(c)
        _assert_error(c.post("/v1/retouch", content=_encode(), headers={"content-type": "image/png"}), 413,
                      "too_many_pixels")


def test_a_decompression_bomb_header_is_413_before_decoding(client: TestClient) -> None:
    # A valid PNG header announcing 30000 x 30000 pixels (900 MP) with almost no data behind it.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    _assert_error(client.post("/v1/retouch", content=png, headers={"content-type": "image/png"}), 413,
                  "too_many_pixels")


@pytest.mark.parametrize("payload", [b"not an image at all", _encode()[:60]], ids=["garbage", "truncated"])
def test_an_undecodable_image_is_422(client: TestClient, payload: bytes) -> None:
    _assert_error(client.post("/v1/retouch", content=payload, headers={"content-type": "image/png"}), 422,
                  "invalid_image")


def test_a_non_image_content_type_is_415(client: TestClient) -> None:
    _assert_error(client.post("/v1/retouch", content=b"{}", headers={"content-type": "application/json"}), 415,
                  "unsupported_media")
    _assert_error(client.post("/v1/retouch", files={"image": ("a.txt", b"hello", "text/plain")}), 415,
                  "unsupported_media")


@pytest.mark.parametrize("coding", ["gzip", "br, identity"])
def test_a_body_with_a_content_coding_is_415_not_an_image_error_or_ignored(client: TestClient, coding: str) -> None:
    """QA: `Content-Encoding: gzip` was ignored: a gzipped PNG was a 422 blaming the image, and a plain body
    labelled gzip was retouched as if unlabelled."""
    gzipped = client.post("/v1/retouch", content=gzip.compress(_encode()),
                          headers={"content-type": "image/png", "content-encoding": coding})
    mislabelled = client.post("/v1/retouch", files={"image": ("f.png", _encode(), "image/png")},
                              headers={"content-encoding": coding})
    for response in (gzipped, mislabelled):
        _assert_error(response, 415, "unsupported_media")
        assert "Content-Encoding" in response.json()["error"]["message"]
        assert response.headers["accept-encoding"] == "identity" and response.headers["connection"] == "close"
    plain = client.post("/v1/retouch", content=_encode(), headers={"content-type": "image/png",
                                                                   "content-encoding": "identity"})
    assert plain.status_code == 200


def test_a_multipart_request_without_an_image_field_is_422(client: TestClient) -> None:
    _assert_error(client.post("/v1/retouch", files={"photo": ("f.png", _encode(), "image/png")}), 422,
                  "invalid_request")


def test_a_truncated_multipart_body_is_400_not_a_missing_field(client: TestClient) -> None:
    """Starlette's parser accepts a body cut off before its closing boundary; the server must not."""
    whole = (b"--XYZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
             b"Content-Type: image/png\r\n\r\n" + _encode() + b"\r\n--XYZ--\r\n")
    headers = {"content-type": "multipart/form-data; boundary=XYZ"}
    assert client.post("/v1/retouch", content=whole, headers=headers).status_code == 200
    cut = whole[: whole.index(b"\r\n--XYZ--")]
    _assert_error(client.post("/v1/retouch", content=cut, headers=headers), 400, "bad_request")


def _form(fields: list[tuple[bytes, bytes]], image_as_text: bool = False) -> bytes:
    """A multipart body by hand: text fields (name, raw bytes), then the image (as a file, or as text)."""
    parts = [b"--XYZ\r\nContent-Disposition: form-data; name=\"" + name + b"\"\r\n\r\n" + value + b"\r\n"
             for name, value in fields]
    image = (b"--XYZ\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n" if image_as_text else
             b"--XYZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
             b"Content-Type: image/png\r\n\r\n")
    return b"".join(parts) + image + _encode() + b"\r\n--XYZ--\r\n"


FORM = {"content-type": "multipart/form-data; boundary=XYZ"}


def test_a_text_field_over_its_limit_is_413_naming_the_field_and_the_limit(client: TestClient) -> None:
    """QA: Starlette's 1 MiB limit on a text part answered 400 "malformed multipart body" to a well-formed body."""
    response = client.post("/v1/retouch", content=_form([(b"prompt", b"x" * (MAX_TEXT_FIELD_BYTES + 1))]),
                           headers=FORM)
    _assert_error(response, 413, "field_too_large")
    assert f"field 'prompt' exceeds the {MAX_TEXT_FIELD_BYTES}-byte limit" in response.json()["error"]["message"]
    at_limit = client.post("/v1/retouch", content=_form([(b"prompt", b"x" * MAX_TEXT_FIELD_BYTES)]), headers=FORM)
    _assert_error(at_limit, 422, "invalid_prompt")  # parsed whole: the prompt's own limit answers


def test_a_large_image_sent_as_a_text_field_is_the_422_of_a_missing_file_not_a_size_error(
        client: TestClient) -> None:
    """A client that left out `filename=` must learn that, whatever the image's size."""
    big = b"--XYZ\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n" + b"x" * (MAX_TEXT_FIELD_BYTES + 1)
    response = client.post("/v1/retouch", content=big + b"\r\n--XYZ--\r\n", headers=FORM)
    _assert_error(response, 422, "invalid_request")
    assert "image=@" in response.json()["error"]["message"]


def test_a_prompt_field_that_is_not_utf8_is_422_like_in_a_query_not_another_prompt(client: TestClient) -> None:
    """Starlette decodes undecodable field bytes as Latin-1: 'acn\\xe9' would retouch for 'acnÃ©'."""
    ok = client.post("/v1/retouch", content=_form([(b"prompt", "acné".encode())]), headers=FORM)
    assert ok.status_code == 200
    bad = client.post("/v1/retouch", content=_form([(b"prompt", "acné".encode("latin-1"))]), headers=FORM)
    _assert_error(bad, 422, "invalid_prompt")
    query = client.post("/v1/retouch", params={"prompt": "acn\ufffd"}, content=_encode(),
                        headers={"content-type": "image/png"})
    _assert_error(query, 422, "invalid_prompt")


def test_an_unknown_request_charset_is_400_not_a_latin1_guess(client: TestClient) -> None:
    headers = {"content-type": "multipart/form-data; boundary=XYZ; charset=bogus"}
    response = client.post("/v1/retouch", content=_form([(b"prompt", "acné".encode())]), headers=headers)
    _assert_error(response, 400, "bad_request")
    assert "bogus" in response.json()["error"]["message"]


def test_an_unknown_field_or_query_parameter_is_422_naming_it(client: TestClient) -> None:
    """QA, 2026-11-26: a misspelt 'promt' was ignored and the image retouched for the default prompts; now
    it is refused by name (whatever its bytes), as is a second file. An image sent as a text field is told
    to be a file."""
    for response in (client.post("/v1/retouch", content=_form([(b"promt", b"acne \xe9\xff")]), headers=FORM),
                     client.post("/v1/retouch", params={"promt": "acne"}, content=_encode(),
                                 headers={"content-type": "image/png"})):
        _assert_error(response, 422, "invalid_request")
        assert "unknown" in response.json()["error"]["message"] and "'promt'" in response.json()["error"]["message"]
    two_files = client.post("/v1/retouch", files=[("image", ("a.png", _encode(), "image/png")),
                                                  ("image", ("b.png", _encode(), "image/png"))])
    _assert_error(two_files, 422, "invalid_request")
    assert "one image per request" in two_files.json()["error"]["message"]
    response = client.post("/v1/retouch", content=_form([], image_as_text=True), headers=FORM)
    _assert_error(response, 422, "invalid_request")
    assert "image=@" in response.json()["error"]["message"]


@pytest.mark.parametrize(("query", "fields", "named"), [
    ("return=json&return=image", None, "'return'"),
    ("return=json&maps=true&maps=false", None, "'maps'"),
    ("", [(b"return", b"json"), (b"return", b"image")], "'return'"),
    ("", [(b"return", b"json"), (b"maps", b"true"), (b"maps", b"false")], "'maps'"),
    ("", [(b"image", b"not the file")], "'image'"),
    ("return=image", [(b"return", b"json")], "'return'"),
    ("return=json&maps=false", [(b"maps", b"true")], "'maps'"),
], ids=["query-return", "query-maps", "form-return", "form-maps", "form-image", "query-and-form-return",
        "query-and-form-maps"])
def test_a_repeated_parameter_is_422_not_its_last_value(client: TestClient, fake: FakeRetoucher, query: str,
                                                        fields: list[tuple[bytes, bytes]] | None,
                                                        named: str) -> None:
    """QA: `?return=json&return=image` (or two `return` fields) answered an image, the last value
    winning without a word; a parameter given once in the query and once in the form let the query win. Only
    `prompt` repeats; anything else given twice is refused by name before the model runs."""
    calls = len(fake.calls)
    if fields is None:
        response = client.post(f"/v1/retouch?{query}", content=_encode(), headers={"content-type": "image/png"})
    else:
        response = client.post(f"/v1/retouch?{query}", content=_form(fields), headers=FORM)
    _assert_error(response, 422, "invalid_request")
    assert named in response.json()["error"]["message"]
    assert len(fake.calls) == calls


def test_prompt_may_repeat_in_the_query_in_the_form_and_across_both(client: TestClient, fake: FakeRetoucher) -> None:
    response = client.post("/v1/retouch?prompt=acne&prompt=freckles",
                           content=_form([(b"prompt", b"forehead wrinkles"), (b"prompt", b"redness")]), headers=FORM)
    assert response.status_code == 200, response.text
    assert fake.calls[-1] == [["acne", "freckles", "forehead wrinkles", "redness"]]


@pytest.mark.parametrize(
    "prompts", [[""], ["x" * (MAX_PROMPT_CHARS + 1)], [f"p{i}" for i in range(9)], ["acne\x00"], ["\ufffd\ufffd"]],
    ids=["empty", "long", "many", "control-character", "replacement-character"],
)
def test_bad_prompts_are_422(client: TestClient, prompts: list[str]) -> None:
    response = client.post("/v1/retouch", params={"prompt": prompts}, content=_encode(),
                           headers={"content-type": "image/png"})
    _assert_error(response, 422, "invalid_prompt")


@pytest.mark.parametrize("prompt", ["acne\nx", "acne\r\n", "\tacne", "acne\x0bx", "acne\x85x"],
                         ids=["newline", "crlf", "tab", "vertical-tab", "next-line"])
def test_a_prompt_with_a_whitespace_control_character_is_422_in_query_and_form(client: TestClient,
                                                                               prompt: str) -> None:
    """QA: `prompt=acne%0Ax` got a 200 (the newline folded into a space, as `langbrt-infer --prompt` does),
    though the status table lists any control character as `invalid_prompt`, as BEL and NUL already were."""
    query = client.post("/v1/retouch", params={"prompt": prompt}, content=_encode(),
                        headers={"content-type": "image/png"})
    form = client.post("/v1/retouch", content=_form([(b"prompt", prompt.encode())]), headers=FORM)
    for response in (query, form):
        _assert_error(response, 422, "invalid_prompt")
        assert "control character" in response.json()["error"]["message"]


def test_many_prompt_fields_in_a_form_are_422_like_many_in_the_query(client: TestClient) -> None:
    """Twenty prompt fields must not trip the multipart parser's field limit (a 400) first."""
    data = {"prompt": [f"p{i}" for i in range(20)]}
    response = client.post("/v1/retouch", files={"image": ("f.png", _encode(), "image/png")}, data=data)
    _assert_error(response, 422, "invalid_prompt")
    assert "20 prompts" in response.json()["error"]["message"]


def test_a_prompt_the_model_cannot_encode_is_422(client: TestClient) -> None:
    response = client.post("/v1/retouch", params={"prompt": "unknown"}, content=_encode(),
                           headers={"content-type": "image/png"})
    _assert_error(response, 422, "invalid_prompt")


def test_bad_query_values_unknown_paths_and_methods_get_json_errors(client: TestClient) -> None:
    _assert_error(client.post("/v1/retouch?return=gif", content=_encode(), headers={"content-type": "image/png"}),
                  422, "invalid_request")
    _assert_error(client.get("/nope"), 404, "not_found")
    _assert_error(client.get("/v1/retouch"), 405, "method_not_allowed")


def test_every_get_answers_head(client: TestClient) -> None:
    """Load balancers and uptime monitors often probe with HEAD; RFC 9110 asks it of every GET (QA: /metrics and
    /v1/prompts answered 405)."""
    for path in ("/healthz", "/readyz", "/metrics", "/v1/prompts", "/openapi.json", "/docs"):
        response = client.head(path)
        assert response.status_code == 200 and response.content == b"", (path, response.status_code)


@pytest.mark.parametrize(("method", "path", "allow"), [("DELETE", "/healthz", "GET, HEAD"),
                                                       ("POST", "/metrics", "GET, HEAD"),
                                                       ("OPTIONS", "/v1/prompts", "GET, HEAD"),
                                                       ("GET", "/v1/retouch", "POST")])
def test_a_405_names_every_method_the_path_takes(client: TestClient, method: str, path: str, allow: str) -> None:
    """QA: `DELETE /healthz` answered `Allow: GET`, though the path takes HEAD too."""
    response = client.request(method, path)
    _assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allow


def _run_concurrently(fake: FakeRetoucher, config: ServeConfig, n: int, busy_first: bool = False,
                      sleep_s: float = 0.3) -> list[httpx.Response]:
    """n simultaneous raw-body requests against the app in process (lifespan driven by hand), each taking
    the model `sleep_s`. `busy_first`: send one, wait until the model is busy with it, then the other n - 1
    at once, so which requests find the queue full does not depend on how fast the worker picks up."""
    app = create_app(config, loader=lambda: fake)

    async def main() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                while (await c.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.01)
                fake.sleep_s = sleep_s

                def send() -> Awaitable[httpx.Response]:
                    return c.post("/v1/retouch", content=_encode(), headers={"content-type": "image/png"})

                first = []
                if busy_first:
                    warmed = len(fake.calls)  # the start-up warm-up called the model already
                    first.append(asyncio.ensure_future(send()))
                    while len(fake.calls) == warmed:
                        await asyncio.sleep(0.005)
                rest = await asyncio.gather(*(send() for _ in range(n - len(first))))
                return [*(await asyncio.gather(*first)), *rest]

    return asyncio.run(main())


def test_a_full_queue_is_503_with_retry_after() -> None:
    """The model busy with one request, a queue of one takes the next and refuses the rest."""
    responses = _run_concurrently(FakeRetoucher(), ServeConfig(max_batch=1, queue_size=1, max_delay_ms=0), 4,
                                  busy_first=True, sleep_s=1.0)
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2 and 503 in statuses, statuses
    refused = next(r for r in responses if r.status_code == 503)
    _assert_error(refused, 503, "queue_full")
    assert refused.headers["retry-after"] == "1"


def test_a_request_over_the_timeout_is_504() -> None:
    responses = _run_concurrently(FakeRetoucher(), ServeConfig(max_batch=1, timeout_s=0.1), 1)
    _assert_error(responses[0], 504, "timeout")


# ------------------------------------------------------------------------------------------ auth, metrics


def test_a_configured_token_guards_the_api_but_not_the_probes(fake: FakeRetoucher) -> None:
    with _client(fake, token="s3cret") as c:
        _wait_ready(c)
        for response in (c.get("/v1/prompts"), c.get("/metrics"),
                         c.get("/v1/prompts", headers={"Authorization": "Bearer wrong"})):
            _assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/v1/prompts", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200


def test_metrics_count_requests_batches_and_queue_depth(client: TestClient) -> None:
    client.post("/v1/retouch", content=_encode(), headers={"content-type": "image/png"})
    client.post("/v1/retouch", content=b"junk", headers={"content-type": "image/png"})
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'langbrt_requests_total{endpoint="/v1/retouch",status="200"} 1.0' in text
    assert 'langbrt_requests_total{endpoint="/v1/retouch",status="422"} 1.0' in text
    assert "langbrt_request_latency_seconds_bucket" in text and "langbrt_batch_size_count" in text
    assert "langbrt_model_latency_seconds_count 1.0" in text and "langbrt_queue_wait_seconds_count 1.0" in text
    assert "langbrt_queue_depth 0.0" in text and "process_resident_memory_bytes" in text
    assert "langbrt_inflight_pixels 0.0" in text and "langbrt_inflight_body_bytes 0.0" in text  # released


def test_two_apps_keep_separate_metrics(fake: FakeRetoucher) -> None:
    with _client(fake) as a, _client(fake) as b:
        a.get("/healthz")
        assert 'endpoint="/healthz"' not in b.get("/metrics").text


# ------------------------------------------------------------------------------------------ OpenAPI


def test_responses_match_the_openapi_document(fake: FakeRetoucher) -> None:
    """Every endpoint's real replies (success and errors) have a documented status, media type and schema."""
    validator = pytest.importorskip("openapi_spec_validator")
    jsonschema = pytest.importorskip("jsonschema")
    with _client(fake, token="t") as c:
        _wait_ready(c)
        spec = c.get("/openapi.json").json()
        validator.validate(spec)
        auth = {"Authorization": "Bearer t"}
        png = {"content-type": "image/png", **auth}
        observed = [
            ("get", "/healthz", c.get("/healthz")),
            ("get", "/readyz", c.get("/readyz")),
            ("get", "/metrics", c.get("/metrics", headers=auth)),
            ("get", "/v1/prompts", c.get("/v1/prompts", headers=auth)),
            ("get", "/v1/prompts", c.get("/v1/prompts")),
            ("post", "/v1/retouch", c.post("/v1/retouch", content=_encode(), headers=png)),
            ("post", "/v1/retouch", c.post("/v1/retouch?return=json&maps=true", content=_encode(), headers=png)),
            ("post", "/v1/retouch", c.post("/v1/retouch", content=b"junk", headers=png)),
            ("post", "/v1/retouch", c.post("/v1/retouch", content=b"{}", headers={**auth,
                                                                                  "content-type": "text/plain"})),
        ]
    for method, path, response in observed:
        documented = spec["paths"][path][method]["responses"]
        assert str(response.status_code) in documented, (method, path, response.status_code)
        content = documented[str(response.status_code)].get("content", {})
        media = response.headers["content-type"].split(";")[0]
        assert media in content, (method, path, response.status_code, media, list(content))
        if media == "application/json":
            schema = {"$ref": content[media]["schema"]["$ref"], "components": spec["components"]}
            jsonschema.Draft202012Validator(schema).validate(response.json())


# ------------------------------------------------------------------------------------------ the real CLI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_script() -> list[str]:
    script = shutil.which("langbrt-serve", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "langbrt.runtime.cli_serve"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from langbrt.config import LangBRTConfig
    from langbrt.model import LangBRT

    torch.manual_seed(0)
    return LangBRT(LangBRTConfig.tiny()).save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


def start_server(model: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """The installed console script on a loopback port; the caller stops it."""
    cmd = [*_serve_script(), "--model", str(model), "--port", str(port), "--backend", "torch", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_until(check: Callable[[], bool], timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "server exited"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.slow
def test_the_langbrt_serve_script_serves_a_multipart_request_and_stops_gracefully(tiny_checkpoint: Path) -> None:
    port = _free_port()
    proc = start_server(tiny_checkpoint, port)
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 60, proc)
        files = {"image": ("face.jpg", _encode("JPEG", (96, 80)), "image/jpeg")}
        data = {"prompt": ["acne on the cheeks", "forehead wrinkles"]}
        response = httpx.post(f"{base}/v1/retouch", files=files, data=data, timeout=30)
        assert response.status_code == 200, response.text
        out = Image.open(io.BytesIO(response.content))
        assert out.format == "JPEG" and out.size == (96, 80)
    finally:
        proc.send_signal(signal.SIGTERM)  # what an orchestrator sends; load.py uses SIGINT
        try:
            output = proc.communicate(timeout=20)[0].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, output
    assert f"listening on http://127.0.0.1:{port}" in output  # --port 0 users learn the port from this line
    assert "Shutting down" in output or "shutdown" in output.lower()


@pytest.mark.slow
def test_sigterm_ends_an_upload_still_arriving_with_503_and_exits_0(tiny_checkpoint: Path) -> None:
    """The stalled upload must neither hold the shutdown for its 60 s idle timeout nor get a plain-text 500."""
    port = _free_port()
    proc = start_server(tiny_checkpoint, port, "--timeout-s", "3")
    try:
        wait_until(lambda: _ready(f"http://127.0.0.1:{port}"), 60, proc)
        conn = socket.create_connection(("127.0.0.1", port))
        conn.sendall(b"POST /v1/retouch HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 100000\r\n\r\n" + _encode()[:100])
        time.sleep(1.5)  # the upload is being read (0.5 s raced a loaded box once, 2026-11-26)
        proc.send_signal(signal.SIGTERM)
        conn.settimeout(10)
        reply = b""
        while chunk := conn.recv(65536):  # "connection: close": headers and body may come as two segments
            reply += chunk
        conn.close()
        output = proc.communicate(timeout=20)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert reply.startswith(b"HTTP/1.1 503") and b'"shutting_down"' in reply, reply
    assert proc.returncode == 0 and "Traceback" not in output, output


class _GatedServer:
    """`tests/gated_serve.py` (the real CLI, a stand-in model holding each request until `release`) and its
    output lines as they come; every wait is for a line or a reply, none for a length of time."""

    def __init__(self, tmp_path: Path, *flags: str, hold_reply: bool = False) -> None:
        """`flags` go to langbrt-serve; `hold_reply` holds each request in its reply's encoding, not the model."""
        self.gate = tmp_path / "gate"
        self.port = _free_port()
        self.held_line = REPLYING if hold_reply else ENTERED
        script = Path(__file__).parent / "gated_serve.py"
        self.proc = subprocess.Popen([sys.executable, str(script), str(self.gate), *["--hold-reply"] * hold_reply,
                                      "--model", str(tmp_path), "--port", str(self.port), *flags],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.reader = threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout or ()],
                                       daemon=True)
        self.reader.start()
        self.client = ThreadPoolExecutor(1)
        self.wait_for("model loaded and warmed up; ready")

    def wait_for(self, text: str) -> None:
        while not any(text in line for line in self.output):
            self.output.append(self.lines.get(timeout=60))  # a guard against a hang, not a timing

    def post_in_background(self) -> Future[httpx.Response]:
        """Start one retouch request and wait until it is held (in the model, or encoding its reply); the future
        holds its reply."""
        reply = self.client.submit(httpx.post, f"http://127.0.0.1:{self.port}/v1/retouch", content=_encode(),
                                   headers={"content-type": "image/png"}, timeout=60)
        self.wait_for(self.held_line)
        return reply

    def release(self) -> None:
        self.gate.touch()

    def finish(self) -> str:
        """Wait for the exit; all its output."""
        self.release()
        self.proc.wait(60)
        self.reader.join(60)  # it ends at the output's end
        self.output.extend(self.lines.get() for _ in range(self.lines.qsize()))
        return "".join(self.output)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.client.shutdown()

    def __enter__(self) -> _GatedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()  # whatever the test did, no server outlives it


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "flags", "hold_reply"), [
    (signal.SIGINT, (), False),  # a request still in the model
    (signal.SIGTERM, ("--timeout-s", "2"), True),  # a reply still being encoded, finished within the time limit
], ids=["sigint-in-the-model", "sigterm-reply-within-the-limit"])
def test_a_drain_that_answers_the_request_still_running_exits_0(tmp_path: Path, stop, flags, hold_reply) -> None:
    with _GatedServer(tmp_path, *flags, hold_reply=hold_reply) as server:
        pending = server.post_in_background()
        server.proc.send_signal(stop)
        server.wait_for("Shutting down")
        server.release()
        reply = pending.result(timeout=60)
        output = server.finish()
    assert reply.status_code == 200, reply.text
    assert server.proc.returncode == 0 and "cut off" not in output and "Traceback" not in output, output


@pytest.mark.slow
def test_a_second_sigint_while_draining_forces_the_quit_and_exits_130(tmp_path: Path) -> None:
    """QA: the forced quit exited 0, so a supervisor could not tell requests cut off from a finished drain."""
    with _GatedServer(tmp_path) as server:
        pending = server.post_in_background()
        server.proc.send_signal(signal.SIGINT)
        server.wait_for("Shutting down")  # the first signal was handled: the next one is uvicorn's force quit
        server.proc.send_signal(signal.SIGINT)
        reply = pending.result(timeout=60)
        output = server.finish()
    _assert_error(reply, 503, "shutting_down")
    assert server.proc.returncode == 130, output
    assert "langbrt-serve: forced to quit before the drain finished: requests still running were cut off" in output
    assert "Traceback" not in output, output


@pytest.mark.slow
def test_requests_the_graceful_shutdown_time_limit_cuts_off_get_a_503_and_the_exit_is_5(tmp_path: Path) -> None:
    """QA: uvicorn cancels what still runs --timeout-s + 5 s after SIGTERM, and the server exited 0 all the same,
    so a supervisor could not tell that answers were lost. The reply is held past the batcher's own timeout (a
    504), where only that time limit ends it."""
    with _GatedServer(tmp_path, "--timeout-s", "2", hold_reply=True) as server:
        pending = server.post_in_background()
        server.proc.send_signal(signal.SIGTERM)
        reply = pending.result(timeout=60)  # the gate stays shut: the time limit ends the request
        output = server.finish()
    _assert_error(reply, 503, "shutting_down")
    assert server.proc.returncode == 5, output
    assert ("langbrt-serve: the graceful shutdown timed out after 7 s: 1 request(s) still running were cut off"
            in output)
    assert "Traceback" not in output, output


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_the_cli_with_a_missing_model_exits_with_one_line_naming_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LANGBRT_SERVE_TOKEN"}
    missing = tmp_path / "no-such-model"
    result = subprocess.run([*_serve_script(), "--model", str(missing)], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode != 0 and str(missing) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_cli_on_a_taken_port_exits_with_one_line_before_loading_the_model(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([*_serve_script(), "--model", str(tmp_path), "--port", str(port)],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == f"langbrt-serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs fp16 and may run TensorRT")
@pytest.mark.parametrize(("model", "flags", "says"), [
    ("checkpoint", ["--precision", "fp16"], "fp16 with the torch backend needs a CUDA device"),
    ("model.engine", [], "the tensorrt backend needs"),  # TensorRT, or a CUDA GPU where TensorRT is installed
    ("checkpoint", ["--backend", "tensorrt"], "the tensorrt backend takes a TensorRT engine"),
])
def test_flags_this_machine_cannot_run_are_exit_2_in_one_line_before_the_port_is_bound(
        tmp_path: Path, model: str, flags: list[str], says: str) -> None:
    """QA: on a CPU-only machine these exited 1 ("model failed to load") after binding the port and starting
    uvicorn, where langbrt-infer with the same flags exits 2 in one line. The port is taken: an exit 2 naming the
    flag, not "cannot listen", shows the check ran before the bind."""
    path = tmp_path / model
    path.write_bytes(b"not an engine") if path.suffix else path.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = subprocess.run([*_serve_script(), "--model", str(path), "--port", str(taken.getsockname()[1]),
                                 *flags], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("langbrt-serve: error: ") and says in line, line


def test_an_address_that_cannot_be_bound_is_one_line_without_the_no_token_warning(tmp_path: Path) -> None:
    """QA: a public --host that failed to bind printed "listening on ... without --token" before its error line."""
    env = {k: v for k, v in os.environ.items() if k != "LANGBRT_SERVE_TOKEN"}
    result = subprocess.run([*_serve_script(), "--model", str(tmp_path), "--host", "192.0.2.1", "--port", "0"],
                            capture_output=True, text=True, timeout=60, env=env)  # TEST-NET-1: never this machine's
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("langbrt-serve: error: cannot listen on 192.0.2.1:0: "), line


def test_threads_sets_torchs_cpu_threads_before_the_server_starts(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from langbrt.runtime import cli_serve

    asked: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", asked.append)  # this test's process keeps its own setting
    monkeypatch.setattr(cli_serve, "_serve", lambda args, token, sock: len(asked))  # what it had set by then
    assert cli_serve.main(["--model", str(tmp_path), "--port", "0", "--threads", "1"]) == 1
    assert asked == [1]


def test_threads_below_one_is_a_flag_error() -> None:
    result = subprocess.run([*_serve_script(), "--threads", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("langbrt-serve: error: argument --threads: must be a whole number >= 1, got 0"), line


def test_an_empty_model_is_a_flag_error_not_the_bundled_model() -> None:
    """QA: `--model "$MODEL"` with the variable unset served the bundled model as if no --model had been given."""
    result = subprocess.run([*_serve_script(), "--model", ""], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "argument --model: is empty" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_inflight_pixels_below_max_pixels_is_a_flag_error() -> None:
    result = subprocess.run([*_serve_script(), "--max-pixels", "1000", "--max-inflight-pixels", "999"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--max-inflight-pixels (999) must be at least --max-pixels" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("field", "value", "status"),
                         [("return", "JSON", 422), ("return", "json", 200), ("maps", "1", 200), ("maps", "yes", 200),
                          ("maps", "maybe", 422)])
def test_form_fields_follow_the_query_parameters_rules(client: TestClient, field: str, value: str,
                                                      status: int) -> None:
    """The same value means the same thing (or is refused the same way) in the query and in the form."""
    files = {"image": ("f.png", _encode(), "image/png")}
    via_form = client.post("/v1/retouch", files=files, data={field: value, "return": "json"} if field == "maps"
                           else {field: value})
    via_query = client.post("/v1/retouch", params={field: value, **({"return": "json"} if field == "maps" else {})},
                            content=_encode(), headers={"content-type": "image/png"})
    assert (via_form.status_code, via_query.status_code) == (status, status), (via_form.text, via_query.text)
    if field == "maps" and status == 200:
        assert "maps" in via_form.json() and "maps" in via_query.json()
