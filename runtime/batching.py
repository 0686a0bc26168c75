"""Dynamic batching between many asyncio requests and one synchronous, non-thread-safe model.

The `Retoucher` must only ever be called from one thread, and a GPU is most efficient when it sees several
images at once. So every request puts its image on one bounded queue and awaits a future; one worker thread
takes the first waiting item, keeps collecting for at most `max_delay_ms` (or until `max_batch` items), and
runs them as one `retouch` call. Any image size may share a batch: the Retoucher letterboxes each image.

Back-pressure is explicit instead of unbounded latency: a full queue refuses at once (`QueueFullError`, the
server's 503 + Retry-After), and a request that waits longer than `timeout_s` gives up (`BatchTimeoutError`,
the server's 504); its item is skipped if the worker has not reached it yet. `close()` stops new work and
lets the worker drain what is already queued, so a graceful shutdown answers every accepted request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch

log = logging.getLogger(__name__)

R = TypeVar("R")
RetouchFn = Callable[[list[torch.Tensor], "list[list[str]] | None"], Sequence[Any]]
"""Signature of `Retoucher.retouch`: images (3, H, W) and per-image prompt lists (None: the model's own)."""


class QueueFullError(RuntimeError):
    """The queue holds `queue_size` waiting images: the caller should retry shortly."""


class BatchTimeoutError(TimeoutError):
    """The request waited (queued + running) longer than the batcher's `timeout_s`."""


class BatcherClosedError(RuntimeError):
    """The batcher is shutting down (or not started) and accepts no new work."""


@dataclass(eq=False)
class _Item:
    """One queued request: its input, the future its coroutine awaits, and whether it was abandoned."""

    image: torch.Tensor  # (3, H, W)
    prompts: list[str] | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.monotonic)
    abandoned: bool = False  # set by a timed-out caller: the worker skips it


@dataclass(frozen=True)
class BatchStats:
    """What the worker reports after each model call (for metrics)."""

    size: int
    run_s: float  # seconds inside the model call
    wait_s: float  # seconds the oldest item of the batch waited in the queue


