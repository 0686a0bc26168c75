"""The reply to `POST /v1/retouch`: the retouched image as the upload's format, or JSON with mask and maps.

Runs in a worker thread (encoding is CPU work); the route hands it the decoded upload, the batcher's result
and the timings so far, and sends back what it returns.
"""

from __future__ import annotations

import base64
import io
import time
from typing import Any, Literal

import numpy as np
import torch
from fastapi.responses import Response
from PIL import Image

from langbrt.io import FAST_PNG_LEVEL, LoadedImage, encode_image, output_note
from langbrt.pixel_values import to_uint8_hwc, to_uint16_hwc

from .serve_schemas import OUTPUT_FORMATS, WARNING_HEADER, MapPNG, RetouchJSON

ReturnKind = Literal["image", "json"]


def render_response(loaded: LoadedImage, result: Any, kind: ReturnKind, with_maps: bool,
                    timing: dict[str, float]) -> Response:
    """The reply: 16-bit PNG for a 16-bit PNG upload; a warning (header, JSON field) when the reply lost bits."""
    fmt = loaded.format if loaded.format in OUTPUT_FORMATS else "PNG"
    started = time.perf_counter()
    encoded = encode_image(result.image, fmt, loaded.alpha, exif=loaded.exif, icc_profile=loaded.icc_profile,
                           fast=True, bit_depth=loaded.output_bit_depth,  # the client waits: time over bytes
                           lossless=loaded.lossless)
    timing["encode"] = (time.perf_counter() - started) * 1e3
    server_timing = ", ".join(f"{k};dur={v:.2f}" for k, v in timing.items())
    warning = output_note(loaded)  # unnamed: a header value must stay ASCII, whatever the upload was called
    if kind == "image":
        headers = {"Server-Timing": server_timing, **({WARNING_HEADER: warning} if warning else {})}
        return Response(encoded, media_type=OUTPUT_FORMATS[fmt], headers=headers)
    maps = None
    if with_maps:
        maps = [MapPNG(prompt=p, png=_b64(_gray_png(m, loaded.output_bit_depth)))
                for p, m in zip(result.prompts, result.maps, strict=False)]
    body = RetouchJSON(image=_b64(encoded), format=fmt, bit_depth=loaded.output_bit_depth,
                       mask=_b64(_gray_png(result.mask[0], loaded.output_bit_depth)), maps=maps, timing_ms=timing,
                       prompts=list(result.prompts),
                       warning=warning)
    return Response(body.model_dump_json(exclude_none=True), media_type="application/json",
                    headers={"Server-Timing": server_timing})


def _gray_png(plane: torch.Tensor, bit_depth: int = 8) -> bytes:
    """(H, W) map in [0, 1] -> grayscale PNG bytes of `bit_depth` (8 or 16). Why 16 beside a 16-bit image:
    at 8 bits a mask value under 1/510 shows as 0 where the 16-bit image did change."""
    to_hwc = to_uint16_hwc if bit_depth == 16 else to_uint8_hwc
    arr = np.ascontiguousarray(to_hwc(plane.unsqueeze(0))[:, :, 0])  # (H, W) uint8 or uint16
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=FAST_PNG_LEVEL)  # mode L or I;16
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
