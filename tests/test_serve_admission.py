"""What the server lets in and what it gives up on: the in-flight pixel and body budgets, stalled uploads,
clients that disconnect, and bugs logged once. The upload and disconnect tests run the app under a real
uvicorn server on a loopback socket, since only a real connection can stall or be dropped half way.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_serve import FakeRetoucher, _assert_error, _encode, _run_concurrently, _wait_ready

from langbrt.errors import CheckpointError
from langbrt.runtime import RetouchResult
from langbrt.runtime.serve_admission import BODY_BYTES, PIXELS, BudgetExceeded, InFlightBudget
from langbrt.runtime.serve_app import create_app, drain
from langbrt.runtime.serve_config import ServeConfig

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))
import serve_memory  # noqa: E402

IMAGE_PIXELS = 40 * 30  # what `_encode()` makes


def test_the_pixel_budget_admits_while_it_fits_and_frees_on_the_way_out() -> None:
    mp = 1_000_000
    budget = InFlightBudget(100 * mp, PIXELS)
    with budget.hold(60 * mp):
        assert budget.in_flight == 60 * mp
        with pytest.raises(BudgetExceeded, match=r"60\.0 MP of images in flight, this request adds 41\.0 MP "
                           r"\(limit 100 MP\)"):
            with budget.hold(41 * mp):
                pass
        assert budget.in_flight == 60 * mp  # the refused request added nothing
        with budget.hold(40 * mp):
            assert budget.in_flight == 100 * mp
    assert budget.in_flight == 0
    with pytest.raises(RuntimeError), budget.hold(100 * mp):
        raise RuntimeError("a failed request")
    assert budget.in_flight == 0  # released on the error path too


def test_a_reservation_grows_chunk_by_chunk_and_gives_all_of_it_back() -> None:
    budget = InFlightBudget(1000, BODY_BYTES)
    with budget.reserve() as streaming:
        streaming.grow(400)
        streaming.grow(400)
        with budget.hold(200):
            assert budget.in_flight == 1000
        with pytest.raises(BudgetExceeded, match=r"of request bodies being held"):
            streaming.grow(201)
        assert (streaming.amount, budget.in_flight) == (800, 800)
    assert budget.in_flight == 0


def test_an_image_that_would_overfill_the_pixel_budget_is_503_while_another_is_in_flight() -> None:
    config = ServeConfig(max_batch=1, max_delay_ms=0, max_inflight_pixels=IMAGE_PIXELS + IMAGE_PIXELS // 2)
    responses = _run_concurrently(FakeRetoucher(), config, 2, busy_first=True, sleep_s=0.5)
    assert sorted(r.status_code for r in responses) == [200, 503]
    refused = next(r for r in responses if r.status_code == 503)
    _assert_error(refused, 503, "queue_full")
    assert refused.headers["retry-after"] == "1" and "MP of images in flight" in refused.json()["error"]["message"]


def test_one_request_after_another_fits_a_budget_of_one_image(fake: FakeRetoucher) -> None:
    """The budget is released when a response is sent, whatever happened: success, then a 422, then success."""
    with TestClient(create_app(ServeConfig(max_inflight_pixels=IMAGE_PIXELS), loader=lambda: fake)) as client:
        _wait_ready(client)
        png = {"content-type": "image/png"}
        assert client.post("/v1/retouch", content=_encode(), headers=png).status_code == 200
        assert client.post("/v1/retouch?prompt=unknown", content=_encode(), headers=png).status_code == 422
        assert client.post("/v1/retouch", content=_encode(), headers=png).status_code == 200


@pytest.fixture
def fake() -> FakeRetoucher:
    return FakeRetoucher()


# ------------------------------------------------------------------------------------------ a live server


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """uvicorn serving `app` on a loopback port in a thread; yields the base URL once /readyz is 200."""
    with live_uvicorn(app) as (_, base):
        yield base


@contextmanager
def live_uvicorn(app: FastAPI) -> Iterator[tuple[uvicorn.Server, str]]:
    """`live_server`, also yielding the uvicorn server, for tests that stop it their own way."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None))  # its records reach caplog
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "live server never became ready"
            time.sleep(0.02)
        yield server, base
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def _raw_request(base: str, body: bytes, declared_length: int) -> socket.socket:
    """Send a raw-body POST whose Content-Length is `declared_length`; the caller closes the socket."""
    host, port = base.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)))
    head = (f"POST /v1/retouch HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {declared_length}\r\n\r\n").encode()
    conn.sendall(head + body)
    return conn


