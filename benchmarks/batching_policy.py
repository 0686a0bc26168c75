"""How `--max-delay-ms` trades latency for batching, on the real `DynamicBatcher` with a simulated model.

    python benchmarks/batching_policy.py [--fixed-ms 4] [--per-image-ms 0.5] [--seconds 2]

The model is a sleep of `--fixed-ms` + `--per-image-ms` per image (a GPU step: a fixed launch-bound part
plus a small per-image part); closed-loop clients (each sends its next request when the previous one
returns) drive the batcher for `--seconds` per row. Prints requests/s and p50 / p99 latency for each
client count and delay. A model, not a measurement of a server: rerun `benchmarks/load.py` on a GPU
before changing langbrt-serve's default.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import torch

from langbrt.runtime.batching import DynamicBatcher


async def drive(fixed_s: float, per_image_s: float, delay_ms: float, clients: int, seconds: float,
                max_batch: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of `clients` closed-loop clients for `seconds`."""

    def model(images: list[torch.Tensor], prompts: object) -> list[None]:
        time.sleep(fixed_s + per_image_s * len(images))
        return [None] * len(images)

    batcher: DynamicBatcher[None] = DynamicBatcher(model, max_batch=max_batch, max_delay_ms=delay_ms)
    batcher.start()
    image = torch.zeros(3, 4, 4)  # (3, H, W): the simulated model never reads it
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            await batcher.submit(image)
            latencies.append((time.perf_counter() - started) * 1e3)

    await asyncio.gather(*(client() for _ in range(clients)))
    await batcher.aclose()
    latencies.sort()
    return len(latencies) / seconds, latencies[len(latencies) // 2], latencies[int(0.99 * (len(latencies) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixed-ms", type=float, default=4.0)
    parser.add_argument("--per-image-ms", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--delays-ms", type=float, nargs="+", default=[0.0, 2.0, 5.0])
    args = parser.parse_args(argv)
    print(f"{'clients':>7} {'delay ms':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}")
    for clients in args.clients:
        for delay in args.delays_ms:
            rps, p50, p99 = asyncio.run(drive(args.fixed_ms / 1e3, args.per_image_ms / 1e3, delay, clients,
                                              args.seconds, args.max_batch))
            print(f"{clients:>7} {delay:>8g} {rps:>7.0f} {p50:>7.1f} {p99:>7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
