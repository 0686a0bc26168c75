"""The torch and ONNX Runtime backends on the same photos and prompts, over sizes and prompt counts: the same
output within a stated tolerance, and each keeps every pixel outside its mask bit for bit.

Tolerance: 1e-5 absolute on the image, mask and maps (range 1). Both run fp32 on the CPU; ONNX Runtime fuses
and reorders the same ops, which moved values by at most 2e-6 over this file's examples and the bundled model.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langbrt import LangBRT, LangBRTConfig
from langbrt.export.onnx_export import export_onnx
from langbrt.runtime import Retoucher
from langbrt.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from langbrt.runtime.backends.torch_backend import TorchBackend
from langbrt.text import default_text_encoder

ATOL = 1e-5
EXTRA_SLOTS = 2
# Pre-defined (their own mapping layer), a casing of one, then prompts outside the export's table (extra slots).
PROMPTS = ["acne on the cheeks", "Forehead  Wrinkles", "dark circles under the eyes", "a red spot on the nose",
           "freckles"]


@pytest.fixture(scope="module")
def retouchers(tmp_path_factory) -> tuple[Retoucher, Retoucher]:
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(map_threshold=0.2), text_encoder=default_text_encoder()).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("parity") / "tiny.onnx", extra_prompt_slots=EXTRA_SLOTS)
    return Retoucher(TorchBackend(model), batch_size=2), Retoucher(OnnxRuntimeBackend.load(path, device="cpu"),
                                                                  batch_size=2)


side = st.one_of(st.integers(1, 100), st.sampled_from([1, 3, 63, 64, 65, 700]))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.tuples(side, side), min_size=1, max_size=3), count=st.integers(1, len(PROMPTS)),
       reverse=st.booleans(), seed=st.integers(0, 2**16))
def test_torch_and_onnxruntime_agree_within_the_tolerance(retouchers, sizes, count, reverse, seed):
    photos = [torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed + i)) for i, (h, w) in enumerate(sizes)]
    prompts = PROMPTS[:count][::-1] if reverse else PROMPTS[:count]
    eager, onnx = (retoucher.retouch(photos, prompts) for retoucher in retouchers)
    for photo, a, b in zip(photos, eager, onnx, strict=True):
        assert a.prompts == b.prompts
        for name in ("image", "mask", "maps"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), atol=ATOL, rtol=0)
        for result in (a, b):
            outside = (result.mask == 0).expand_as(photo)
            assert torch.equal(result.image[outside], photo[outside])


def test_the_parity_photos_are_partly_mapped(retouchers):
    """Else the bit-for-bit half of the property above holds trivially."""
    [result] = retouchers[0].retouch([torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))], PROMPTS[:2])
    assert 0.2 < (result.mask > 0).float().mean().item() < 0.8
