"""The HTTP face of the Retoucher: a FastAPI app factory (`create_app`), run by `langbrt-serve`.

Endpoints: `POST /v1/retouch`, `GET /v1/prompts`, `GET /healthz`, `GET /readyz`, `GET /metrics`.
Every 4xx/5xx body is `{"error": {"code": ..., "message": ...}}`; the status mapping, in one place:

    400 bad_request        malformed Content-Length or multipart framing
    401 unauthorized       a token is configured and the bearer token is missing or wrong (WWW-Authenticate)
    404/405                unknown path / method
    408 body_timeout       the client sent no body bytes for body_timeout_s (the connection is closed)
    413 body_too_large     Content-Length or the streamed byte count exceeds max_body_bytes
    413 field_too_large    a multipart text field over MAX_TEXT_FIELD_BYTES (1 MiB), named in the message
    413 too_many_pixels    the image header announces more than max_pixels (decompression bomb)
    415 unsupported_media  request (or its `image` part) is neither multipart/form-data, image/* nor octet-stream,
                           or the body has a Content-Encoding (gzip, ...)
    422 invalid_image      empty, corrupt or undecodable image bytes
    422 invalid_prompt     empty prompt, prompt over MAX_PROMPT_CHARS, a control character (tab and newline
                           too), more than max_prompts, unknown to the model
    422 invalid_request    a bad query/form value (return=, maps=, maps=true without return=json), a
                           missing `image` field, or a parameter other than `prompt` given twice (in the
                           query, in the form, or once in each)
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

The model's loading, warm-up and readiness live in `serve_state`, the reply's encoding in `serve_response`,
request parsing in `serve_request`; this module wires them into routes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any

import torch
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from langbrt.errors import LangBRTInputError
from langbrt.io import image_pixels
from langbrt.text.prompts import MAX_PROMPT_CHARS

from .batching import BatcherClosedError, BatchTimeoutError, DynamicBatcher, QueueFullError
from .serve_admission import BODY_BYTES, PIXELS, BudgetExceeded, InFlightBudget
from .serve_config import ServeConfig
from .serve_metrics import METRICS_CONTENT_TYPE, ServeMetrics
from .serve_middleware import InternalErrorMiddleware, MetricsMiddleware, add_error_handlers
from .serve_request import (
    QUERY_PARAMETERS,
    ServeError,
    check_content_encoding,
    check_known,
    check_not_in_both,
    check_once,
    check_prompts,
    decode_image,
    form_bool,
    form_return,
    parse_upload,
    read_body,
    server_busy,
    unless_disconnected,
)
from .serve_response import ReturnKind, render_response
from .serve_schemas import RETOUCH_BODY, RETOUCH_OK, PromptsBody, StatusBody, error_responses
from .serve_state import RetoucherLike, ServeState, default_loader, predefined_prompts

Endpoint = Callable[..., Any]  # a route's handler, as FastAPI's decorators take and return it

log = logging.getLogger("langbrt.serve")


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
        loader = default_loader(config)  # config.model None: the bundled model
    metrics = ServeMetrics(config.max_batch)
    state = ServeState(config, metrics)
    pixels = InFlightBudget(config.max_inflight_pixels, PIXELS)
    bodies = InFlightBudget(config.max_inflight_body_bytes, BODY_BYTES)
    metrics.track_inflight(pixels=lambda: pixels.in_flight, body_bytes=lambda: bodies.in_flight)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(state.load(loader, on_load_failure))
        try:
            yield
        except asyncio.CancelledError:
            # uvicorn's force quit (a second SIGINT) skips the lifespan's shutdown and the event loop's teardown
            # cancels it instead: shut down all the same, quietly (re-raised, Starlette logs the cancellation
            # as a traceback). The batcher is still waited for: the cancelled requests' images have left its
            # queue, and a worker thread killed inside torch at exit aborts the process (SIGABRT).
            pass
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
    app.add_middleware(InternalErrorMiddleware, on_cut_off=state.count_cut_off)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last: outermost, so it counts the 500s
    add_error_handlers(app)
    auth = [Depends(_bearer_check(config.token))] if config.token else []

    def get_and_head(path: str, **route: Any) -> Callable[[Endpoint], Endpoint]:
        """Register `path` for GET and HEAD: every GET answers HEAD too (RFC 9110 9.3.2; monitors and balancers
        probe so), which FastAPI does not add by itself. Two routes, not one with both methods, so that each
        keeps its own OpenAPI operation id."""
        def register(endpoint: Endpoint) -> Endpoint:
            app.get(path, **route)(endpoint)
            return app.head(path, **route)(endpoint)
        return register

    @get_and_head("/healthz", response_model=StatusBody, tags=["ops"])
    async def healthz() -> StatusBody:
        """The process is alive and answering (no model needed)."""
        return StatusBody(status="ok")

    @get_and_head("/readyz", response_model=StatusBody, responses=error_responses(503), tags=["ops"])
    async def readyz() -> StatusBody:
        """200 once the model is loaded and warmed up (`warmup_batch_sizes`); 503 before (and while draining)."""
        state.require_ready()
        return StatusBody(status="ready")

    metrics_responses = {200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **error_responses(401)}

    @get_and_head("/metrics", dependencies=auth, response_class=Response, tags=["ops"], responses=metrics_responses)
    async def metrics_endpoint() -> Response:
        """Prometheus text format: requests by endpoint/status, latency, batch sizes, queue depth, RSS."""
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @get_and_head("/v1/prompts", dependencies=auth, response_model=PromptsBody, responses=error_responses(401, 503))
    async def prompts() -> PromptsBody:
        """Prompts the loaded model or engine answers without a text encoder (its pre-defined ones first)."""
        state.require_ready()
        assert state.retoucher is not None
        known = list(dict.fromkeys(predefined_prompts(state.retoucher) + list(state.retoucher.prompts)))
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
        check_once((name for name, _ in request.query_params.multi_items()), "query parameter")
        batcher = state.require_ready()
        check_content_encoding(request.headers)
        with bodies.reserve() as body_bytes:  # the body and the upload parsed from it live until the reply
            body = await read_body(request, config.max_body_bytes, body_bytes, config.body_timeout_s,
                                   lambda: state.draining)
            return await _retouch_upload(request, body, prompt, return_, maps, batcher)

    async def _retouch_upload(request: Request, body: bytes, prompt: list[str] | None, return_: ReturnKind | None,
                              maps: bool | None, batcher: DynamicBatcher[Any]) -> Response:
        upload = await parse_upload(Headers(scope=request.scope), body)
        check_not_in_both(request.query_params.keys(), upload.fields)
        texts = check_prompts((prompt or []) + upload.prompts, config.max_prompts)
        kind = return_ or form_return(upload.fields.get("return")) or "image"
        want_maps = maps if maps is not None else form_bool(upload.fields.get("maps"), "maps")
        if want_maps and kind != "json":  # an image reply has nowhere to put them: say so, do not drop them
            raise ServeError(422, "invalid_request", "maps=true needs return=json (an image reply carries no maps)")
        announced = image_pixels(upload.data, max_pixels=config.max_pixels) or 0  # 0: unreadable, decoding says why
        if announced > config.max_pixels:
            announced = 0  # decode_image refuses it (413) from its header, before decoding or holding anything
        with _admit(pixels, announced):
            started = time.perf_counter()
            loaded = await run_in_threadpool(decode_image, upload.data, upload.name, config.max_pixels)
            decoded = time.perf_counter()
            result = await unless_disconnected(request, _submit(batcher, loaded.rgb, texts or None))
            timing = {**{k: float(v) for k, v in result.timing.items()},
                      "decode": (decoded - started) * 1e3, "queue_and_model": (time.perf_counter() - decoded) * 1e3}
            return await run_in_threadpool(render_response, loaded, result, kind, bool(want_maps), timing)

    return app


def drain(app: FastAPI) -> None:
    """Tell the app its server has begun shutting down (call it from the server's signal handling).

    Why: uvicorn waits for in-flight requests before it runs the lifespan's shutdown, so the app must hear
    of it earlier: uploads still arriving end with 503 `shutting_down` at once instead of holding the
    shutdown until their idle timeout, and new requests on kept-alive connections are refused the same way.
    Requests already read finish normally.
    """
    app.state.serve.draining = True


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
