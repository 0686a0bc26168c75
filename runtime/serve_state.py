"""The server's model lifecycle: load in the background, warm up, batch requests, report readiness.

`create_app`'s lifespan starts `ServeState.load` and closes the batcher at shutdown; the routes ask
`ServeState.require_ready` for the batcher, which answers 503 while the model loads, after it failed to load,
and while the server drains.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import torch

from langbrt.errors import LangBRTError

from .batching import DynamicBatcher
from .serve_config import ServeConfig
from .serve_metrics import ServeMetrics
from .serve_request import ServeError

log = logging.getLogger("langbrt.serve")

_WARMUP_SIZE = 64  # the Retoucher letterboxes any size to the model's; a small dummy is enough to warm it


def warmup_batch_sizes(max_batch: int, device: str) -> list[int]:
    """The dummy batches a server runs before it is ready: 1 on CPU; on a GPU every power of two below
    `max_batch`, and `max_batch`.

    Why: on CUDA the fused attention autotunes its launch per power-of-two grid size
    (`tca_launch_configs.grid_bucket`: windows x batch) on the first call that reaches it, seconds of Triton builds
    and timing that would otherwise land on the first request of each batch size class the batcher forms
    (for the presets' latents, whose window counts are powers of two, these sizes reach every class exactly).
    On CPU nothing is tuned, and a large dummy batch would only delay readiness.
    """
    if not device.startswith("cuda"):
        return [1]
    sizes = [1 << k for k in range(max_batch.bit_length()) if 1 << k < max_batch]
    return sizes + [max_batch]


class RetoucherLike(Protocol):
    """The part of `langbrt.runtime.Retoucher` the server uses (tests pass fakes)."""

    prompts: list[str]
    device: str  # where the model runs: "cpu", "cuda", "cuda:1", ...

    def retouch(self, images: list[torch.Tensor], prompts: list[list[str]] | None = None) -> list[Any]: ...


class ServeState:
    """What the lifespan builds: the retoucher, its batcher, readiness; one per app."""

    def __init__(self, config: ServeConfig, metrics: ServeMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.retoucher: RetoucherLike | None = None
        self.batcher: DynamicBatcher[Any] | None = None
        self.ready = False
        self.draining = False  # set by `drain` when the server starts shutting down
        self.load_error: str | None = None
        self.cut_off = 0  # requests the server cancelled at shutdown, unanswered (`InternalErrorMiddleware`)

    async def load(self, loader: Callable[[], RetoucherLike], on_failure: Callable[[str], None] | None) -> None:
        """Load, warm up with dummy batches (`warmup_batch_sizes`), then start batching; /readyz turns 200 only
        after all three."""
        try:
            retoucher = await asyncio.to_thread(loader)
            dummy = torch.full((3, _WARMUP_SIZE, _WARMUP_SIZE), 0.5)
            for size in warmup_batch_sizes(self.config.max_batch, retoucher.device):
                await asyncio.to_thread(retoucher.retouch, [dummy] * size, None)
        except Exception as err:  # noqa: BLE001 - reported on /readyz and to the CLI, which exits
            self.load_error = str(err) if isinstance(err, LangBRTError) else f"{type(err).__name__}: {err}"
            log.error("model failed to load: %s", self.load_error, exc_info=not isinstance(err, LangBRTError))
            if on_failure is not None:
                on_failure(self.load_error)
            return
        cfg = self.config
        self.retoucher = retoucher
        self.batcher = DynamicBatcher(
            retoucher.retouch, max_batch=cfg.max_batch, max_delay_ms=cfg.max_delay_ms,
            queue_size=cfg.queue_size, timeout_s=cfg.timeout_s,
            default_prompts=predefined_prompts(retoucher), on_batch=self.metrics.observe_batch,
        )
        self.metrics.track_queue_depth(lambda: self.batcher.depth if self.batcher else 0)
        self.batcher.start()
        self.ready = True
        log.info("model loaded and warmed up; ready")

    def count_cut_off(self) -> None:
        self.cut_off += 1

    def require_ready(self) -> DynamicBatcher[Any]:
        """The batcher to submit to, or a 503 with Retry-After while the model loads, after it failed to load
        (the reason named), or once the server drains: a client or load balancer retries, not a 500."""
        if self.draining:
            raise ServeError(503, "shutting_down", "the server is shutting down", {"Retry-After": "1"})
        if self.batcher is None or not self.ready:
            reason = f"model failed to load: {self.load_error}" if self.load_error else "model is loading"
            raise ServeError(503, "not_ready", reason, {"Retry-After": "1"})
        return self.batcher


def predefined_prompts(retoucher: RetoucherLike) -> list[str]:
    """What a request without prompts gets: the model's pre-defined prompts when exposed, else all it knows."""
    return list(getattr(retoucher, "predefined_prompts", None) or retoucher.prompts)


def default_loader(config: ServeConfig) -> Callable[[], RetoucherLike]:
    """What `create_app` loads when given no loader: `Retoucher.load` of `config.model` (None: the bundled model)."""
    def load() -> RetoucherLike:
        from langbrt.runtime import Retoucher  # imported late: backends load only when a server starts

        return Retoucher.load(config.model, backend=config.backend, device=config.device,
                              precision=config.precision, batch_size=config.max_batch)

    return load
