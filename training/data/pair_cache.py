"""Decoded pairs at the model's size, kept in memory so a run decodes each photo once, not once per epoch.

Why: fine-tuning on a few pairs goes over them every few steps (30 pairs at batch 4: a new epoch every 8
steps), and decoding a 12-MP JPEG and resizing it to 256² takes about as long as the training step that
uses it (measured 2026-11-27, the bundled model at batch 4 on 30 photos up to 4000x3000, one thread: 0.75 CPU
seconds of decoding and resizing a step beside the model's 1.1). The cache keeps the `fit_square` result,
0.8 MB per image at 256², so the model trains on the very tensors a fresh decode gives.

A file that changes during the run (a user replacing a bad target between epochs) is read again: each entry
remembers both files' size, modification time and inode, checked by one `os.stat` per file, so the run
sees what the uncached reader saw. A file that can no longer be stat'ed is not served from the cache either:
the reader then fails on it as it would have, and the pair is skipped as before.

Bounded by bytes: a set whose every pair fits is cached whole, a larger one not at all (`pair_cache_for`).
A set too large to cache is visited in a new random order each epoch, so a part of it would be hit in
proportion to its size (1 GiB of FFHQR's 56,000 pairs at 512²: 0.3 % of the samples) while it held that
memory in every process and every DataLoader worker. DataLoader workers each get the cache as the training
process holds it (fork copies it), and what a worker adds is lost with it at the epoch's end; filling it in
the training process before the first epoch (the pair alignment check does, `PairedImageDataset.read_full`)
is what makes workers find it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from langbrt.training.data.pair_discovery import ImagePair

DEFAULT_CACHE_BYTES = 1 << 30
"""Memory the cache of one dataset may take: 1 GiB holds 680 pairs at 256² (the bundled model) or 170 at 512²
(the paper's), more than the few pairs a fine-tune trains on; each torchrun process holds its own."""

FileStamp = tuple[int, int, int]  # (size, modification time in ns, inode): a file replaced or rewritten differs


def file_stamp(path: os.PathLike[str] | str) -> FileStamp | None:
    """What identifies the current content of `path` without reading it; None if it cannot be stat'ed."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns, info.st_ino


def pair_stamp(pair: ImagePair) -> tuple[FileStamp, FileStamp] | None:
    """Both files' stamps, or None if either cannot be stat'ed. Taken before decoding, so a file rewritten
    while it is being read is read again next time."""
    source, target = file_stamp(pair.source), file_stamp(pair.target)
    return None if source is None or target is None else (source, target)


@dataclass(frozen=True)
class _Entry:
    stamp: tuple[FileStamp, FileStamp]
    source: torch.Tensor  # (3, S, S)
    target: torch.Tensor  # (3, S, S)


class PairCache:
    """Model-size (source, target) tensors by pair, valid while both files keep their stamps."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: dict[ImagePair, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, pair: ImagePair) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Copies of the cached tensors of `pair` (a caller may change them in place), or None when it is not
        cached or a file of it changed since (the stale entry is dropped)."""
        entry = self._entries.get(pair)
        if entry is None:
            return None
        if pair_stamp(pair) != entry.stamp:
            self._drop(pair)
            return None
        return entry.source.clone(), entry.target.clone()

    def put(self, pair: ImagePair, stamp: tuple[FileStamp, FileStamp] | None, source: torch.Tensor,
            target: torch.Tensor) -> None:
        """Keep copies of `source` and `target`, decoded from `pair`'s files as they were at `stamp`, if they fit
        (nothing is kept without a stamp)."""
        if stamp is None:
            return
        self._drop(pair)
        size = _nbytes(source) + _nbytes(target)
        if self.bytes + size > self.max_bytes:
            return
        self._entries[pair] = _Entry(stamp, source.clone(), target.clone())
        self.bytes += size

    def _drop(self, pair: ImagePair) -> None:
        entry = self._entries.pop(pair, None)
        if entry is not None:
            self.bytes -= _nbytes(entry.source) + _nbytes(entry.target)


def pair_cache_for(count: int, image_size: int, max_bytes: int = DEFAULT_CACHE_BYTES) -> PairCache:
    """The cache for `count` pairs at `image_size`: one that holds them all, or none (a `PairCache` of 0 bytes)
    when they need more than `max_bytes`."""
    pair_bytes = 2 * 3 * image_size * image_size * torch.finfo(torch.float32).bits // 8  # (3, S, S) float32 twice
    return PairCache(max_bytes if count * pair_bytes <= max_bytes else 0)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()
