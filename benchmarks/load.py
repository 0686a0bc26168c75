"""Load test for `langbrt-serve`: N concurrent clients for T seconds, then throughput, latency and memory.

    python benchmarks/load.py --clients 8 --duration 30                                  # serves the bundled model
    python benchmarks/load.py --model runs/tiny/final --clients 8 --duration 30          # serves this model
    python benchmarks/load.py --url http://127.0.0.1:8080 --clients 32 --duration 60      # drives a running one

Bounded on purpose: it stops after `--duration` seconds or `--max-requests` requests, whichever comes
first, and talks only to the URL given (or to the loopback server it started). Every 200 reply is decoded
as an image, so a server that answers fast with garbage does not look good. Server memory (RSS) is read at
start and end from /proc (or psutil) when the PID is known, else from the server's /metrics
(`process_resident_memory_bytes`). The report is one JSON object on stdout (or in `--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from langbrt.atomic import atomic_write_text
from langbrt.cli_args import DefaultsHelpFormatter


@dataclass
class _Tally:
    """What the clients record; appended to from one event loop, so no locking."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    undecodable: int = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    target = p.add_mutually_exclusive_group()
    target.add_argument("--url", help="base URL of a running server")
    target.add_argument("--model", help="start langbrt-serve on this model, on a free loopback port "
                        "(default, without --url: on the bundled model)")
    p.add_argument("--backend", default="auto", help="with --model: the server's --backend")
    p.add_argument("--server-arg", action="append", default=[], help="with --model: extra langbrt-serve flag")
    p.add_argument("--server-pid", type=int, default=None, help="with --url: PID to read RSS from")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients, each sending back to back")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    p.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests in total")
    p.add_argument("--warmup-requests", type=int, default=8,
                   help="sent (not counted) before the start RSS, so allocator warm-up is not reported as growth")
    p.add_argument("--image", type=Path, default=None, help="image to send (default: a synthetic JPEG)")
    p.add_argument("--size", type=int, default=512, help="side of the synthetic image")
    p.add_argument("--prompt", action="append", default=[], help="prompt to send; repeat (default: the model's)")
    p.add_argument("--return", dest="return_kind", choices=("image", "json"), default="image")
    p.add_argument("--token", default=os.environ.get("LANGBRT_SERVE_TOKEN"), help="bearer token, if required")
    p.add_argument("--request-timeout", type=float, default=60.0)
    p.add_argument("--ready-timeout", type=float, default=180.0, help="with --model: wait this long for /readyz")
    p.add_argument("--out", type=Path, default=None, help="write the JSON report here instead of stdout")
    args = p.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.max_requests < 1:
        p.error("--clients and --max-requests must be >= 1 and --duration > 0")
    return args


def synthetic_jpeg(size: int, seed: int = 0) -> bytes:
    """A smooth random 'face-sized' JPEG: realistic encode/decode cost without shipping a photo."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(60, 200, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ memory


def rss_from_pid(pid: int) -> float | None:
    """Resident memory in MB: psutil when installed, else VmRSS from /proc; None if neither works."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - the process is gone: no reading
        return None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB -> MB
    return None


def rss_from_metrics(client: httpx.Client, url: str) -> float | None:
    with contextlib.suppress(httpx.HTTPError):
        for line in client.get(f"{url}/metrics").text.splitlines():
            if line.startswith("process_resident_memory_bytes "):
                return float(line.split()[1]) / 2**20
    return None


# ------------------------------------------------------------------------------------------ load


async def _client_loop(client: httpx.AsyncClient, url: str, payload: bytes, params: dict[str, Any],
                       deadline: float, budget: list[int], tally: _Tally) -> None:
    headers = {"content-type": "image/jpeg"}
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        started = time.perf_counter()
        try:
            response = await client.post(f"{url}/v1/retouch", content=payload, params=params, headers=headers)
        except httpx.HTTPError as err:
            tally.transport_errors[type(err).__name__] += 1
            continue
        tally.latencies_ms.append((time.perf_counter() - started) * 1e3)
        tally.statuses[response.status_code] += 1
        if response.status_code == 200 and not _decodes(response):
            tally.undecodable += 1
        elif response.status_code == 503:
            await asyncio.sleep(float(response.headers.get("retry-after", "1")) / 10)  # back off a little


