"""The model that ships in the package: every tool uses it when no model is named."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from langbrt import LangBRT
from langbrt.bundled import DEFAULT_MODEL_DIR, default_model_path
from langbrt.io import read_image
from langbrt.runtime import Retoucher

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "examples" / "astronaut_face_blemished.png"


def test_bundled_model_is_small_enough_to_ship():
    size = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir())
    assert size < 25 * 2**20


def test_bundled_model_loads_and_knows_the_predefined_prompts():
    model = LangBRT.from_pretrained(default_model_path())
    assert model.config.image_size == 256
    assert set(model.predefined_prompts) <= set(model.prompt_bank.texts)


def test_retoucher_without_a_path_uses_the_bundled_model():
    retoucher = Retoucher.load()
    [result] = retoucher.retouch([read_image(EXAMPLE)], ["dark circles under the eyes"])
    assert result.image.shape == (3, 200, 200)
    assert 0 < float((result.mask > 0).float().mean()) < 0.5  # it edits part of the face, not all of it


def test_infer_without_model_retouches_the_example(tmp_path):
    result = subprocess.run(
        [BIN / "langbrt-infer", str(EXAMPLE), "--prompt", "acne on the cheeks", "--save-maps", "-o", str(tmp_path),
         "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    [entry] = json.loads(result.stdout)["results"]
    out = read_image(entry["output"])
    assert out.shape == (3, 200, 200) and not torch.equal(out, read_image(EXAMPLE))
    assert Path(entry["mask"]).is_file() and len(entry["maps"]) == 1
