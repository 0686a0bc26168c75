"""Memory-aware admission: how many pixels of images the server holds at once.

The batch queue counts images, but what an image costs in memory is its pixel count: a request is decoded
to float32 (3, H, W), its retouch is pasted back at full resolution and encoded again, about 57 bytes per
pixel at the peak (`benchmarks/serve_memory.py`). A 1 MB JPEG of one colour can announce 60 MP, so a queue
of 64 such uploads would need gigabytes each. `PixelBudget` admits a request only while the pixels of all
requests being decoded, queued, run or encoded stay within a budget, and refuses the rest at once (503 +
Retry-After, as a full queue does), before anything is decoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from langbrt.io import DEFAULT_MAX_PIXELS

INFLIGHT_PER_MAX_PIXELS = 2  # `langbrt-serve`'s default budget: two images of the largest size allowed
DEFAULT_MAX_INFLIGHT_PIXELS = INFLIGHT_PER_MAX_PIXELS * DEFAULT_MAX_PIXELS
"""Pixels of images held at once (decoded, queued, run, encoded): ~57 bytes each at the peak, ~7.3 GB."""


class PixelBudgetExceeded(RuntimeError):
    """Admitting the request would take the pixels in flight over the budget: retry shortly."""


class PixelBudget:
    """A counter of in-flight pixels, used from the event loop thread only (no lock needed).

    Any single image up to `limit` pixels is admitted when nothing else is in flight, so the server's
    per-image limit (`max_pixels`) must not exceed it.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"pixel budget must be at least 1, got {limit}")
        self.limit = limit
        self.in_flight = 0

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Count `pixels` as in flight for the block; raises PixelBudgetExceeded when they do not fit."""
        if self.in_flight + pixels > self.limit:
            raise PixelBudgetExceeded(
                f"{self.in_flight / 1e6:.1f} MP of images in flight, this one adds {pixels / 1e6:.1f} MP "
                f"(limit {self.limit / 1e6:g} MP)"
            )
        self.in_flight += pixels
        try:
            yield
        finally:
            self.in_flight -= pixels
