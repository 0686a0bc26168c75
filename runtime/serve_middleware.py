"""What wraps every request of the server: the JSON error body for every 4xx/5xx, metrics, and bugs logged once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .serve_metrics import ServeMetrics
from .serve_request import ServeError

log = logging.getLogger("langbrt.serve")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(request: Request, err: ServeError) -> JSONResponse:
        if err.status == 499:
            log.info("%s %s: %s", request.method, request.url.path, err.message)
        return error_response(err.status, err.code, err.message, err.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = HTTPStatus(err.status_code).phrase.lower().replace(" ", "_")
        headers = dict(getattr(err, "headers", None) or {})
        if err.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return error_response(err.status_code, code, str(err.detail), headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes on the request's path. Why: a GET and a HEAD of one path are two routes in
    FastAPI, and Starlette's 405 named the first one's methods alone (`Allow: GET` on /healthz, which takes HEAD)."""
    return sorted({method for route in request.app.router.routes if isinstance(route, Route)
                   and route.matches(request.scope)[0] is not Match.NONE for method in route.methods or ()})



class MetricsMiddleware:
    """Counts every response by route template (not raw path: bounded label values) and status."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "other"
            self.metrics.observe_request(endpoint, status, time.perf_counter() - started)


class InternalErrorMiddleware:
    """A bug in a handler: log it once with its traceback and answer the JSON 500 body; a request the server
    cancels while shutting down: one log line and a JSON 503 (`_cut_off`), counted by `on_cut_off` (so that
    `langbrt-serve` can exit non-zero: answers were lost).

    Why not `exception_handler(Exception)`: Starlette runs that handler in its outermost middleware, then
    re-raises so the server logs the same traceback a second time; here the error stops.
    """

    def __init__(self, app: ASGIApp, on_cut_off: Callable[[], None]) -> None:
        self.app = app
        self.on_cut_off = on_cut_off

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except asyncio.CancelledError:
            self.on_cut_off()
            await _cut_off(scope, receive, send, started)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:  # else the client gets a cut-off response; nothing more can be sent
                await error_response(500, "internal", "internal server error (logged on the server)")(
                    scope, receive, send)


async def _cut_off(scope: Scope, receive: Receive, send: Send, started: bool) -> None:
    """End a request the server cancelled: 503 `shutting_down` (when nothing was sent yet) and one log line.

    Why: uvicorn cancels the requests it stops waiting for (a second SIGINT, its force quit, or its graceful
    shutdown timeout). Re-raised, each cancellation was an 80-line "Exception in ASGI application" traceback
    and a plain-text 500, which tells clients and /metrics of a bug; the request did nothing wrong. The
    cancellation ends here: the request's task is being torn down, nothing awaits it.
    """
    log.warning("%s %s: cut off by the server's shutdown", scope.get("method"), scope.get("path"))
    if not started:  # else uvicorn closes the connection on the cut-off reply
        await error_response(503, "shutting_down", "the server stopped before this request finished; send it again",
                             {"Connection": "close", "Retry-After": "1"})(scope, receive, send)