class DynamicBatcher(Generic[R]):
    """Groups concurrent `submit` calls into batched calls of `fn` on a single worker thread.

    `default_prompts` fills in for requests without prompts when a batch mixes them with requests that
    have their own (the model call takes one prompt list per image, or None for all).
    """

    def __init__(
        self,
        fn: RetouchFn,
        *,
        max_batch: int = 8,
        max_delay_ms: float = 5.0,
        queue_size: int = 64,
        timeout_s: float = 30.0,
        default_prompts: Sequence[str] = (),
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        assert max_batch >= 1, f"max_batch must be >= 1, got {max_batch}"
        assert queue_size >= 1, f"queue_size must be >= 1, got {queue_size}"
        assert max_delay_ms >= 0 and timeout_s > 0, (max_delay_ms, timeout_s)
        self._fn = fn
        self.max_batch = max_batch
        self.max_delay_s = max_delay_ms / 1000.0
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self._default_prompts = list(default_prompts)
        self._on_batch = on_batch
        self._items: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the worker thread; call once, before the first `submit`."""
        assert self._thread is None, "batcher already started"
        self._thread = threading.Thread(target=self._worker, name="langbrt-batcher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Refuse new work; the worker finishes everything already queued, then exits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to drain and exit; True when it did within `timeout`."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    async def aclose(self, timeout: float | None = None) -> bool:
        """`close()` then wait for the drain without blocking the event loop."""
        self.close()
        return await asyncio.to_thread(self.join, timeout)

    @property
    def depth(self) -> int:
        """Images waiting in the queue (not counting the batch being run)."""
        return len(self._items)

    # ------------------------------------------------------------------------------------ requests

    async def submit(self, image: torch.Tensor, prompts: list[str] | None = None) -> R:
        """Queue one image (3, H, W) and await its result; raises QueueFull/BatchTimeout/BatcherClosed."""
        loop = asyncio.get_running_loop()
        item = _Item(image=image, prompts=prompts, loop=loop, future=loop.create_future())
        with self._cond:
            if self._closed or self._thread is None:
                raise BatcherClosedError("the server is shutting down")
            if len(self._items) >= self.queue_size:
                raise QueueFullError(f"{len(self._items)} images are waiting (queue size {self.queue_size})")
            self._items.append(item)
            self._cond.notify()
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), self.timeout_s)
        except asyncio.TimeoutError as err:  # an alias of TimeoutError only from 3.11
            self._abandon(item)
            raise BatchTimeoutError(f"no result within {self.timeout_s:g} s") from err
        except asyncio.CancelledError:
            self._abandon(item)  # the client went away: no point running its image
            raise

    def _abandon(self, item: _Item) -> None:
        """Take a caller's item out of the queue, so its image (hundreds of MB for a large photo) is freed now,
        not when the worker would have reached it; one the worker already took runs and is dropped after.

        Its future is cancelled (we are on its loop): nobody awaits it any more, and a result or error set on
        it later would make asyncio log "Future exception was never retrieved" with a traceback.
        """
        with self._cond:
            item.abandoned = True
            with contextlib.suppress(ValueError):
                self._items.remove(item)
        item.future.cancel()

    # ------------------------------------------------------------------------------------ worker

    def _worker(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _next_batch(self) -> list[_Item] | None:
        """Block for the first item, then gather up to `max_batch` until its deadline; None: closed and empty."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if not self._items:
                return None
            deadline = self._items[0].enqueued + self.max_delay_s
            while len(self._items) < self.max_batch and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Item] = []
            while self._items and len(batch) < self.max_batch:
                item = self._items.popleft()
                if not item.abandoned:
                    batch.append(item)
            return batch

    def _run(self, batch: list[_Item]) -> None:
        started = time.monotonic()
        try:
            results = self._call(batch)
        except Exception as err:  # noqa: BLE001 - delivered to the waiting requests, not swallowed
            if len(batch) == 1:
                self._deliver(batch[0], error=err)
            else:
                # One bad request (say, a prompt the model cannot encode) must not fail its neighbours: rerun
                # the two halves, splitting again where one fails, so only the culprit gets the error and the
                # rest still run batched; callers gone meanwhile are skipped. Why halves, not each item alone:
                # a batch can fail for the prompts of its items together (an export's extra prompt slots are
                # shared by a call), and one client's refused request would otherwise turn every batch it
                # lands in into batch-1 calls for all the others (QA, 2026-11-26: 80 of 80 concurrent requests
                # ran alone beside one request with 5 new prompts for 4 slots).
                half = len(batch) // 2
                for part in (batch[:half], batch[half:]):
                    live = [item for item in part if not item.abandoned]
                    if live:
                        self._run(live)
            return
        stats = BatchStats(size=len(batch), run_s=time.monotonic() - started, wait_s=started - batch[0].enqueued)
        if self._on_batch is not None:
            try:
                self._on_batch(stats)
            except Exception:  # a metrics failure must never stall inference
                log.exception("on_batch callback failed")
        for item, result in zip(batch, results, strict=True):
            self._deliver(item, result=result)

    def _call(self, batch: list[_Item]) -> Sequence[Any]:
        images = [item.image for item in batch]
        prompts: list[list[str]] | None = None
        if any(item.prompts for item in batch):
            prompts = [item.prompts or list(self._default_prompts) for item in batch]
        results = self._fn(images, prompts)
        assert len(results) == len(batch), f"model returned {len(results)} results for {len(batch)} images"
        return results

    @staticmethod
    def _deliver(item: _Item, *, result: Any = None, error: BaseException | None = None) -> None:
        """Hand a result to the item's event loop; a timed-out or closed-loop caller is simply gone."""

        def settle() -> None:
            if item.future.done():
                return
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(result)

        with contextlib.suppress(RuntimeError):  # the loop was closed while the model ran
            item.loop.call_soon_threadsafe(settle)
