"""Reading a retouch request: bounded body, in-memory multipart, prompt and field checks, image decoding.

Every problem becomes a `ServeError` carrying its HTTP status and a stable code; `serve_app` renders it as the
JSON error body. Nothing here touches the disk: the body is bounded and parsed in memory.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from email.message import Message
from typing import TypeVar

from fastapi import Request
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from langbrt.errors import LangBRTInputError, TooManyPixelsError
from langbrt.io import LoadedImage, load_image_bytes
from langbrt.text.prompts import MAX_PROMPT_CHARS, normalize_prompt

from .serve_admission import BudgetExceeded, Reservation

RAW_TYPES = ("image/", "application/octet-stream")
FORM_FIELDS = ("image", "prompt", "return", "maps")  # the multipart fields /v1/retouch reads
QUERY_PARAMETERS = ("prompt", "return", "maps")
REPEATABLE = ("prompt",)  # the one field or parameter a request may give more than once
MAX_FORM_FIELDS = 1024
"""Most multipart fields parsed; beyond it the body is malformed (400). Prompts over `max_prompts` but within
this many fields get the precise 422 instead."""
MAX_TEXT_FIELD_BYTES = 1024 * 1024
"""Largest multipart text field (`prompt`, `return`, `maps`; the `image` file is bounded by the body limit alone).
Starlette's own limit, kept: a prompt is at most MAX_PROMPT_CHARS characters, so anything near it is a mistake
or an attack, and it is held in memory as it arrives. Over it: 413 `field_too_large`, naming the field and limit."""

IMAGE_FIELD_REQUIRED = "multipart field 'image' (a file) is required, e.g. curl -F image=@face.jpg"

T = TypeVar("T")


class ServeError(Exception):
    """An error with its HTTP status and stable machine-readable code; rendered as the JSON error body."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def server_busy(reason: object) -> ServeError:
    """503 `queue_full` + Retry-After: the queue or an in-flight budget is full; the same request may pass soon."""
    return ServeError(503, "queue_full", f"server busy: {reason}", {"Retry-After": "1"})


# On a refusal sent while the client may still be sending its body: the rest is never read, and a kept-alive
# connection then waited for it (or for uvicorn's keep-alive timeout) before the client's next request (QA).
UNREAD_BODY = {"Connection": "close"}


def check_content_encoding(headers: Headers) -> None:
    """415 for a body sent with a content coding (`Content-Encoding: gzip`), before it is read.

    Why: the header was ignored, so a gzipped PNG was a 422 "not an image file" that blamed the image, and a
    body labelled gzip but sent plain was retouched as if the label were not there. Images are compressed
    already; the server takes them as they are (RFC 9110 15.5.16: the reply's Accept-Encoding says so).
    """
    codings = [c.strip().lower() for c in headers.get("content-encoding", "").split(",") if c.strip()]
    if any(coding != "identity" for coding in codings):
        raise ServeError(415, "unsupported_media", f"Content-Encoding {headers['content-encoding'][:40]!r} is not "
                         "supported; send the image's bytes as they are, without a content coding",
                         {**UNREAD_BODY, "Accept-Encoding": "identity"})


def client_gone(where: str) -> ServeError:
    """499 (nginx's "client closed request"): nobody reads it, but metrics and logs tell it from a 5xx."""
    return ServeError(499, "client_closed_request", f"the client disconnected {where}")


DRAIN_CHECK_S = 0.5
"""How often a body read in progress looks whether the server has begun shutting down."""


async def read_body(request: Request, limit: int, held: Reservation, idle_timeout_s: float,
                    draining: Callable[[], bool]) -> bytes:
    """The whole body, refusing early on Content-Length and again on the bytes actually streamed.

    `held` is this request's share of the server's body budget, grown by each chunk as it arrives: what is
    counted is what the server holds, so a client that declares a large Content-Length and sends nothing
    holds nothing (and one that sends both Content-Length and chunked framing is counted all the same). A
    client that stops sending for `idle_timeout_s` gets a 408 (nginx's `client_body_timeout` rule), and once
    `draining()` (the server is shutting down) an upload still in progress gets a 503 at once instead of
    holding the shutdown until its idle timeout.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ServeError(400, "bad_request", f"Content-Length is not a number: {declared[:20]!r}")
        if int(declared) > limit:
            raise ServeError(413, "body_too_large", f"body is {int(declared)} bytes; the limit is {limit}",
                             UNREAD_BODY)
    body = bytearray()
    chunks = request.stream()
    try:
        while (chunk := await _next_chunk(chunks, idle_timeout_s, draining, len(body))) is not None:
            body += chunk
            if len(body) > limit:
                raise ServeError(413, "body_too_large", f"body exceeds the {limit}-byte limit", UNREAD_BODY)
            _reserve_body(held, len(chunk))
    except ClientDisconnect:
        raise client_gone(f"after sending {len(body)} bytes of the body") from None
    return bytes(body)


async def _next_chunk(chunks: AsyncIterator[bytes], idle_timeout_s: float, draining: Callable[[], bool],
                      received: int) -> bytes | None:
    """The body's next chunk, None at its end; 408 after `idle_timeout_s` without one, 503 once draining."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + idle_timeout_s
    pending = asyncio.ensure_future(chunks.__anext__())  # waited on in slices, never cancelled by a slice
    try:
        while True:
            if draining():
                raise ServeError(503, "shutting_down", "the server is shutting down; send the request again",
                                 {**UNREAD_BODY, "Retry-After": "1"})
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ServeError(408, "body_timeout", f"no body bytes for {idle_timeout_s:g} s after "
                                 f"{received} bytes", UNREAD_BODY)
            done, _ = await asyncio.wait({pending}, timeout=min(remaining, DRAIN_CHECK_S))
            if done:
                try:
                    return pending.result()
                except StopAsyncIteration:
                    return None
    finally:
        pending.cancel()  # a no-op once it is done