def _metric(base: str, status: int) -> float:
    wanted = f'langbrt_requests_total{{endpoint="/v1/retouch",status="{status}"}} '
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(wanted):
            return float(line.removeprefix(wanted))
    return 0.0


def _eventually(check: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


def test_a_client_gone_during_the_upload_is_a_499_logged_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeRetoucher()
    with live_server(create_app(ServeConfig(), loader=lambda: fake)) as base:
        caplog.set_level(logging.INFO)
        _raw_request(base, _encode()[:100], declared_length=100_000).close()
        _eventually(lambda: _metric(base, 499) == 1.0)
        assert _metric(base, 500) == 0.0
    records = [r for r in caplog.records if r.levelno >= logging.INFO and "disconnected" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO and records[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]


def test_an_image_whose_client_left_is_not_run_by_the_model() -> None:
    """The model busy with request A, request B is queued and its client hangs up: B's image is skipped."""
    fake = FakeRetoucher()
    with live_server(create_app(ServeConfig(max_batch=1, max_delay_ms=0), loader=lambda: fake)) as base:
        warmed = sum(fake.batch_sizes)
        fake.sleep_s = 1.0
        busy = _raw_request(base, _encode(), len(_encode()))
        _eventually(lambda: sum(fake.batch_sizes) == warmed + 1)  # A is in the model
        queued = _raw_request(base, _encode(), len(_encode()))  # B: whole body sent ...
        _eventually(lambda: "langbrt_queue_depth 1.0" in httpx.get(f"{base}/metrics").text)
        queued.close()  # ... then gone while B waits in the queue
        _eventually(lambda: _metric(base, 499) == 1.0)
        assert busy.recv(12) == b"HTTP/1.1 200"
        busy.close()
        fake.sleep_s = 0.0
        assert httpx.post(f"{base}/v1/retouch", content=_encode(), headers={"content-type": "image/png"},
                          timeout=10).status_code == 200  # C, after B would have run
        assert sum(fake.batch_sizes) == warmed + 2, fake.batch_sizes  # A and C; never B


class _BrokenRetoucher(FakeRetoucher):
    error: Exception = RuntimeError("a bug in the model code")

    def retouch(self, images: list[torch.Tensor], prompts: list[list[str]] | None = None) -> list[RetouchResult]:
        if images[0].shape[-1] == 40:  # requests, not the warm-up's 64x64 dummy
            raise self.error
        return super().retouch(images, prompts)


class _BrokenModelRetoucher(_BrokenRetoucher):
    error = CheckpointError("text encoder mismatch: a bug in the model files")


@pytest.mark.parametrize("retoucher", [_BrokenRetoucher, _BrokenModelRetoucher])
def test_a_bug_is_a_json_500_and_one_logged_traceback(caplog: pytest.LogCaptureFixture,
                                                      retoucher: type[_BrokenRetoucher]) -> None:
    """A broken model file is the server's fault too: a 500, not a 422 that blames the client's prompt."""
    with live_server(create_app(ServeConfig(), loader=retoucher)) as base:
        caplog.set_level(logging.INFO)
        response = httpx.post(f"{base}/v1/retouch", content=_encode(), headers={"content-type": "image/png"})
        _assert_error(response, 500, "internal")
        assert "a bug" not in response.text  # the details stay in the log
        assert _metric(base, 500) == 1.0
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1 and "unhandled error on POST /v1/retouch" in tracebacks[0].getMessage()


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_the_memory_probe_reports_each_steps_bytes_per_pixel(capsys: pytest.CaptureFixture[str]) -> None:
    """`benchmarks/serve_memory.py` is where the default pixel budget's bytes-per-pixel figure comes from."""
    report = serve_memory.main(["--megapixels", "1"])
    per_pixel = report["bytes_per_pixel"]
    assert report["pixels"] == 1000 * 1000 and report["prompts"] == 3
    # the decoded float32 RGB image alone is 12 bytes per pixel, and the request holds it throughout
    assert per_pixel["request_peak"] >= 12 and per_pixel["request_peak"] >= per_pixel["decode_peak"]
    assert json.loads(capsys.readouterr().out) == report


def test_an_image_over_max_pixels_is_413_not_a_retry_later_503(fake: FakeRetoucher) -> None:
    """It could never be admitted: the per-image limit answers before the in-flight budget is asked."""
    config = ServeConfig(max_pixels=IMAGE_PIXELS - 1, max_inflight_pixels=IMAGE_PIXELS - 1)
    with TestClient(create_app(config, loader=lambda: fake)) as client:
        _wait_ready(client)
        response = client.post("/v1/retouch", content=_encode(), headers={"content-type": "image/png"})
        _assert_error(response, 413, "too_many_pixels")


def test_the_inflight_default_follows_max_pixels_and_the_port_is_checked() -> None:
    from langbrt.runtime.cli_serve import _check, build_parser

    parser = build_parser()
    args = parser.parse_args(["--max-pixels", "200000000"])
    _check(args, parser)
    assert args.max_inflight_pixels == 400_000_000
    assert args.max_inflight_body_mb == 16 * 25
    with pytest.raises(SystemExit):
        _check(parser.parse_args(["--port", "70000"]), parser)


def test_a_body_budget_below_one_body_is_a_flag_error(capsys: pytest.CaptureFixture[str]) -> None:
    from langbrt.runtime.cli_serve import _check, build_parser

    parser = build_parser()
    with pytest.raises(SystemExit) as exited:
        _check(parser.parse_args(["--max-body-mb", "10", "--max-inflight-body-mb", "5"]), parser)
    assert exited.value.code == 2
    assert "--max-inflight-body-mb (5) must be at least --max-body-mb (10)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ bodies in flight


def _gauge(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def _status_line(conn: socket.socket) -> bytes:
    conn.settimeout(10)
    return conn.recv(12)


def _read_reply(conn: socket.socket) -> bytes:
    """A whole JSON error reply (head and body) from a raw connection."""
    reply = b""
    conn.settimeout(10)
    while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply


def test_an_upload_that_would_take_the_bodies_held_over_budget_is_503_until_the_first_ends() -> None:
    """A stalled upload holds the bytes it has sent; the next one is refused once its own bytes do not fit,
    whether it declared a length or streams chunks; after the first goes, both fit again."""
    fake = FakeRetoucher()
    image = _encode()
    config = ServeConfig(max_body_bytes=3 * len(image), max_inflight_body_bytes=3 * len(image))
    with live_server(create_app(config, loader=lambda: fake)) as base:
        stalled = _raw_request(base, image + b"\0" * len(image), declared_length=3 * len(image))
        _eventually(lambda: _gauge(base, "langbrt_inflight_body_bytes") == 2 * len(image))
        second = _raw_request(base, image + b"\0" * len(image), declared_length=2 * len(image))
        assert _status_line(second) == b"HTTP/1.1 503"
        second.close()

        def chunks() -> Iterator[bytes]:
            yield image[: len(image) // 2]
            yield image[len(image) // 2:]
            yield b"\0" * len(image)

        refused = httpx.post(f"{base}/v1/retouch", content=chunks(), headers={"content-type": "image/png"})
        _assert_error(refused, 503, "queue_full")
        assert refused.headers["retry-after"] == "1" and "of request bodies being held" in refused.text
        assert refused.headers["connection"] == "close"  # the rest of its body is never read
        stalled.close()
        _eventually(lambda: _gauge(base, "langbrt_inflight_body_bytes") == 0)
        accepted = httpx.post(f"{base}/v1/retouch", content=iter([image[:50], image[50:]]),
                              headers={"content-type": "image/png"}, timeout=10)
        assert accepted.status_code == 200, accepted.text
        assert _gauge(base, "langbrt_inflight_body_bytes") == 0


def test_a_declared_length_holds_nothing_until_its_bytes_arrive() -> None:
    """Headers alone (a large Content-Length, no body) must not lock everyone else out of the budget."""
    fake = FakeRetoucher()
    image = _encode()
    config = ServeConfig(max_body_bytes=2 * len(image), max_inflight_body_bytes=2 * len(image))
    with live_server(create_app(config, loader=lambda: fake)) as base:
        idle = [_raw_request(base, b"", declared_length=2 * len(image)) for _ in range(3)]
        response = httpx.post(f"{base}/v1/retouch", content=image, headers={"content-type": "image/png"},
                              timeout=10)
        assert response.status_code == 200, response.text
        assert _gauge(base, "langbrt_inflight_body_bytes") == 0
        for conn in idle:
            conn.close()


def test_a_body_framed_by_both_content_length_and_chunks_counts_every_byte() -> None:
    fake = FakeRetoucher()
    with live_server(create_app(ServeConfig(), loader=lambda: fake)) as base:
        host, port = base.removeprefix("http://").split(":")
        conn = socket.create_connection((host, int(port)))
        chunk = b"x" * 5000
        conn.sendall(b"POST /v1/retouch HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        try:  # h11 reads the chunked framing (it wins over Content-Length); what arrives is counted
            _eventually(lambda: _gauge(base, "langbrt_inflight_body_bytes") == len(chunk))
        finally:
            conn.close()


def test_an_upload_still_arriving_when_the_server_drains_is_503_at_once() -> None:
    fake = FakeRetoucher()
    app = create_app(ServeConfig(body_timeout_s=60), loader=lambda: fake)
    with live_server(app) as base:
        conn = _raw_request(base, _encode()[:100], declared_length=100_000)
        _eventually(lambda: _gauge(base, "langbrt_inflight_body_bytes") == 100)
        started = time.monotonic()
        drain(app)
        reply = _read_reply(conn)
        conn.close()
        assert reply.startswith(b"HTTP/1.1 503") and b"connection: close" in reply.lower()
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "shutting_down"
        assert time.monotonic() - started < 30  # not the 60 s idle timeout
        _assert_error(httpx.get(f"{base}/readyz"), 503, "shutting_down")


def test_an_upload_that_stalls_is_408_and_gives_its_bytes_back() -> None:
    fake = FakeRetoucher()
    with live_server(create_app(ServeConfig(body_timeout_s=0.3), loader=lambda: fake)) as base:
        started = time.monotonic()
        conn = _raw_request(base, _encode()[:100], declared_length=100_000)
        reply = _read_reply(conn)
        conn.close()
        assert reply.startswith(b"HTTP/1.1 408") and b"connection: close" in reply.lower()
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "body_timeout"
        assert time.monotonic() - started >= 0.3
        assert _metric(base, 408) == 1.0 and _gauge(base, "langbrt_inflight_body_bytes") == 0


class _GatedRetoucher(FakeRetoucher):
    """Holds each request's batch (not the warm-up's) in the model until `gate` opens."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.gate = threading.Event(), threading.Event()

    def retouch(self, images: list[torch.Tensor], prompts: list[list[str]] | None = None) -> list[RetouchResult]:
        if images[0].shape[-1] == 40:  # `_encode()`'s width: a request, not the 64x64 dummy
            self.entered.set()
            self.gate.wait(20)
        return super().retouch(images, prompts)


def test_a_request_cut_off_by_a_forced_shutdown_is_a_json_503_without_a_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    """A second Ctrl-C (uvicorn's force quit) cancels the requests still running; each was a plain-text 500
    and an 80-line "Exception in ASGI application" traceback, and the lifespan's cancellation one more."""
    fake = _GatedRetoucher()
    replies: list[httpx.Response] = []
    with live_uvicorn(create_app(ServeConfig(), loader=lambda: fake)) as (server, base):
        caplog.set_level(logging.INFO)
        client = threading.Thread(target=lambda: replies.append(httpx.post(
            f"{base}/v1/retouch", content=_encode(), headers={"content-type": "image/png"}, timeout=20)))
        client.start()
        assert fake.entered.wait(10)
        server.force_exit = server.should_exit = True  # what uvicorn's handler sets on the second SIGINT
        client.join(20)
        fake.gate.set()
    assert replies, "no reply"
    _assert_error(replies[0], 503, "shutting_down")
    assert replies[0].headers["connection"] == "close"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info is not None]
    assert not errors, [r.getMessage() for r in errors]
    assert [r.getMessage() for r in caplog.records if "cut off" in r.getMessage()] == [
        "POST /v1/retouch: cut off by the server's shutdown"]
