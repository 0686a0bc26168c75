"""Memory-aware admission: how many pixels of images, and how many bytes of request bodies, the server holds.

The batch queue counts images, but what an image costs in memory is its pixel count: a request is decoded
to float32 (3, H, W), its retouch is pasted back at full resolution and encoded again, about 57 bytes per
pixel at the peak (`benchmarks/serve_memory.py`). A 1 MB JPEG of one colour can announce 60 MP, so a queue
of 64 such uploads would need gigabytes each. The pixel budget admits a request only while the pixels of all
requests being decoded, queued, run or encoded stay within it, and refuses the rest at once (503 +
Retry-After, as a full queue does), before anything is decoded.

Bodies come first: each is capped at `max_body_bytes`, but a hundred slow uploads each hold what they have
sent until the request ends. The body budget counts those bytes as they arrive (not a declared
Content-Length: headers alone must not lock everyone out) and refuses the upload whose next chunk would take
them over it, with the same 503.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from langbrt.io import DEFAULT_MAX_PIXELS

INFLIGHT_PER_MAX_PIXELS = 2  # `langbrt-serve`'s default budget: two images of the largest size allowed
DEFAULT_MAX_INFLIGHT_PIXELS = INFLIGHT_PER_MAX_PIXELS * DEFAULT_MAX_PIXELS
"""Pixels of images held at once (decoded, queued, run, encoded): ~57 bytes each at the peak, ~7.3 GB."""

DEFAULT_MAX_BODY_BYTES = 25 * 1024 * 1024  # one request's body, before 413
INFLIGHT_PER_MAX_BODY = 16  # `langbrt-serve`'s default body budget, in largest bodies
DEFAULT_MAX_INFLIGHT_BODY_BYTES = INFLIGHT_PER_MAX_BODY * DEFAULT_MAX_BODY_BYTES
"""Bytes of request bodies held at once: 420 MB, a hundred 4 MB phone JPEGs being uploaded together."""


class BudgetExceeded(RuntimeError):
    """Admitting the request would take what is in flight over the budget: retry shortly."""


@dataclass(frozen=True)
class BudgetUnit:
    """How a budget's messages name what it counts: '<in flight> <what>' ("3.0 MP of images in flight")."""

    unit: str
    scale: float
    what: str
    small: str | None = None  # the base unit's name, used below a tenth of `unit` ("100 bytes", not "0.0 MiB")

    def format(self, amount: int) -> str:
        if self.small is not None and amount < self.scale / 10:
            return f"{amount:,} {self.small}"
        return f"{amount / self.scale:.1f} {self.unit}"


PIXELS = BudgetUnit("MP", 1e6, "of images in flight")
BODY_BYTES = BudgetUnit("MiB", 2**20, "of request bodies being held", small="bytes")  # as --max-*-body-mb count


class Reservation:
    """One request's share of a budget, which may grow (a body, chunk by chunk as it arrives)."""

    def __init__(self, budget: InFlightBudget) -> None:
        self._budget = budget
        self.amount = 0

    def grow(self, amount: int) -> None:
        """Add `amount` to this request's share; raises BudgetExceeded, adding nothing, when it does not fit."""
        budget = self._budget
        if budget.in_flight + amount > budget.limit:
            u = budget.unit
            raise BudgetExceeded(f"{u.format(budget.in_flight)} {u.what}, this request adds {u.format(amount)} "
                                 f"(limit {budget.limit / u.scale:g} {u.unit})")
        budget.in_flight += amount
        self.amount += amount


class InFlightBudget:
    """A counter of what the requests in flight hold, used from the event loop thread only (no lock needed).

    Any single request up to `limit` is admitted when nothing else is in flight, so the server's per-request
    limit (`max_pixels`, `max_body_bytes`) must not exceed it.
    """

    def __init__(self, limit: int, unit: BudgetUnit) -> None:
        if limit < 1:
            raise ValueError(f"budget must be at least 1, got {limit}")
        self.limit = limit
        self.unit = unit
        self.in_flight = 0

    @contextmanager
    def reserve(self) -> Iterator[Reservation]:
        """An empty reservation for the block, grown as the request learns its size; all of it is given back
        when the block ends, however it ends."""
        reservation = Reservation(self)
        try:
            yield reservation
        finally:
            self.in_flight -= reservation.amount

    @contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        """Count `amount` as in flight for the block; raises BudgetExceeded when it does not fit."""
        with self.reserve() as reservation:
            reservation.grow(amount)
            yield
