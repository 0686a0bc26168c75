"""`langbrt-bench`: one JSON report with environment, per-row latency/throughput/roofline and skipped rows.
A structure check on CPU, not a timed test."""

import json

import pytest
import torch

from langbrt import LangBRT, LangBRTConfig
from langbrt.export.onnx_export import export_onnx
from langbrt.runtime.cli_bench import main
from langbrt.text import default_text_encoder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder()).eval()
    model.save_pretrained(root / "ckpt")
    export_onnx(model, root / "tiny.onnx", extra_prompt_slots=1)
    return root / "ckpt", root / "tiny.onnx"


def test_bench_json_has_rows_for_each_loadable_backend_and_skips_the_rest(models, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--model", str(models[0]), "--model", str(models[1]), "--precision", "fp32", "fp16",
            "--batch-sizes", "1", "2", "--warmup", "1", "--seconds", "0.5", "--device", "cpu", "--json",
            "--out", str(out)]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == report
    assert set(report) == {"environment", "settings", "models", "rows", "skipped"}
    assert {"torch", "onnxruntime", "gpu", "driver", "cpu"} <= set(report["environment"])
    rows = {(r["backend"], r["precision"], r["batch_size"]): r for r in report["rows"]}
    assert set(rows) == {(b, "fp32", n) for b in ("torch", "onnxruntime") for n in (1, 2)}
    for row in rows.values():
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["images_per_s"] > 0 and row["calls"] >= 3
        assert row["flops_per_image"] > 0 and row["bytes_per_image"] > 0
        if not torch.cuda.is_available():
            assert row["bound_ms"] is None and row["achieved_fraction"] is None  # no CPU peak table
    assert {(s["backend"], s["precision"]) for s in report["skipped"]} == {("torch", "fp16"), ("onnxruntime", "fp16")}
    assert all(s["reason"] for s in report["skipped"])


def test_a_missing_model_is_one_line_exit_2(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nope")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
