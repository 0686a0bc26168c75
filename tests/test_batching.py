"""The dynamic batcher: grouping within the delay window, back-pressure, timeouts, draining on close."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time

import pytest
import torch

from langbrt.errors import LangBRTInputError
from langbrt.runtime.batching import (
    BatcherClosedError,
    BatchTimeoutError,
    DynamicBatcher,
    QueueFullError,
)


class FakeRetoucher:
    """Records the size of every call and the thread it ran on; optionally sleeps to simulate a model."""

    def __init__(self, sleep_s: float = 0.0, fail_on: str | None = None) -> None:
        self.sleep_s = sleep_s
        self.fail_on = fail_on
        self.batch_sizes: list[int] = []
        self.prompt_args: list[list[list[str]] | None] = []
        self.threads: set[int] = set()

    def retouch(self, images: list[torch.Tensor], prompts: list[list[str]] | None = None) -> list[float]:
        self.threads.add(threading.get_ident())
        self.batch_sizes.append(len(images))
        self.prompt_args.append(prompts)
        time.sleep(self.sleep_s)
        if self.fail_on is not None and prompts and any(self.fail_on in p for p in prompts):
            raise LangBRTInputError(f"unknown prompt {self.fail_on!r}")
        return [float(img.mean()) for img in images]


def _image(value: float = 0.5) -> torch.Tensor:
    return torch.full((3, 4, 4), value)


async def _until_the_model_runs(fake: FakeRetoucher) -> None:
    """Poll instead of sleeping a guessed time: on a loaded machine the worker may take a while to start."""
    while not fake.batch_sizes:
        await asyncio.sleep(0.005)


async def _with_batcher(fake: FakeRetoucher, coro_fn, **kwargs):  # type: ignore[no-untyped-def]
    batcher: DynamicBatcher[float] = DynamicBatcher(fake.retouch, **kwargs)
    batcher.start()
    try:
        return await coro_fn(batcher)
    finally:
        await batcher.aclose(timeout=5)


def test_requests_within_the_delay_window_share_one_batch() -> None:
    fake = FakeRetoucher()

    async def run(batcher: DynamicBatcher[float]) -> list[float]:
        return await asyncio.gather(*(batcher.submit(_image(i / 10)) for i in range(5)))

    results = asyncio.run(_with_batcher(fake, run, max_batch=8, max_delay_ms=50))
    assert results == pytest.approx([i / 10 for i in range(5)])  # each caller gets its own result back
    assert fake.batch_sizes == [5]


def test_batches_are_capped_at_max_batch() -> None:
    fake = FakeRetoucher()

    async def run(batcher: DynamicBatcher[float]) -> list[float]:
        return await asyncio.gather(*(batcher.submit(_image()) for _ in range(10)))

    asyncio.run(_with_batcher(fake, run, max_batch=4, max_delay_ms=50))
    assert fake.batch_sizes == [4, 4, 2]


def test_requests_further_apart_than_the_window_run_separately() -> None:
    fake = FakeRetoucher()

    async def run(batcher: DynamicBatcher[float]) -> None:
        await batcher.submit(_image())
        await asyncio.sleep(0.05)
        await batcher.submit(_image())

    asyncio.run(_with_batcher(fake, run, max_batch=8, max_delay_ms=1))
    assert fake.batch_sizes == [1, 1]


def test_all_calls_run_on_one_worker_thread() -> None:
    fake = FakeRetoucher()

    async def run(batcher: DynamicBatcher[float]) -> None:
        for _ in range(3):
            await asyncio.gather(*(batcher.submit(_image()) for _ in range(3)))

    asyncio.run(_with_batcher(fake, run, max_batch=2, max_delay_ms=1))
    assert len(fake.threads) == 1 and threading.get_ident() not in fake.threads


def test_a_full_queue_refuses_at_once() -> None:
    fake = FakeRetoucher(sleep_s=1.0)  # the worker must still be busy at the third submit, on a loaded box too

    async def run(batcher: DynamicBatcher[float]) -> list[object]:
        first = asyncio.ensure_future(batcher.submit(_image()))
        await _until_the_model_runs(fake)  # the worker is now busy with `first`
        queued = [asyncio.ensure_future(batcher.submit(_image())) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):
            await batcher.submit(_image())
        return await asyncio.gather(first, *queued)

    results = asyncio.run(_with_batcher(fake, run, max_batch=1, max_delay_ms=0, queue_size=2))
    assert len(results) == 3  # the accepted ones still complete


def test_a_request_waiting_longer_than_the_timeout_fails_and_is_skipped() -> None:
    # 1.5 s of model time against a 0.2 s timeout: with 0.4 s a loaded CI box (the event loop late to see the
    # model start) let the second request reach the model before its timeout fired.
    fake = FakeRetoucher(sleep_s=1.5)

    async def run(batcher: DynamicBatcher[float]) -> None:
        first = asyncio.ensure_future(batcher.submit(_image()))
        await _until_the_model_runs(fake)
        with pytest.raises(BatchTimeoutError):
            await batcher.submit(_image())  # waits behind `first` for longer than 0.2 s
        assert batcher.depth == 0  # taken out of the queue at once: its image is freed, not held until skipped
        with pytest.raises(BatchTimeoutError):
            await first  # the running request times out too: 1.5 s of model time > 0.2 s

    asyncio.run(_with_batcher(fake, run, max_batch=1, max_delay_ms=0, timeout_s=0.2))
    assert fake.batch_sizes == [1]  # the abandoned item never reached the model


def test_close_drains_queued_requests_and_refuses_new_ones() -> None:
    fake = FakeRetoucher(sleep_s=0.05)

    async def run() -> list[float]:
        batcher: DynamicBatcher[float] = DynamicBatcher(fake.retouch, max_batch=1, max_delay_ms=0)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(_image())) for _ in range(4)]
        await asyncio.sleep(0)
        drained = await batcher.aclose(timeout=5)
        assert drained
        with pytest.raises(BatcherClosedError):
            await batcher.submit(_image())
        return await asyncio.gather(*pending)

    assert len(asyncio.run(run())) == 4
    assert fake.batch_sizes == [1, 1, 1, 1]


def test_a_failing_request_does_not_fail_its_batch_neighbours() -> None:
    fake = FakeRetoucher(fail_on="bad prompt")

    async def run(batcher: DynamicBatcher[float]) -> list[object]:
        return await asyncio.gather(
            batcher.submit(_image(0.1), ["acne"]),
            batcher.submit(_image(0.2), ["bad prompt"]),
            batcher.submit(_image(0.3), None),
            return_exceptions=True,
        )

    ok1, bad, ok3 = asyncio.run(_with_batcher(fake, run, max_batch=8, max_delay_ms=50, default_prompts=["wrinkles"]))
    assert ok1 == pytest.approx(0.1) and ok3 == pytest.approx(0.3)
    assert isinstance(bad, LangBRTInputError)
    assert fake.prompt_args[0] == [["acne"], ["bad prompt"], ["wrinkles"]]  # default filled in a mixed batch


@pytest.mark.parametrize("max_batch", [1, 2])
def test_a_batch_that_fails_after_its_callers_left_logs_nothing_and_reruns_no_one(
        caplog: pytest.LogCaptureFixture, max_batch: int) -> None:
    """Both callers time out while the model runs the first batch, which then fails. Nobody is left to tell:
    no per-item rerun, the second image (queued with max_batch 1) never runs, and no "Future exception was
    never retrieved" traceback reaches the log."""
    fake = FakeRetoucher(sleep_s=1.0, fail_on="acne")  # well past the 0.1 s timeout, on a loaded box too

    async def run(batcher: DynamicBatcher[float]) -> None:
        results = await asyncio.gather(batcher.submit(_image(), ["acne"]), batcher.submit(_image(), ["acne"]),
                                       return_exceptions=True)
        assert all(isinstance(r, BatchTimeoutError) for r in results), results
        # `_with_batcher` then waits in aclose for the worker to finish the batch, with the loop still running

    caplog.set_level(logging.ERROR)
    asyncio.run(_with_batcher(fake, run, max_batch=max_batch, max_delay_ms=50, timeout_s=0.1))
    gc.collect()  # an unretrieved future exception is logged when the future is collected
    assert fake.batch_sizes == [max_batch]
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def test_a_batch_without_any_prompts_passes_none() -> None:
    fake = FakeRetoucher()

    async def run(batcher: DynamicBatcher[float]) -> None:
        await asyncio.gather(batcher.submit(_image()), batcher.submit(_image()))

    asyncio.run(_with_batcher(fake, run, max_batch=8, max_delay_ms=50))
    assert fake.prompt_args == [None]


def test_a_failing_request_splits_its_batch_in_halves_and_its_neighbours_stay_batched() -> None:
    """One bad request among eight: the others still run in batches (4, 2, 1 beside it), not one by one, so a
    client whose request is refused cannot turn everyone's batches into batch-1 calls."""
    fake = FakeRetoucher(fail_on="bad prompt")

    async def run(batcher: DynamicBatcher[float]) -> list[object]:
        prompts = [["acne"]] * 8
        prompts[5] = ["bad prompt"]
        return await asyncio.gather(*(batcher.submit(_image(i / 10), p) for i, p in enumerate(prompts)),
                                    return_exceptions=True)

    results = asyncio.run(_with_batcher(fake, run, max_batch=8, max_delay_ms=200))
    assert isinstance(results[5], LangBRTInputError)
    assert [r for i, r in enumerate(results) if i != 5] == pytest.approx([i / 10 for i in range(8) if i != 5])
    assert fake.batch_sizes == [8, 4, 4, 2, 1, 1, 2]  # all, [0:4] ok, [4:8] fails, [4:6] fails, 4, 5 (bad), [6:8]
