"""What the ONNX Runtime and TensorRT backends share: an exported artifact's metadata and its prompt table.

Prompts in the baked table are named per image by their index in it; prompts outside it are embedded here
with the text encoder the metadata names and fed through the artifact's extra-prompt slots.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from cachetools import LRUCache

from langbrt.artifact import LEARNED_PROMPTS_KEY, ArtifactMetadata
from langbrt.errors import LangBRTError, LangBRTInputError
from langbrt.text.prompt_bank import TRANSIENT_PROMPTS

_CACHE_LOCK = threading.Lock()  # every encoder's LRU, held for dict operations only (as `prompt_bank`'s)
_LISTED_PROMPTS = 6  # an error line names this many of an artifact's prompts, not a table of hundreds


@dataclass(frozen=True)
class PromptFeeds:
    """An artifact's prompt inputs for one batch (`langbrt.artifact`'s INPUT_* names) and where each image's
    prompts land among the K + E maps the graph returns."""

    prompt_index: np.ndarray  # (B, K) int32 rows into the baked table, padded with 0
    prompt_weights: np.ndarray  # (B, K) float32, 1 for an asked prompt, 0 for the padding
    extra_embeddings: np.ndarray  # (E, D) float32, zeros in unused slots
    extra_weights: np.ndarray  # (B, E) float32
    per_image: list[list[int]]  # image b's prompts, in its order, as map positions in [0, K + E)


class ExtraPromptEncoder:
    """Embeds prompts an exported artifact does not carry, with the encoder its metadata names.

    Shared by the ONNX Runtime and TensorRT backends: both feed the (E, D) `extra_embeddings` input.
    """

    def __init__(self, metadata: ArtifactMetadata, source: str, max_table_prompts: int | None = None) -> None:
        self.metadata = metadata
        self.source = source
        self.max_table_prompts = max_table_prompts  # per image: a TensorRT engine's profile bound; None: any
        self._encoder: Any = None
        self._cache: LRUCache[str, np.ndarray] = LRUCache(maxsize=TRANSIENT_PROMPTS)  # bounded: served prompts

    def table(self, prompts: list[list[str]]) -> PromptFeeds:
        """The prompt inputs for a batch, one list of normalised prompts per image (`PromptFeeds`)."""
        meta = self.metadata
        E, B = meta.extra_prompt_slots, len(prompts)
        row = {p: i for i, p in enumerate(meta.prompts)}
        extras = list(dict.fromkeys(p for image in prompts for p in image if p not in row))
        if extras and meta.extras.get(LEARNED_PROMPTS_KEY):  # more slots would not help: no encoder
            raise LangBRTInputError(
                f"prompt {extras[0]!r} is not in {self.source}'s table, and its model (trained with --ablation "
                f"no-prior) has no text encoder: it answers only the learned prompts the export baked; available: "
                f"{self._listing()}"
            )
        if len(extras) > E:
            raise LangBRTInputError(
                f"{_count(len(extras), 'prompt')} outside {self.source}'s table but it has "
                f"{_count(E, 'extra prompt slot')}; "
                f"use fewer new prompts per batch or export with more slots; available: {self._listing()}"
            )
        slot = {text: i for i, text in enumerate(extras)}
        baked = [list(dict.fromkeys(p for p in image if p in row)) for image in prompts]  # each image's, once
        K = max(1, *(len(texts) for texts in baked))  # at least one column: an all-extras batch pads it
        if self.max_table_prompts is not None and K > self.max_table_prompts:
            raise LangBRTInputError(f"{K} prompts from {self.source}'s table for one image, but the engine takes at "
                                    f"most {self.max_table_prompts} per image (its build profile); use fewer")
        index = np.zeros((B, K), dtype=np.int32)
        weights = np.zeros((B, K), dtype=np.float32)
        extra_weights = np.zeros((B, E), dtype=np.float32)
        per_image = []
        for b, (image, texts) in enumerate(zip(prompts, baked, strict=True)):
            column = {text: k for k, text in enumerate(texts)}
            index[b, : len(texts)] = [row[text] for text in texts]
            weights[b, : len(texts)] = 1.0
            extra_weights[b, [slot[p] for p in image if p in slot]] = 1.0
            per_image.append([column[p] if p in column else K + slot[p] for p in image])
        embeddings = np.zeros((E, meta.text_dim), dtype=np.float32)  # unused slots: zeros, weight 0
        if extras:
            embeddings[: len(extras)] = self._embed(extras)
        return PromptFeeds(index, weights, embeddings, extra_weights, per_image)

    def _embed(self, texts: list[str]) -> np.ndarray:
        with _CACHE_LOCK:  # cachetools' LRU is not thread-safe: `in` then `[]` raced another thread's eviction
            found = {t: self._cache[t] for t in texts if t in self._cache}  # before encoding can evict them
        missing = [t for t in texts if t not in found]
        if missing:
            if self._encoder is None:
                from langbrt.text import text_encoder_from_name

                try:
                    self._encoder = text_encoder_from_name(self.metadata.text_encoder)
                except LangBRTError:
                    raise LangBRTInputError(
                        f"prompt {missing[0]!r} is not in {self.source} and its text encoder "
                        f"({self.metadata.text_encoder}) is not available; available prompts: {self._listing()}"
                    ) from None
            rows = self._encoder.encode(missing).detach().float().cpu().numpy()  # (N, D)
            assert rows.shape == (len(missing), self.metadata.text_dim), (rows.shape, self.metadata.text_dim)
            encoded = dict(zip(missing, rows, strict=True))
            found.update(encoded)
            with _CACHE_LOCK:
                self._cache.update(encoded)
        return np.stack([found[t] for t in texts])  # (N, D)

    def _listing(self) -> str:
        """The table's prompts for an error line: the first few, then how many more."""
        shown = "; ".join(repr(p) for p in self.metadata.prompts[:_LISTED_PROMPTS]) or "(none)"
        more = len(self.metadata.prompts) - _LISTED_PROMPTS
        return f"{shown}; and {more} more" if more > 0 else shown


def _count(n: int, noun: str) -> str:
    """'1 prompt', '2 prompts', '0 extra prompt slots'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def predefined_from_metadata(meta: ArtifactMetadata) -> list[str]:
    """Table prompts whose `predefined_index` is >= 0, in pre-defined order (as `LangBRT.prompt_table` sets it)."""
    pairs = sorted((int(i), text) for text, i in zip(meta.prompts, meta.predefined_index, strict=True) if int(i) >= 0)
    return [text for _, text in pairs] or list(meta.prompts)


class ArtifactBackend:
    """Base of the backends that run an exported artifact: metadata, size, precision and prompt lists."""

    def __init__(self, metadata: ArtifactMetadata, device: str, source: str,
                 max_table_prompts: int | None = None) -> None:
        self.metadata = metadata
        self.device = device
        self.source = source  # the artifact's path, for messages
        self.image_size = metadata.image_size
        self.precision = metadata.precision
        self._extras = ExtraPromptEncoder(metadata, source, max_table_prompts)

    @property
    def prompts(self) -> list[str]:
        """Prompts the artifact answers without a text encoder: its baked table."""
        return list(self.metadata.prompts)

    @property
    def predefined_prompts(self) -> list[str]:
        return predefined_from_metadata(self.metadata)

    def prepare_prompts(self, prompts: Sequence[Sequence[str]]) -> None:
        self._extras.table([list(image_prompts) for image_prompts in prompts])  # checks slots, encodes, caches
