"""`langbrt-eval`: one JSON object (unavailable metrics null, never 0), a table otherwise, clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from langbrt.config import LangBRTConfig
from langbrt.model import LangBRT
from langbrt.text import default_text_encoder
from langbrt.training.cli_eval import main

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder())
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "final")


def test_console_script_prints_one_json_object(checkpoint):
    proc = subprocess.run([BIN / "langbrt-eval", "--model", str(checkpoint), "--data", "synthetic",
                           "--num-samples", "8", "--json"], capture_output=True, text=True, timeout=90,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert {"psnr", "ssim", "lpips", "identity_psnr", "identity_psnr_blemish", "detection"} <= result.keys()
    assert result["lpips"] is None or result["lpips"] > 0
    assert result["identity_specificity_change"] == 0.0
    assert set(result["detection"]) == {"iou", "ap"}


def test_table_shows_model_beside_identity(checkpoint):
    result = CliRunner().invoke(main, ["--model", str(checkpoint), "--num-samples", "4"])
    assert result.exit_code == 0, result.output
    assert "identity" in result.output and "PSNR on blemishes" in result.output


def test_missing_model_is_one_error_line(tmp_path):
    result = CliRunner().invoke(main, ["--model", str(tmp_path / "nope"), "--json"])
    assert result.exit_code == 2 and result.output.startswith("Error: ") and result.output.count("\n") == 1


def test_empty_data_folder_is_one_error_line(checkpoint, tmp_path):
    (tmp_path / "source").mkdir()
    (tmp_path / "target").mkdir()
    result = CliRunner().invoke(main, ["--model", str(checkpoint), "--data", str(tmp_path)])
    assert result.exit_code == 2 and "holds no images" in result.output