def _reserve_body(held: Reservation, size: int) -> None:
    try:
        held.grow(size)
    except BudgetExceeded as err:
        busy = server_busy(err)
        busy.headers.update(UNREAD_BODY)
        raise busy from err


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, or cancel it and raise the 499 error when the client disconnects first.

    Why: a request whose client left still held a batch slot and the model's time; cancelling the batcher's
    `submit` marks its item abandoned, so the worker skips it. Once the body is read, the server's next
    ASGI message for this request can only be `http.disconnect`.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            raise client_gone("while its image waited for the model")
        return task.result()
    finally:
        watcher.cancel()
        task.cancel()  # a no-op once it is done


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


@dataclass
class Upload:
    """One request's upload as `parse_upload` found it: the image bytes, a name for error messages, and the
    multipart `prompt` and `return`/`maps` fields (none for a raw body, whose options come from the query)."""

    data: bytes
    name: str
    prompts: list[str]
    fields: dict[str, str]


class InMemoryMultiPartParser(MultiPartParser):
    """Starlette's parser with spooling to disk switched off (the body is already bounded and in memory),
    and text fields decoded in the request's charset (UTF-8 unless it names another) with undecodable
    bytes replaced by U+FFFD: Starlette decodes such a field as Latin-1 instead, which turns a badly
    encoded prompt into another prompt, where U+FFFD makes it the same 422 `invalid_prompt` as in a query
    string. Per-part charsets are not read (Starlette's choice too); clients send UTF-8."""

    spool_max_size = 2**62

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        """A text field over `max_part_size` is a 413 naming the field and the limit. Why: Starlette's
        "Part exceeded maximum size" became our 400 `bad_request` "malformed multipart body", which tells a
        client its framing is wrong when the body is well formed and only one field too big."""
        part = self._current_part
        if part.file is None and len(part.data) + end - start > self.max_part_size:
            if part.field_name == "image":  # sent without a filename: the same 422 as a small one gets
                raise ServeError(422, "invalid_request", IMAGE_FIELD_REQUIRED)
            raise ServeError(413, "field_too_large", f"multipart field {part.field_name[:40]!r} exceeds the "
                             f"{self.max_part_size}-byte limit for a text field (a prompt is at most "
                             f"{MAX_PROMPT_CHARS} characters)")
        super().on_part_data(data, start, end)

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is not None:
            super().on_part_end()
            return
        self.items.append((part.field_name, bytes(part.data).decode(self._charset or "utf-8", errors="replace")))


def check_form_charset(headers: Headers) -> None:
    """A 400 for a request charset Python does not know: Starlette would fall back to Latin-1."""
    charset = _content_type_param(headers, "charset")
    if charset is not None:
        try:
            codecs.lookup(charset)
        except LookupError:
            raise ServeError(400, "bad_request", f"unknown charset {charset!r} in Content-Type; send UTF-8") from None


