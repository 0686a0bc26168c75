"""The CI-sized load test: a real `langbrt-serve` on a tiny CPU checkpoint, 4 clients for ~3 s.

The full-size run (paper model, GPU, minutes) uses the same script; see runtime/README-serve.md.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import torch
from PIL import Image

from langbrt.config import LangBRTConfig
from langbrt.model import LangBRT

MAX_RSS_GROWTH_MB = 200.0
"""A few hundred requests must not grow the server by more than this (leaked tensors/uploads would)."""


def _load_module() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "load.py"
    spec = importlib.util.spec_from_file_location("langbrt_benchmarks_load", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_short_load_run_has_no_server_errors_decodable_replies_and_bounded_memory(tmp_path: Path) -> None:
    torch.manual_seed(0)
    checkpoint = LangBRT(LangBRTConfig.tiny()).save_pretrained(tmp_path / "tiny")
    load = _load_module()
    args = load.parse_args(["--model", str(checkpoint), "--backend", "torch", "--clients", "4", "--duration", "3",
                            "--max-requests", "2000", "--size", "128", "--request-timeout", "20"])
    report = load.run_benchmark(args)

    assert report["ok"] > 0, report
    server_errors = {s: n for s, n in report["errors_by_status"].items() if int(s) >= 500 and s != "503"}
    assert not server_errors and not report["transport_errors"], report
    assert report["undecodable_200"] == 0, report
    attempts = report["requests"] + sum(report["transport_errors"].values())
    assert attempts <= args.max_requests, report
    assert report["duration_s"] >= args.duration or attempts == args.max_requests, report  # stopped at a limit
    rss = report["server_rss_mb"]
    assert rss["start"] is not None and rss["end"] is not None, report
    assert rss["growth"] < MAX_RSS_GROWTH_MB, report


def _mock_transport(monkeypatch, load: ModuleType) -> list[int]:
    """Every AsyncClient `drive` opens answers each request at once with a small PNG; returns the call log."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    calls: list[int] = []

    def reply(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, content=buf.getvalue(), headers={"content-type": "image/png"})

    real = httpx.AsyncClient
    monkeypatch.setattr(load.httpx, "AsyncClient", lambda **kw: real(transport=httpx.MockTransport(reply), **kw))
    return calls


def test_the_request_budget_caps_the_requests_of_all_clients(monkeypatch) -> None:
    """--max-requests is a hard cap shared by all clients: exactly that many requests go out, then every loop
    ends (a run that ignored it would keep sending for the whole --duration)."""
    load = _load_module()
    calls = _mock_transport(monkeypatch, load)
    args = load.parse_args(["--url", "http://load.test", "--clients", "4", "--duration", "30", "--max-requests", "7"])
    tally, _ = asyncio.run(load.drive(args.url, args, b"payload"))
    assert len(calls) == 7 and tally.statuses == {200: 7} and tally.undecodable == 0


def test_the_duration_ends_the_run_when_the_budget_is_not_spent(monkeypatch) -> None:
    load = _load_module()
    calls = _mock_transport(monkeypatch, load)
    args = load.parse_args(["--url", "http://load.test", "--clients", "2", "--duration", "0.2",
                            "--max-requests", "100000000"])
    tally, wall_s = asyncio.run(load.drive(args.url, args, b"payload"))
    assert wall_s >= args.duration - 1e-9  # no loop stops before the deadline (less float rounding)
    assert len(calls) == sum(tally.statuses.values()) < args.max_requests  # every reply tallied; not the budget


def test_the_load_script_takes_one_target_and_defaults_to_serving_the_bundled_model() -> None:
    load = _load_module()
    with pytest.raises(SystemExit):
        load.parse_args(["--url", "http://127.0.0.1:8080", "--model", "runs/langbrt/final"])
    args = load.parse_args(["--clients", "4"])
    assert args.url is None and args.model is None  # run_benchmark starts langbrt-serve without --model
