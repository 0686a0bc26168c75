"""`langbrt-serve`: the HTTP server (FastAPI on uvicorn) around one loaded model.

    langbrt-serve --model runs/langbrt/final            # http://127.0.0.1:8080/v1/retouch
    langbrt-serve --model model.engine --backend tensorrt --max-batch 16 --token "$TOKEN"

Listens on 127.0.0.1 unless told otherwise. SIGINT/SIGTERM shut down gracefully: uvicorn stops accepting,
finishes in-flight requests, then the batcher drains its queue, and the exit status is 0; a second SIGINT while
draining quits without waiting (uvicorn's force quit): the requests cut off get a 503, and the exit is 130.
Requests still running when the drain's time is up (--timeout-s + 5 s) are cut off the same way, exit 5.
Exits 1 with one line if the `serve` extra is not installed or the address is taken (both checked before the
model loads) or the model fails to load; 2 on a bad flag, or flags this machine cannot run (fp16 on a CPU, the
tensorrt backend without TensorRT or a GPU, a checkpoint given to onnxruntime), checked before the port is bound.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import torch

from langbrt.bundled import default_model_path
from langbrt.cli_args import (
    THREADS_HELP,
    DefaultsHelpFormatter,
    OneLineParser,
    device_arg,
    non_empty,
    non_negative_number,
    positive_int,
    positive_number,
)
from langbrt.cli_errors import fail
from langbrt.console import run_command
from langbrt.devices import require_device
from langbrt.errors import LangBRTError
from langbrt.exit_codes import EXIT_INTERRUPTED, EXIT_USAGE
from langbrt.io import DEFAULT_MAX_PIXELS

from .backends import check_backend
from .backends.base import PRECISIONS, BackendName
from .serve_admission import DEFAULT_MAX_BODY_BYTES, INFLIGHT_PER_MAX_BODY, INFLIGHT_PER_MAX_PIXELS

PROG = "langbrt-serve"
EXIT_NOT_SERVING = 1  # the port is taken or the model failed to load: not the flags' fault
EXIT_DRAIN_TIMED_OUT = 5  # SIGTERM/SIGINT's graceful shutdown ran out of time and cut requests off
MB = 1024 * 1024  # --max-body-mb and --max-inflight-body-mb count mebibytes
TOKEN_ENV = "LANGBRT_SERVE_TOKEN"
SERVER_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python-multipart": "python_multipart",
                   "prometheus-client": "prometheus_client"}  # the `serve` extra: pip name -> module


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Serve LangBRT over HTTP: POST /v1/retouch, GET /v1/prompts, /healthz, /readyz, /metrics.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--model", type=non_empty, help="checkpoint folder or .safetensors file, .onnx or TensorRT engine "
                   "(default: the bundled model)")
    p.add_argument("--backend", choices=[b.value for b in BackendName], default="auto",
                   help="inference backend; auto picks by file type")
    p.add_argument("--device", type=device_arg, default=None, help="e.g. cuda:0 or cpu (default: the backend's choice)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="default: fp32 for checkpoints, an export's own precision")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 exposes it to the network")
    p.add_argument("--port", type=int, default=8080, help="TCP port to listen on")
    p.add_argument("--max-batch", type=int, default=8, help="most images in one model call")
    p.add_argument("--max-delay-ms", type=non_negative_number, default=5.0,
                   help="how long the first request waits for others")
    p.add_argument("--queue-size", type=int, default=64, help="waiting images before answering 503")
    p.add_argument("--timeout-s", type=positive_number, default=30.0,
                   help="per-request limit (queue + model) before 504")
    p.add_argument("--max-body-mb", type=positive_number, default=DEFAULT_MAX_BODY_BYTES / MB,
                   help="largest request body before 413")
    p.add_argument("--max-inflight-body-mb", type=positive_number, default=None,
                   help="most bytes of request bodies held at once (being uploaded, or kept until the reply) before "
                   f"503; at least --max-body-mb (default: {INFLIGHT_PER_MAX_BODY} times --max-body-mb)")
    p.add_argument("--body-timeout-s", type=positive_number, default=60.0,
                   help="longest pause while a client sends its body before 408")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="largest W*H before 413")
    p.add_argument("--max-inflight-pixels", type=int, default=None,
                   help="most pixels of images held at once (decoded, queued, run, encoded; ~57 bytes each) "
                   "before 503; at least --max-pixels (default: twice --max-pixels, 128000000 with its default)")
    p.add_argument("--max-prompts", type=int, default=8, help="most prompts per request before 422")
    p.add_argument("--token", type=bearer_token, default=None,
                   help=f"require 'Authorization: Bearer TOKEN' on the API (or set {TOKEN_ENV}); probes stay open")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="the server's log lines on stderr")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N", help=THREADS_HELP)
    return p


def bearer_token(text: str) -> str:
    """A --token (or its environment variable) that a request can send back.

    Why: an empty `--token "$TOKEN"` with the variable unset served the API to anyone, on a public address
    with only a warning; a token with spaces or letters outside ASCII could never match, since clients send
    header values as Latin-1 bytes and the server reads them so, so every request was 401.
    """
    if not text:
        raise argparse.ArgumentTypeError("is empty; give the token clients will send, or leave the flag out")
    if not (text.isascii() and text.isprintable()) or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError("must be printable ASCII without spaces: an HTTP header cannot carry it")
    return text


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if not args.model:
        try:
            args.model = str(default_model_path())
        except LangBRTError as err:
            parser.error(str(err))
    if not Path(args.model).exists():
        parser.error(f"--model {args.model}: no such file or folder")
    if args.device is not None:
        try:
            require_device(args.device)  # before the port is bound and the model loads: a flag error, exit 2
        except LangBRTError as err:
            parser.error(str(err))
    for name in ("max_batch", "queue_size", "max_pixels", "max_prompts"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, got {args.port}")
    if args.max_inflight_pixels is None:
        args.max_inflight_pixels = INFLIGHT_PER_MAX_PIXELS * args.max_pixels
    if args.max_inflight_pixels < args.max_pixels:
        parser.error(f"--max-inflight-pixels ({args.max_inflight_pixels}) must be at least --max-pixels "
                     f"({args.max_pixels}), or the largest allowed image could never be admitted")
    if args.token is None and (from_env := os.environ.get(TOKEN_ENV)):
        try:
            args.token = bearer_token(from_env)
        except argparse.ArgumentTypeError as err:
            parser.error(f"{TOKEN_ENV} {err}")
    if args.max_inflight_body_mb is None:
        args.max_inflight_body_mb = INFLIGHT_PER_MAX_BODY * args.max_body_mb
    if args.max_inflight_body_mb < args.max_body_mb:
        parser.error(f"--max-inflight-body-mb ({args.max_inflight_body_mb:g}) must be at least --max-body-mb "
                     f"({args.max_body_mb:g}), or the largest allowed body could never be admitted")
    try:  # last: it imports the backend's library. A flag this machine cannot run (fp16 on a CPU, TensorRT
        # without a GPU) is exit 2 before the port is bound, as in langbrt-infer, not a model that failed to load.
        check_backend(args.model, args.backend, args.device, args.precision)
    except LangBRTError as err:
        parser.error(str(err))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a taken port fails in a second, in one line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise LangBRTError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart over TIME_WAIT
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise LangBRTError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    sock.set_inheritable(True)
    return sock


def _missing_server_packages() -> list[str]:
    """The `serve` extra's packages this environment lacks (pip names). Why: they are imported only after the
    port is bound, so a plain `pip install langbrt` used to log "listening on ..." and then die in a traceback."""
    missing = [package for package, module in SERVER_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if "python-multipart" in missing and importlib.util.find_spec("multipart") is not None:
        missing.remove("python-multipart")  # its releases before 0.0.13 install the module as `multipart`
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(args, parser)
    missing = _missing_server_packages()
    if missing:
        return fail(PROG, f"the server needs the serve extra ({', '.join(missing)} not installed): "
                          "pip install 'langbrt[serve]'", EXIT_NOT_SERVING)
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # before the model loads: the batcher and request threads start later
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    log = logging.getLogger("langbrt.serve")
    try:
        sock = _bind(args.host, args.port)
    except LangBRTError as err:
        return fail(PROG, err, EXIT_NOT_SERVING)
    if not _is_loopback(args.host) and args.token is None:  # after the bind: a failed one is its one line alone
        log.warning("listening on %s without --token: anyone who can reach it can use the model", args.host)
    host, port = sock.getsockname()[:2]
    log.info("listening on http://%s:%d (ready once the model has loaded: GET /readyz)",
             f"[{host}]" if ":" in host else host, port)
    with sock:  # closed however serving ends
        return _serve(args, args.token, sock)


def _serve(args: argparse.Namespace, token: str | None, sock: socket.socket) -> int:
    """Import the server, build the app and run it on `sock` until shutdown; the exit status."""
    try:
        import uvicorn  # late: `--help` and flag errors stay instant

        from .serve_app import create_app, drain
        from .serve_config import ServeConfig
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted while starting", file=sys.stderr)
        return EXIT_INTERRUPTED

    config = ServeConfig(
        model=args.model, backend=args.backend, device=args.device, precision=args.precision,
        max_batch=args.max_batch, max_delay_ms=args.max_delay_ms, queue_size=args.queue_size,
        timeout_s=args.timeout_s, max_body_bytes=int(args.max_body_mb * MB),
        max_inflight_body_bytes=int(args.max_inflight_body_mb * MB), body_timeout_s=args.body_timeout_s,
        max_pixels=args.max_pixels, max_inflight_pixels=args.max_inflight_pixels, max_prompts=args.max_prompts,
        token=token,
    )
    failed: list[str] = []

    def on_load_failure(message: str) -> None:
        failed.append(message)
        server.should_exit = True  # uvicorn then shuts down as on SIGTERM

    try:
        app = create_app(config, on_load_failure=on_load_failure)
    except LangBRTError as err:
        return fail(PROG, err, EXIT_USAGE)
    class DrainingServer(uvicorn.Server):
        """uvicorn's server, telling the app the moment a shutdown signal arrives (`serve_app.drain`)."""

        def handle_exit(self, sig: int, frame: object) -> None:
            drain(app)
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    # in-flight requests mostly end by then: 504 after timeout_s, uploads still arriving at once (503)
    grace_s = int(args.timeout_s) + 5
    server = DrainingServer(uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=grace_s,
    ))
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler it found.
    # Found handlers that do nothing make a completed graceful shutdown exit 0 instead of dying by signal.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    if failed:
        return fail(PROG, f"model failed to load: {failed[0]}", EXIT_NOT_SERVING)
    if server.force_exit:
        # Why not 0: a supervisor (systemd, a CI job, load.py) must tell a drain that finished every request from
        # one that cut requests off. uvicorn forces the quit only on a second SIGINT: 128 + SIGINT.
        print(f"{PROG}: forced to quit before the drain finished: requests still running were cut off",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if cut_off := app.state.serve.cut_off:
        # The same loss with no second signal: uvicorn stopped waiting after timeout_graceful_shutdown and
        # cancelled what still ran (a reply still encoding or being sent; the batcher's own timeout answers 504
        # before then). Its own status: a drain too short for the work, not an operator's forced quit.
        print(f"{PROG}: the graceful shutdown timed out after {grace_s} s: {cut_off} request(s) still running "
              "were cut off", file=sys.stderr)
        return EXIT_DRAIN_TIMED_OUT
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
