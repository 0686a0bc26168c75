"""TensorRT engines, both attention exports, against the PyTorch model (GPU + TensorRT only).

Skipped cleanly where TensorRT or CUDA is missing, which so far is every machine this project has run
on: these tests are what the first session with both must run
(`pytest -m gpu tests/test_tensorrt_engine.py`).
"""

import importlib.util
import signal

import pytest
import torch

from langbrt import LangBRT, LangBRTConfig
from langbrt.export.build_progress import BuildProgress
from langbrt.export.exporter import ExportInterrupted, ExportOptions, export_model
from langbrt.export.tensorrt_export import read_engine_sidecar
from langbrt.runtime.backends import load_backend
from langbrt.text import default_text_encoder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="needs TensorRT"),
]
PROMPTS = ["dark circles under the eyes", "acne on the cheeks"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder()).eval()
    return model.save_pretrained(tmp_path_factory.mktemp("trt") / "ckpt")


@pytest.mark.parametrize("attention", ["subgraph", "plugin"])
def test_fp16_engine_matches_torch(checkpoint, tmp_path, attention):
    engine = tmp_path / f"tiny-{attention}.plan"
    options = ExportOptions(fp16=True, batch_sizes=(1, 2, 4), attention=attention)
    export_model(checkpoint, "engine", engine, options)
    sidecar = read_engine_sidecar(engine)
    assert sidecar.precision == "fp16" and sidecar.extras["attention"] == attention

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    expected = load_backend(str(checkpoint), device="cuda").run(images, [PROMPTS, PROMPTS[:1]])
    got = load_backend(str(engine), device="cuda").run(images, [PROMPTS, PROMPTS[:1]])
    for name in ("image", "mask", "maps"):
        torch.testing.assert_close(getattr(got, name).float().cpu(), getattr(expected, name).float().cpu(),
                                   atol=2e-2, rtol=2e-2)


def test_ctrl_c_stops_a_real_build_at_the_step_it_lands_in(checkpoint, tmp_path, monkeypatch):
    """Ctrl-C at TensorRT's first step is seen by that very step only if TensorRT calls the monitor on the
    thread running the build (build_progress.py); from its own threads, it would be seen after the build."""
    returned: list[bool] = []
    report = BuildProgress.step_complete

    def ctrl_c_at_first_step(self: BuildProgress, phase_name: str, step: int) -> bool:
        if not returned:
            signal.raise_signal(signal.SIGINT)
        returned.append(report(self, phase_name, step))
        return returned[-1]

    monkeypatch.setattr(BuildProgress, "step_complete", ctrl_c_at_first_step)
    with pytest.raises(ExportInterrupted):
        export_model(checkpoint, "engine", tmp_path / "m.plan", ExportOptions(fp16=True, batch_sizes=(1,)))
    assert returned and returned[0] is False, returned
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
