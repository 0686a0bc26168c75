"""The one interface every text backend implements.

LangBRT's text encoder is frozen (paper section 3.2): prompts only ever become fixed embeddings that
condition the restoration network. So a backend needs nothing but `encode`, plus a stable `name` and `dim`
that checkpoints record, so that a checkpoint trained on one embedding space is never fed embeddings from
another.
"""

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class TextEncoder(Protocol):
    """A frozen text encoder.

    Contract:
      - `name`: stable id written into checkpoints and exported engines (e.g. "minilm:all-MiniLM-L6-v2",
        "open_clip:ViT-B-16"); two encoders with the same name produce the same embeddings.
      - `dim`: embedding width D.
      - `encode(texts)`: (N, D) float32 on CPU, rows L2-normalised, computed without autograd.
    Construction is cheap; weights load on the first `encode` (or an explicit `load()`).
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: list[str]) -> torch.Tensor: ...


def check_texts(texts: list[str]) -> None:
    """Reject a bare string or an empty list early: encoders batch over a list, and `encode("acne")` would
    otherwise silently embed one character at a time."""
    if isinstance(texts, str) or not isinstance(texts, list | tuple):
        raise TypeError(f"encode() takes a list of strings, got {type(texts).__name__}")
    if not texts:
        raise ValueError("encode() got an empty list of texts")
