"""Prometheus metrics of one server app, in the app's own registry.

Each app owns a `CollectorRegistry` instead of using prometheus_client's global one, so two apps in one
process (tests, or a blue/green reload) never collide on metric names or mix their counts. The process
collector is added too: `process_resident_memory_bytes` is what the load benchmark reads to watch memory.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from .batching import BatchStats

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Request latency buckets: a 512^2 TensorRT call is ~10 ms, a CPU call of the paper model is seconds."""

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServeMetrics:
    """Request count (endpoint, status), request latency, batch size, model time, queue wait and depth,
    pixels in flight."""

    def __init__(self, max_batch: int) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "langbrt_requests", "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "langbrt_request_latency_seconds", "Time from request start to response end, by endpoint.",
            ["endpoint"], buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.batch_size = Histogram(
            "langbrt_batch_size", "Images per model call.",
            buckets=_batch_buckets(max_batch), registry=self.registry,
        )
        self.model_latency = Histogram(
            "langbrt_model_latency_seconds", "Time inside one batched model call.",
            buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.queue_wait = Histogram(
            "langbrt_queue_wait_seconds", "Time the oldest image of a batch waited for the model.",
            buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.queue_depth = Gauge(
            "langbrt_queue_depth", "Images waiting for the model (not counting the running batch).",
            registry=self.registry,
        )
        self.inflight_pixels = Gauge(
            "langbrt_inflight_pixels", "Pixels of the images being decoded, queued, run or encoded.",
            registry=self.registry,
        )
        self.inflight_body_bytes = Gauge(
            "langbrt_inflight_body_bytes", "Bytes of the request bodies being uploaded or held until the reply.",
            registry=self.registry,
        )

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def observe_batch(self, stats: BatchStats) -> None:
        """Called from the batcher's worker thread; prometheus_client metrics are thread-safe."""
        self.batch_size.observe(stats.size)
        self.model_latency.observe(stats.run_s)
        self.queue_wait.observe(stats.wait_s)

    def track_queue_depth(self, depth: Callable[[], float]) -> None:
        """Read the depth at scrape time, so the gauge is never stale."""
        self.queue_depth.set_function(depth)

    def track_inflight(self, pixels: Callable[[], float], body_bytes: Callable[[], float]) -> None:
        """Read the admitted pixels and body bytes at scrape time (`serve_admission.InFlightBudget`)."""
        self.inflight_pixels.set_function(pixels)
        self.inflight_body_bytes.set_function(body_bytes)

    def render(self) -> bytes:
        """The Prometheus text exposition of this app's registry."""
        return generate_latest(self.registry)


def _batch_buckets(max_batch: int) -> tuple[float, ...]:
    """One bucket per batch size up to 8, then powers of two up to `max_batch`."""
    sizes = list(range(1, min(max_batch, 8) + 1))
    size = 16
    while sizes[-1] < max_batch:
        sizes.append(min(size, max_batch))
        size *= 2
    return tuple(float(s) for s in sizes)
