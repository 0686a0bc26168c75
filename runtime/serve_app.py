"""The HTTP face of the Retoucher: a FastAPI app factory (`create_app`), run by `langbrt-serve`.

Endpoints: `POST /v1/retouch`, `GET /v1/prompts`, `GET /healthz`, `GET /readyz`, `GET /metrics`.
Every 4xx/5xx body is `{"error": {"code": ..., "message": ...}}`; the status mapping, in one place:

    400 bad_request        malformed Content-Length or multipart framing
    401 unauthorized       a token is configured and the bearer token is missing or wrong (WWW-Authenticate)
    404/405                unknown path / method
    408 body_timeout       the client sent no body bytes for body_timeout_s (the connection is closed)
    413 body_too_large     Content-Length or the streamed byte count exceeds max_body_bytes
    413 too_many_pixels    the image header announces more than max_pixels (decompression bomb)
    415 unsupported_media  request (or its `image` part) is neither multipart/form-data, image/* nor octet-stream
    422 invalid_image      empty, corrupt or undecodable image bytes
    422 invalid_prompt     empty prompt, prompt over MAX_PROMPT_CHARS, more than max_prompts, unknown to the model
    422 invalid_request    a bad query/form value (return=, maps=, maps=true without return=json) or a
                           missing `image` field
    499 client_closed_request  the client disconnected first (nobody reads it: for metrics and the log)
    500 internal           a bug; logged once with its traceback, never shown to the client
    503 not_ready          the model is still loading/warming up (Retry-After: 1)
    503 queue_full         the batch queue holds queue_size images, or the image's pixels would take the
                           images in flight over max_inflight_pixels, or its body the bodies held over
                           max_inflight_body_bytes (Retry-After: 1)
    503 shutting_down      the server is draining for shutdown
    504 timeout            no result within timeout_s (queue wait + model time)

Safety: uploads stay in memory (never spooled to disk), no request names a server-side path, the bearer
token is compared with `hmac.compare_digest`, and /healthz and /readyz stay open for orchestrators.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

import numpy as np
import torch
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from langbrt.errors import LangBRTError, LangBRTInputError
from langbrt.io import (
    DEFAULT_MAX_PIXELS,
    FAST_PNG_LEVEL,
    LoadedImage,
    encode_image,
    image_pixels,
    output_note,
    to_uint8_hwc,
    to_uint16_hwc,
)
from langbrt.text.prompts import MAX_PROMPT_CHARS

from .batching import BatcherClosedError, BatchTimeoutError, DynamicBatcher, QueueFullError
from .serve_admission import (
    BODY_BYTES,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_INFLIGHT_BODY_BYTES,
    DEFAULT_MAX_INFLIGHT_PIXELS,
    PIXELS,
    BudgetExceeded,
    InFlightBudget,
)
from .serve_metrics import METRICS_CONTENT_TYPE, ServeMetrics
from .serve_middleware import InternalErrorMiddleware, MetricsMiddleware, add_error_handlers
from .serve_request import (
    QUERY_PARAMETERS,
    ServeError,
    check_known,
    check_prompts,
    decode_image,
    form_bool,
    form_return,
    parse_upload,
    read_body,
    server_busy,
    unless_disconnected,
)
from .serve_schemas import (
    OUTPUT_FORMATS,
    RETOUCH_BODY,
    RETOUCH_OK,
    WARNING_HEADER,
    MapPNG,
    PromptsBody,
    RetouchJSON,
    StatusBody,
    error_responses,
)

log = logging.getLogger("langbrt.serve")

ReturnKind = Literal["image", "json"]
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


class RetoucherLike(Protocol):
    """The part of `langbrt.runtime.Retoucher` the server uses (tests pass fakes)."""

    prompts: list[str]
    device: str  # where the model runs: "cpu", "cuda", "cuda:1", ...

    def retouch(self, images: list[torch.Tensor], prompts: list[list[str]] | None = None) -> list[Any]: ...


# ------------------------------------------------------------------------------------------ app state


class _ServeState:
    """What the lifespan builds: the retoucher, its batcher, readiness; one per app."""

    def __init__(self, config: ServeConfig, metrics: ServeMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.retoucher: RetoucherLike | None = None
        self.batcher: DynamicBatcher[Any] | None = None
        self.ready = False
        self.draining = False  # set by `drain` when the server starts shutting down
        self.load_error: str | None = None

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
            default_prompts=_predefined_prompts(retoucher), on_batch=self.metrics.observe_batch,
        )
        self.metrics.track_queue_depth(lambda: self.batcher.depth if self.batcher else 0)
        self.batcher.start()
        self.ready = True
        log.info("model loaded and warmed up; ready")

    def require_ready(self) -> DynamicBatcher[Any]:
        if self.draining:
            raise ServeError(503, "shutting_down", "the server is shutting down", {"Retry-After": "1"})
        if self.batcher is None or not self.ready:
            reason = f"model failed to load: {self.load_error}" if self.load_error else "model is loading"
            raise ServeError(503, "not_ready", reason, {"Retry-After": "1"})
        return self.batcher


def _predefined_prompts(retoucher: RetoucherLike) -> list[str]:
    """What a request without prompts gets: the model's pre-defined prompts when exposed, else all it knows."""
    return list(getattr(retoucher, "predefined_prompts", None) or retoucher.prompts)


