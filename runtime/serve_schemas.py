"""The server's JSON bodies and OpenAPI fragments: what `/openapi.json` promises (tests check replies against it)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import BaseModel

from langbrt.text.prompts import MAX_PROMPT_CHARS

OUTPUT_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
"""Formats a reply keeps from its upload, with their media types; anything else comes back as PNG."""

WARNING_HEADER = "X-LangBRT-Warning"
"""Set on an image reply that carries fewer bits per sample than the upload (a 16-bit LZW TIFF -> 8-bit PNG)."""



class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class StatusBody(BaseModel):
    status: str


class PromptsBody(BaseModel):
    prompts: list[str]
    max_prompts: int
    max_prompt_chars: int


class MapPNG(BaseModel):
    prompt: str
    png: str  # base64 of a grayscale PNG, 255 = fully retouched


class RetouchJSON(BaseModel):
    image: str  # base64 of the retouched image in `format`
    format: str
    bit_depth: int  # bits per sample of `image`: 16 for a 16-bit PNG (or grayscale TIFF) upload, else 8
    mask: str  # base64 of a grayscale PNG of the combined mask
    maps: list[MapPNG] | None = None
    timing_ms: dict[str, float]
    prompts: list[str]
    warning: str | None = None  # when `image` holds fewer bits per sample than the upload


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these statuses, each with the one JSON error body every 4xx/5xx has."""
    return {s: {"model": ErrorBody, "description": HTTPStatus(s).phrase} for s in statuses}


IMAGE_SCHEMA = {"type": "string", "format": "binary"}
RETOUCH_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": IMAGE_SCHEMA,
                    "prompt": {"type": "array", "items": {"type": "string", "maxLength": MAX_PROMPT_CHARS}},
                    "return": {"type": "string", "enum": ["image", "json"]},
                    "maps": {"type": "boolean"},
                },
            }
        },
        "image/*": {"schema": IMAGE_SCHEMA},
        "application/octet-stream": {"schema": IMAGE_SCHEMA},
    },
}
RETOUCH_OK = {
    "description": "The retouched image in the input's format (BMP/TIFF/GIF/PPM in -> PNG out; 16-bit PNG in -> "
                   f"16-bit PNG out; a {WARNING_HEADER} header when the reply holds fewer bits), or JSON.",
    "model": RetouchJSON,
    "content": {media: {"schema": IMAGE_SCHEMA} for media in OUTPUT_FORMATS.values()},
}
