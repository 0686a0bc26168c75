"""Cold-L2 ("rotating inputs") GPU timing: how many copies of one call's inputs a CUDA graph cycles through so
that no call finds its inputs in the card's L2 cache, and the order in which the calls use them.

Why: a graph of back-to-back calls on the same tensors reads, from its second call on, inputs the previous
call left in L2 (50 MB on the H100: ~30 paper-shape images of 1.7 MB in fp16), so at small batches the GB/s
reported against the HBM roofline are inflated. Flushing L2 with a kernel between the calls would add that
kernel's time to each; the standard way instead gives the graph k independent input sets, call i reading
set i % k, the k sets together touching at least L2_MULTIPLE times the L2 size: what call i reads has been
evicted by the calls since i - k. Only the per-call inputs rotate: the weights (and the sigmoid's alpha) are
shared by every set; they are small and sit in L2, as they do in the model.

Memory: the k sets of a call add under L2_MULTIPLE x L2 + one call's bytes (k is the fewest sets reaching
that), ~210 MB on a 50 MB L2; MAX_INPUT_SETS bounds the graph's length (k calls at least) for tiny calls.
Pure logic, tested on CPU; the GPU timing lives with each benchmark (bench_attention, kernel_sweep).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

DEFAULT_L2_BYTES = 50 * 2**20  # H100 / H200, for a torch whose device properties lack L2_cache_size
L2_MULTIPLE = 4  # the input sets together touch at least this many times the L2 size
MAX_INPUT_SETS = 256  # paper shape, batch 1 fp16 on a 50 MB L2: 125 sets

T = TypeVar("T")


def l2_cache_bytes(properties: object) -> int:
    """The L2 size `torch.cuda.get_device_properties(...)` reports, or DEFAULT_L2_BYTES where it has none."""
    return getattr(properties, "L2_cache_size", 0) or DEFAULT_L2_BYTES


def input_sets(bytes_per_call: int, l2_bytes: int, multiple: int = L2_MULTIPLE,
               max_sets: int = MAX_INPUT_SETS) -> int:
    """The fewest input sets whose calls touch at least `multiple` x `l2_bytes` (1 where one call already
    does), at most `max_sets`."""
    assert bytes_per_call > 0 and l2_bytes > 0 and multiple >= 1 and max_sets >= 1, (bytes_per_call, l2_bytes,
                                                                                     multiple, max_sets)
    return min(max_sets, -(-multiple * l2_bytes // bytes_per_call))


def graph_calls(calls_per_graph: int, sets: int) -> int:
    """Calls in a cold graph: at least `calls_per_graph`, and whole cycles of the sets, so that each set is
    read as often and a replay's first call (set 0) follows the previous replay's last (set k - 1)."""
    assert calls_per_graph >= 1 and sets >= 1, (calls_per_graph, sets)
    return sets * -(-calls_per_graph // sets)


def rotation(items: Sequence[T], calls: int) -> list[T]:
    """What each of `calls` calls uses: call i gets items[i % len(items)]."""
    return [items[i % len(items)] for i in range(calls)]


class Rotating:
    """fn as a callable of no arguments whose successive calls cycle through `arg_sets` (call i: set
    i % k), for timers that take such a callable (triton.testing.do_bench_cudagraph). The count runs on
    across the timer's warm-up and capture, so a graph whose length is not a whole number of cycles has one
    place per replay where a set comes round early: one call in the graph's length."""

    def __init__(self, fn: Callable[..., Any], arg_sets: Sequence[tuple]) -> None:
        assert arg_sets, "at least one input set"
        self.fn, self.arg_sets, self.calls = fn, arg_sets, 0

    def __call__(self) -> Any:
        args = self.arg_sets[self.calls % len(self.arg_sets)]
        self.calls += 1
        return self.fn(*args)