# ------------------------------------------------------------------------------------------ factory


def create_app(
    config: ServeConfig,
    loader: Callable[[], RetoucherLike] | None = None,
    on_load_failure: Callable[[str], None] | None = None,
) -> FastAPI:
    """Build the app; the model loads in the background after startup (so /healthz answers at once).

    `loader` defaults to `Retoucher.load(config.model, ...)` (the bundled model when None); `on_load_failure`
    lets the CLI exit non-zero.
    """
    if loader is None:
        loader = _default_loader(config)  # config.model None: the bundled model
    metrics = ServeMetrics(config.max_batch)
    state = _ServeState(config, metrics)
    pixels = InFlightBudget(config.max_inflight_pixels, PIXELS)
    bodies = InFlightBudget(config.max_inflight_body_bytes, BODY_BYTES)
    metrics.track_inflight(pixels=lambda: pixels.in_flight, body_bytes=lambda: bodies.in_flight)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(state.load(loader, on_load_failure))
        try:
            yield
        finally:
            if not loading.done():
                loading.cancel()  # the loader thread finishes on its own; its result is dropped
            if state.batcher is not None:
                state.ready = False
                if not await state.batcher.aclose(timeout=config.timeout_s):
                    log.warning("batcher did not drain within %.0f s", config.timeout_s)

    app = FastAPI(title="LangBRT", summary="Language-guided face blemish removal", version="1",
                  lifespan=lifespan)
    app.state.serve = state
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last: outermost, so it counts the 500s
    add_error_handlers(app)
    auth = [Depends(_bearer_check(config.token))] if config.token else []

    @app.head("/healthz", response_model=StatusBody, tags=["ops"])  # HEAD too: monitors and balancers probe so
    @app.get("/healthz", response_model=StatusBody, tags=["ops"])
    async def healthz() -> StatusBody:
        """The process is alive and answering (no model needed)."""
        return StatusBody(status="ok")

    @app.head("/readyz", response_model=StatusBody, responses=error_responses(503), tags=["ops"])
    @app.get("/readyz", response_model=StatusBody, responses=error_responses(503), tags=["ops"])
    async def readyz() -> StatusBody:
        """200 once the model is loaded and warmed up (`warmup_batch_sizes`); 503 before (and while draining)."""
        state.require_ready()
        return StatusBody(status="ready")

    @app.get("/metrics", dependencies=auth, response_class=Response, tags=["ops"],
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **error_responses(401)})
    async def metrics_endpoint() -> Response:
        """Prometheus text format: requests by endpoint/status, latency, batch sizes, queue depth, RSS."""
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/v1/prompts", dependencies=auth, response_model=PromptsBody, responses=error_responses(401, 503))
    async def prompts() -> PromptsBody:
        """Prompts the loaded model or engine answers without a text encoder (its pre-defined ones first)."""
        state.require_ready()
        assert state.retoucher is not None
        known = list(dict.fromkeys(_predefined_prompts(state.retoucher) + list(state.retoucher.prompts)))
        return PromptsBody(prompts=known, max_prompts=config.max_prompts, max_prompt_chars=MAX_PROMPT_CHARS)

    @app.post("/v1/retouch", dependencies=auth, response_class=Response, openapi_extra={"requestBody": RETOUCH_BODY},
              responses={200: RETOUCH_OK, **error_responses(400, 401, 408, 413, 415, 422, 500, 503, 504)})
    async def retouch(
        request: Request,
        prompt: Annotated[list[str] | None, Query(description="Blemish to remove; repeat for several.")] = None,
        return_: Annotated[ReturnKind | None, Query(alias="return", description="image (default) or json")] = None,
        maps: Annotated[bool | None, Query(description="json only: include one PNG map per prompt")] = None,
    ) -> Response:
        """Retouch one image: multipart field `image` (+ `prompt` fields) or a raw image/* body."""
        check_known(request.query_params.keys(), QUERY_PARAMETERS, "query parameter")
        batcher = state.require_ready()
        with bodies.reserve() as body_bytes:  # the body and the upload parsed from it live until the reply
            body = await read_body(request, config.max_body_bytes, body_bytes, config.body_timeout_s,
                                   lambda: state.draining)
            return await _retouch_upload(request, body, prompt, return_, maps, batcher)

    async def _retouch_upload(request: Request, body: bytes, prompt: list[str] | None, return_: ReturnKind | None,
                              maps: bool | None, batcher: DynamicBatcher[Any]) -> Response:
        upload = await parse_upload(Headers(scope=request.scope), body)
        texts = check_prompts((prompt or []) + upload.prompts, config.max_prompts)
        kind = return_ or form_return(upload.fields.get("return")) or "image"
        want_maps = maps if maps is not None else form_bool(upload.fields.get("maps"), "maps")
        if want_maps and kind != "json":  # an image reply has nowhere to put them: say so, do not drop them
            raise ServeError(422, "invalid_request", "maps=true needs return=json (an image reply carries no maps)")
        announced = image_pixels(upload.data) or 0  # 0: an unreadable header, which decoding reports
        if announced > config.max_pixels:
            announced = 0  # decode_image refuses it (413) from its header, before decoding or holding anything
        with _admit(pixels, announced):
            started = time.perf_counter()
            loaded = await run_in_threadpool(decode_image, upload.data, upload.name, config.max_pixels)
            decoded = time.perf_counter()
            result = await unless_disconnected(request, _submit(batcher, loaded.rgb, texts or None))
            timing = {**{k: float(v) for k, v in result.timing.items()},
                      "decode": (decoded - started) * 1e3, "queue_and_model": (time.perf_counter() - decoded) * 1e3}
            return await run_in_threadpool(_render, loaded, result, kind, bool(want_maps), timing)

    return app


