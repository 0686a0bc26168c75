"""Pillow's decompression-bomb guard, raised to a caller's larger pixel limit while one of our reads runs.

Why: Pillow refuses an image over twice `Image.MAX_IMAGE_PIXELS` (179 MP) inside `Image.open`, before
`langbrt.io` compares the header's W*H with its own `max_pixels`. A caller who allowed more (`langbrt-infer
--max-pixels 300000000`, `load_image(..., max_pixels=...)`) was still refused, in a message naming Pillow's limit.
While such a read runs, Pillow's limit is ours: our check on the header decides, before anything is decoded,
and Pillow's later checks (a TIFF page, a GIF frame) still hold at our limit. Nothing is lifted further than
the largest limit a read in progress asked for, and never for a caller who keeps the default.

`Image.MAX_IMAGE_PIXELS` is one global of the process: reads on several threads share one raise, counted
under a lock, and the value Pillow had is put back when the last of them ends.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from PIL import Image


class _Raises:
    """The reads in progress that raised Pillow's limit, and the value it had before the first of them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.limits: list[int] = []
        self.before: int | None = None


_RAISES = _Raises()


@contextlib.contextmanager
def pillow_limit_at_least(max_pixels: int) -> Iterator[None]:
    """Run the block with `Image.MAX_IMAGE_PIXELS` at least `max_pixels` (unchanged if already, or if None: off)."""
    with _RAISES.lock:
        pillows = _RAISES.before if _RAISES.limits else Image.MAX_IMAGE_PIXELS
        raised = pillows is not None and max_pixels > pillows
        if raised:
            _RAISES.before = pillows
            _RAISES.limits.append(max_pixels)
            Image.MAX_IMAGE_PIXELS = max(_RAISES.limits)
    try:
        yield
    finally:
        if raised:
            with _RAISES.lock:
                _RAISES.limits.remove(max_pixels)
                Image.MAX_IMAGE_PIXELS = max(_RAISES.limits) if _RAISES.limits else _RAISES.before
