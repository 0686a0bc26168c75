"""The torch and ONNX Runtime backends on the same photos and prompts, over sizes and prompt counts: the same
output within a stated tolerance, and each keeps every pixel outside its mask bit for bit.

The model is the bundled one, on crops and resizes of the example face: a random model's per-prompt maps are
all alike (and zero on noise), so they would not tell a swapped or misplaced map from the right one.

Tolerance: 5e-4 absolute on the image, mask and maps (range 1). Both run fp32 on the CPU; ONNX Runtime fuses
and reorders the same ops, which moves values by under 1e-5 on photos of common shapes. A photo of an extreme
aspect (700x1) moved a random tiny model's image by up to 1.4e-4: its letterboxed copy is nearly constant
along a row, so the GroupNorms divide by a small spread and carry the reordering's rounding further.
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langbrt import LangBRT
from langbrt.bundled import default_model_path
from langbrt.export.onnx_export import export_onnx
from langbrt.io import read_image
from langbrt.runtime import Retoucher

ATOL = 5e-4
FACE = read_image(Path(__file__).parents[1] / "examples" / "astronaut_face_blemished.png")  # (3, 200, 200)
# Pre-defined (their own mapping layer), a casing of one, prompts of the bundled bank, then prompts outside the
# export's table (its extra slots).
PROMPTS = ["acne on the cheeks", "Dark Circles  under the eyes", "forehead wrinkles", "acne on the left cheek",
           "a red spot on the nose", "little bumps near my mouth"]


@pytest.fixture(scope="module")
def retouchers(tmp_path_factory) -> tuple[Retoucher, Retoucher]:
    path = tmp_path_factory.mktemp("parity") / "bundled.onnx"
    export_onnx(LangBRT.from_pretrained(default_model_path()), path, extra_prompt_slots=2)
    return (Retoucher.load(default_model_path(), device="cpu", batch_size=2),
            Retoucher.load(path, device="cpu", batch_size=2))


def _photo(height: int, width: int, top: float, left: float) -> torch.Tensor:
    """A (height, width) crop of the example face at the relative place (top, left), or all of it resized
    when it is smaller than that."""
    _, H, W = FACE.shape
    if height > H or width > W:
        return F.interpolate(FACE[None], size=(height, width), mode="bilinear", align_corners=False)[0].clamp(0, 1)
    y, x = round(top * (H - height)), round(left * (W - width))
    return FACE[:, y : y + height, x : x + width].contiguous()


side = st.one_of(st.integers(1, 200), st.sampled_from([1, 2, 3, 199, 255, 256, 257, 700]))
place = st.floats(0.0, 1.0)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(photos=st.lists(st.builds(_photo, side, side, place, place), min_size=1, max_size=3),
       count=st.integers(1, len(PROMPTS)), reverse=st.booleans())
def test_torch_and_onnxruntime_agree_within_the_tolerance(retouchers, photos, count, reverse):
    prompts = PROMPTS[:count][::-1] if reverse else PROMPTS[:count]
    eager, onnx = (retoucher.retouch(photos, prompts) for retoucher in retouchers)
    for photo, a, b in zip(photos, eager, onnx, strict=True):
        assert a.prompts == b.prompts
        for name in ("image", "mask", "maps"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), atol=ATOL, rtol=0)
        for result in (a, b):
            outside = (result.mask == 0).expand_as(photo)
            assert torch.equal(result.image[outside], photo[outside])


def test_the_parity_photos_are_partly_mapped_and_each_prompt_has_its_own_map(retouchers):
    """Else the properties above hold trivially: an empty mask changes nothing, and maps alike cannot be told
    apart when a backend puts them in the wrong order."""
    [result] = retouchers[0].retouch([FACE], PROMPTS)
    assert 0.0 < (result.mask > 0).float().mean().item() < 0.5
    maps = result.maps.flatten(1)  # (K, H*W)
    assert all((maps[i] - maps[j]).abs().max() > 10 * ATOL for i in range(len(maps)) for j in range(i))
