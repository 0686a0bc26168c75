"""CPU time LangBRT's own Python adds to one call of the fused TCA kernel, measured on any machine.

    python benchmarks/wrapper_overhead.py [--calls 5000]

A Python call of the kernel costs ~150 us of CPU on the H200 host whatever the batch (bench_attention.py's
"called" rows against its "+graph" rows), so eager callers are launch-bound. Part of that is Triton's
launcher, which needs a GPU to run; the rest is ours: the autograd Function, the argument checks and
contiguous copies, the launch constants, the MMA build scope. This script times our part alone by swapping
the Triton launch for a no-op (and pretending to be in the interpreter so CPU tensors pass the device
check), at the paper preset's latent shape, batch 1. It prints microseconds per call for each layer, for the
kernel and MMA path the environment selects (the folded kernel adds its weight-cache lookup).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
from bench_attention import Shape, make_inputs

from langbrt.kernels import tca_choices, tca_triton


class _NoLaunch:
    """Stands in for the autotuned kernel: `kernel[grid](...)` does nothing."""

    def __getitem__(self, grid: tuple[int, int]) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def time_per_call(fn: Callable[[], object], calls: int) -> float:
    """Median over 5 rounds of the mean wall time of `calls` calls, in microseconds."""
    for _ in range(min(calls, 200)):
        fn()
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return sorted(rounds)[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per timing round")
    args = parser.parse_args(argv)

    tca_triton._autotuned_kernel = lambda kernel, bucket: _NoLaunch()
    tca_choices.INTERPRETING = True
    shape = Shape.paper()
    x, map_features, params = make_inputs(shape, 1, torch.float32, device="cpu")
    call = (x, map_features, *params.tensors(), shape.heads, shape.window, shape.shift, False)
    layers = {
        "_launch (checks, constants, MMA scope)": lambda: tca_triton._launch(*call),
        "torch.ops.langbrt.tca_attention (custom-op dispatch + _launch)": lambda: tca_triton._tca_attention_op(*call),
        "public function (autograd Function + _launch)": lambda: tca_triton.windowed_sigmoid_cross_attention_triton(
            x, map_features, params, shape.heads, shape.window, shape.shift),
    }
    kernel = tca_choices.kernel_choice()
    print(f"kernel {kernel.value}, MMA path {tca_choices.mma_choice(kernel).value} "
          "(LANGBRT_TCA_KERNEL, LANGBRT_TCA_MMA)")
    with torch.no_grad():
        for name, fn in layers.items():
            print(f"{time_per_call(fn, args.calls):8.1f} us  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