def drain(app: FastAPI) -> None:
    """Tell the app its server has begun shutting down (call it from the server's signal handling).

    Why: uvicorn waits for in-flight requests before it runs the lifespan's shutdown, so the app must hear
    of it earlier: uploads still arriving end with 503 `shutting_down` at once instead of holding the
    shutdown until their idle timeout, and new requests on kept-alive connections are refused the same way.
    Requests already read finish normally.
    """
    app.state.serve.draining = True


def _default_loader(config: ServeConfig) -> Callable[[], RetoucherLike]:
    def load() -> RetoucherLike:
        from langbrt.runtime import Retoucher  # imported late: backends load only when a server starts

        return Retoucher.load(config.model, backend=config.backend, device=config.device,
                              precision=config.precision, batch_size=config.max_batch)

    return load


# ------------------------------------------------------------------------------------------ request side


_BEARER = HTTPBearer(auto_error=False, description="Set with --token or LANGBRT_SERVE_TOKEN.")
"""Module level: FastAPI resolves the (string) annotations of dependencies against module globals."""


def _bearer_check(token: str) -> Callable[..., None]:
    expected = token.encode()

    def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise ServeError(401, "unauthorized", "missing or wrong bearer token (send 'Authorization: Bearer ...')",
                             {"WWW-Authenticate": 'Bearer realm="langbrt"'})

    return check