async def parse_upload(headers: Headers, body: bytes) -> Upload:
    """The upload of a raw image/* body or of a multipart/form-data one with a single 'image' file.

    Every way a client can get it wrong is its own 4xx `ServeError` that says what to send (415 other media,
    400 a malformed or truncated body, 422 a missing, repeated or unknown field), never a 500 and never a
    field silently ignored: the client learns what to fix instead of getting a retouch it did not ask for.
    """
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    if media.startswith(RAW_TYPES):
        return Upload(body, "request body", [], {})
    if media != "multipart/form-data":
        raise ServeError(415, "unsupported_media",
                         f"Content-Type {media or '(none)'!r}: send multipart/form-data with field 'image', "
                         "or a raw body with Content-Type image/*")

    async def stream() -> AsyncIterator[bytes]:
        yield body

    check_form_charset(headers)
    parser = InMemoryMultiPartParser(headers, stream(), max_files=1, max_fields=MAX_FORM_FIELDS,
                                     max_part_size=MAX_TEXT_FIELD_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        if err.message.startswith("Too many files"):  # well-formed, just more than the one image we take
            raise ServeError(422, "invalid_request", "send one image per request (multipart field 'image')") from err
        raise ServeError(400, "bad_request", f"malformed multipart body: {err.message}") from err
    if not _has_close_delimiter(headers, body):
        raise ServeError(400, "bad_request", "malformed multipart body: it ends before its closing boundary "
                         "(truncated upload?)")
    check_known(form.keys(), FORM_FIELDS, "multipart field")
    check_once((name for name, _ in form.multi_items()), "multipart field")
    image = form.get("image")
    if not isinstance(image, UploadFile):
        raise ServeError(422, "invalid_request", IMAGE_FIELD_REQUIRED)
    part_type = (image.content_type or "").lower()
    if part_type and not part_type.startswith(RAW_TYPES):
        raise ServeError(415, "unsupported_media", f"field 'image' has Content-Type {part_type!r}, not image/*")
    data = await image.read()
    prompts = [v for v in form.getlist("prompt") if isinstance(v, str)]
    fields = {k: v for k, v in form.items() if isinstance(v, str) and k in ("return", "maps")}
    return Upload(data, image.filename or "image", prompts, fields)


def check_known(names: Iterable[str], known: tuple[str, ...], what: str) -> None:
    """422 naming the first of `names` not in `known`. Why: a misspelt field ('promt') would otherwise be
    ignored, and the image retouched for the model's default prompts instead of the ones asked for."""
    unknown = next((name for name in names if name not in known), None)
    if unknown is not None:
        raise ServeError(422, "invalid_request", f"unknown {what} {unknown!r}; this endpoint takes "
                         + ", ".join(repr(k) for k in known))


def check_once(names: Iterable[str], what: str) -> None:
    """422 naming the first of `names` given twice, `REPEATABLE` ones apart. Why: Starlette and FastAPI keep
    the last of a repeated `return`, `maps` or `image` and drop the rest without a word, so
    `?return=json&return=image` answered an image; which value the client meant is for it to say."""
    seen: set[str] = set()
    for name in names:
        if name in seen and name not in REPEATABLE:
            raise ServeError(422, "invalid_request", f"{what} {name!r} is given more than once; send it once "
                             "(only " + ", ".join(repr(k) for k in REPEATABLE) + " repeats)")
        seen.add(name)


def check_not_in_both(query: Iterable[str], fields: Iterable[str]) -> None:
    """422 for a parameter sent both in the query and as a multipart field (`return`, `maps`). Why: letting
    one place win (the query, say) would be the same quiet choice as keeping the last of a repeat."""
    in_query = set(query) - set(REPEATABLE)
    both = next((name for name in fields if name in in_query), None)
    if both is not None:
        raise ServeError(422, "invalid_request", f"{both!r} is given both as a query parameter and as a "
                         "multipart field; send it once")


def _has_close_delimiter(headers: Headers, body: bytes) -> bool:
    """Whether the body holds '--BOUNDARY--'; Starlette's parser accepts a body cut off without it."""
    boundary = _content_type_param(headers, "boundary")
    return boundary is not None and f"--{boundary}--".encode("latin-1", "replace") in body


def _content_type_param(headers: Headers, name: str) -> str | None:
    """A parameter of the Content-Type header (RFC 2045 quoting rules), or None."""
    content_type = Message()
    content_type["content-type"] = headers.get("content-type", "")
    value = content_type.get_param(name)
    return value if isinstance(value, str) else None


def check_prompts(prompts: list[str], max_prompts: int) -> list[str]:
    """The prompts normalised as langbrt-infer normalises them, so a prompt means the same on both; over
    `max_prompts` (each one costs a map) or an empty or multi-line one is a 422."""
    if len(prompts) > max_prompts:
        raise ServeError(422, "invalid_prompt", f"{len(prompts)} prompts; the limit is {max_prompts} per request")
    try:
        return [normalize_prompt(p, strict=True) for p in prompts]  # strict: a newline is a 422 too
    except LangBRTInputError as err:
        raise ServeError(422, "invalid_prompt", str(err)) from err


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "t": True, "y": True,
               "false": False, "0": False, "no": False, "off": False, "f": False, "n": False}
"""What FastAPI (pydantic) takes for a bool query value, case-insensitive: a form field must take the same."""


def form_return(value: str | None) -> str | None:
    """The multipart `return` field, by the query parameter's rule: exactly `image` or `json`."""
    if value is not None and value not in ("image", "json"):
        raise ServeError(422, "invalid_request", f"field 'return' must be image or json, got {value[:20]!r}")
    return value


def form_bool(value: str | None, name: str) -> bool | None:
    """A multipart yes/no field (`maps`), by the query parameter's rule (`_BOOL_WORDS`)."""
    if value is None:
        return None
    if value.lower() not in _BOOL_WORDS:
        raise ServeError(422, "invalid_request", f"field {name!r} must be true or false, got {value[:20]!r}")
    return _BOOL_WORDS[value.lower()]


def decode_image(data: bytes, name: str, max_pixels: int) -> LoadedImage:
    """The upload decoded as langbrt-infer decodes a file. Over `max_pixels` is a 413 (the client can send a
    smaller picture), anything else undecodable a 422 naming why: never a 500 for bad input."""
    try:
        return load_image_bytes(data, name, max_pixels=max_pixels)
    except TooManyPixelsError as err:
        raise ServeError(413, "too_many_pixels", str(err)) from err
    except LangBRTInputError as err:
        raise ServeError(422, "invalid_image", str(err)) from err
