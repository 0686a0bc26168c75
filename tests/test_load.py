"""The CI-sized load test: a real `langbrt-serve` on a tiny CPU checkpoint, 4 clients for ~3 s.

The full-size run (paper model, GPU, minutes) uses the same script; see runtime/README-serve.md.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

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
    assert report["duration_s"] < 10, report  # the run stops by itself
    rss = report["server_rss_mb"]
    assert rss["start"] is not None and rss["end"] is not None, report
    assert rss["growth"] < MAX_RSS_GROWTH_MB, report


def test_the_load_script_takes_one_target_and_defaults_to_serving_the_bundled_model() -> None:
    load = _load_module()
    with pytest.raises(SystemExit):
        load.parse_args(["--url", "http://127.0.0.1:8080", "--model", "runs/langbrt/final"])
    args = load.parse_args(["--clients", "4"])
    assert args.url is None and args.model is None  # run_benchmark starts langbrt-serve without --model