def _decodes(response: httpx.Response) -> bool:
    try:
        if response.headers.get("content-type", "").startswith("application/json"):
            import base64

            data = base64.b64decode(response.json()["image"])
        else:
            data = response.content
        Image.open(io.BytesIO(data)).load()
        return True
    except Exception:  # noqa: BLE001 - any failure to decode is what we count
        return False


async def drive(url: str, args: argparse.Namespace, payload: bytes) -> tuple[_Tally, float]:
    """Run `args.clients` loops until the deadline or the request budget; returns the tally and wall seconds."""
    tally = _Tally()
    params: dict[str, Any] = {"return": args.return_kind}
    if args.prompt:
        params["prompt"] = args.prompt
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    budget = [args.max_requests]
    async with httpx.AsyncClient(timeout=args.request_timeout, limits=limits, headers=headers) as client:
        started = time.monotonic()
        deadline = started + args.duration
        await asyncio.gather(*(_client_loop(client, url, payload, params, deadline, budget, tally)
                               for _ in range(args.clients)))
        return tally, time.monotonic() - started


def summarize(tally: _Tally, wall_s: float, rss_start: float | None, rss_end: float | None,
              args: argparse.Namespace, url: str) -> dict[str, Any]:
    lat = np.asarray(tally.latencies_ms) if tally.latencies_ms else np.zeros(1)
    ok = tally.statuses.get(200, 0)
    return {
        "url": url,
        "clients": args.clients,
        "duration_s": round(wall_s, 3),
        "requests": int(sum(tally.statuses.values())),
        "ok": ok,
        "requests_per_s": round(ok / wall_s, 2) if wall_s > 0 else 0.0,
        "latency_ms": {name: round(float(np.percentile(lat, q)), 2) for name, q in
                       (("p50", 50), ("p90", 90), ("p99", 99))} | {"max": round(float(lat.max()), 2)},
        "status_counts": {str(k): v for k, v in sorted(tally.statuses.items())},
        "errors_by_status": {str(k): v for k, v in sorted(tally.statuses.items()) if k != 200},
        "transport_errors": dict(tally.transport_errors),
        "undecodable_200": tally.undecodable,
        "server_rss_mb": {"start": _round(rss_start), "end": _round(rss_end),
                          "growth": _round(rss_end - rss_start if rss_start and rss_end else None)},
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


# ------------------------------------------------------------------------------------------ server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def started_server(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """`langbrt-serve` on a free loopback port; yields (url, pid); SIGINT (graceful) on the way out."""
    port = _free_port()
    model = ["--model", args.model] if args.model else []  # none: the server's bundled model
    cmd = [sys.executable, "-m", "langbrt.runtime.cli_serve", *model, "--backend", args.backend,
           "--port", str(port), "--log-level", "warning", *args.server_arg]
    env = dict(os.environ)
    if args.token:
        env["LANGBRT_SERVE_TOKEN"] = args.token
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, args.ready_timeout)
        yield url, proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise SystemExit(f"load.py: the server exited with code {proc.returncode}: {err.strip()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"load.py: the server was not ready within {timeout_s:g} s")


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    payload = args.image.read_bytes() if args.image else synthetic_jpeg(args.size)
    with contextlib.ExitStack() as stack:
        if args.url is None:
            url, pid = stack.enter_context(started_server(args))
        else:
            url, pid = args.url.rstrip("/"), args.server_pid
        headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
        with httpx.Client(timeout=10, headers=headers) as probe:

            def rss() -> float | None:
                return rss_from_pid(pid) if pid else rss_from_metrics(probe, url)

            if args.warmup_requests > 0:
                warmup = argparse.Namespace(**{**vars(args), "max_requests": args.warmup_requests,
                                               "duration": max(args.duration, args.request_timeout)})
                asyncio.run(drive(url, warmup, payload))
            rss_start = rss()
            tally, wall_s = asyncio.run(drive(url, args, payload))
            rss_end = rss()
        return summarize(tally, wall_s, rss_start, rss_end, args, url)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_benchmark(args)
    text = json.dumps(report, indent=2)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
