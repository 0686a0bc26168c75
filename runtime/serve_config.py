"""`ServeConfig`: everything `langbrt-serve` exposes as a flag, in one frozen dataclass.

The CLI builds it from its flags and tests build it directly; `create_app` (`serve_app`) and the model's
lifecycle (`serve_state`) read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from langbrt.io import DEFAULT_MAX_PIXELS

from .serve_admission import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_INFLIGHT_BODY_BYTES, DEFAULT_MAX_INFLIGHT_PIXELS


@dataclass(frozen=True)
class ServeConfig:
    """Everything `langbrt-serve` exposes as a flag; the defaults are the CLI's."""

    model: str | None = None
    backend: str = "auto"
    device: str | None = None
    precision: str | None = None  # None: fp32 for checkpoints, an exported engine's own precision
    max_batch: int = 8
    max_delay_ms: float = 5.0
    queue_size: int = 64
    timeout_s: float = 30.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_inflight_body_bytes: int = DEFAULT_MAX_INFLIGHT_BODY_BYTES  # at least max_body_bytes
    body_timeout_s: float = 60.0  # longest pause in an upload before 408
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_inflight_pixels: int = DEFAULT_MAX_INFLIGHT_PIXELS  # at least max_pixels (`InFlightBudget`)
    max_prompts: int = 8
    token: str | None = None