@contextmanager
def _admit(pixels: InFlightBudget, count: int) -> Iterator[None]:
    try:
        with pixels.hold(count):
            yield
    except BudgetExceeded as err:
        raise server_busy(err) from err


async def _submit(batcher: DynamicBatcher[Any], image: torch.Tensor, prompts: list[str] | None) -> Any:
    try:
        return await batcher.submit(image, prompts)
    except QueueFullError as err:
        raise server_busy(err) from err
    except BatcherClosedError as err:
        raise ServeError(503, "shutting_down", str(err), {"Retry-After": "1"}) from err
    except BatchTimeoutError as err:
        raise ServeError(504, "timeout", str(err)) from err
    except LangBRTInputError as err:  # a prompt the model cannot answer; a broken model is a 500, not the client's
        raise ServeError(422, "invalid_prompt", str(err)) from err


# ------------------------------------------------------------------------------------------ response side


def _render(loaded: LoadedImage, result: Any, kind: ReturnKind, with_maps: bool, timing: dict[str, float]) -> Response:
    """The reply: 16-bit PNG for a 16-bit PNG upload; a warning (header, JSON field) when the reply lost bits."""
    fmt = loaded.format if loaded.format in OUTPUT_FORMATS else "PNG"
    started = time.perf_counter()
    encoded = encode_image(result.image, fmt, loaded.alpha, exif=loaded.exif, icc_profile=loaded.icc_profile,
                           fast=True, bit_depth=loaded.output_bit_depth,  # the client waits: time over bytes
                           lossless=loaded.lossless)
    timing["encode"] = (time.perf_counter() - started) * 1e3
    server_timing = ", ".join(f"{k};dur={v:.2f}" for k, v in timing.items())
    warning = output_note(loaded)  # unnamed: a header value must stay ASCII, whatever the upload was called
    if kind == "image":
        headers = {"Server-Timing": server_timing, **({WARNING_HEADER: warning} if warning else {})}
        return Response(encoded, media_type=OUTPUT_FORMATS[fmt], headers=headers)
    maps = None
    if with_maps:
        maps = [MapPNG(prompt=p, png=_b64(_gray_png(m, loaded.output_bit_depth)))
                for p, m in zip(result.prompts, result.maps, strict=False)]
    body = RetouchJSON(image=_b64(encoded), format=fmt, bit_depth=loaded.output_bit_depth,
                       mask=_b64(_gray_png(result.mask[0], loaded.output_bit_depth)), maps=maps, timing_ms=timing,
                       prompts=list(result.prompts),
                       warning=warning)
    return Response(body.model_dump_json(exclude_none=True), media_type="application/json",
                    headers={"Server-Timing": server_timing})


def _gray_png(plane: torch.Tensor, bit_depth: int = 8) -> bytes:
    """(H, W) map in [0, 1] -> grayscale PNG bytes of `bit_depth` (8 or 16). Why 16 beside a 16-bit image:
    at 8 bits a mask value under 1/510 shows as 0 where the 16-bit image did change."""
    to_hwc = to_uint16_hwc if bit_depth == 16 else to_uint8_hwc
    arr = np.ascontiguousarray(to_hwc(plane.unsqueeze(0))[:, :, 0])  # (H, W) uint8 or uint16
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=FAST_PNG_LEVEL)  # mode L or I;16
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
