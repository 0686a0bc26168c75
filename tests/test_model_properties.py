"""The README's promise as properties over sizes, dtypes and batches: "where the map is 0 the output is the
input, bit for bit", the same output twice, no NaN, and every size the model cannot take refused with one
`LangBRTInputError` line rather than an error from inside the network.

The model is the tiny preset with random weights and a map threshold (0.2) that its random detector crosses
on about half the pixels for two prompts, so both sides of the gate are exercised (at the default 0.1 every
pixel is mapped; `test_the_fixture_maps_part_of_the_pixels` keeps it so).
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stand_in_text import HashedTextEncoder

from langbrt import LangBRT, LangBRTConfig, LangBRTInputError
from langbrt.runtime import Retoucher
from langbrt.runtime.backends.torch_backend import TorchBackend

STRIDE = 4  # LangBRTConfig.tiny(): two encoder stages
PROMPTS = ["acne on the cheeks", "forehead wrinkles", "a red spot on the nose"]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def model() -> LangBRT:
    torch.manual_seed(0)
    return LangBRT(LangBRTConfig.tiny(map_threshold=0.2), text_encoder=HashedTextEncoder()).eval()


@pytest.fixture(scope="module")
def retoucher(model: LangBRT) -> Retoucher:
    return Retoucher(TorchBackend(model), batch_size=2)


def _unchanged_outside(image: torch.Tensor, mask: torch.Tensor, original: torch.Tensor) -> bool:
    """image, original (..., 3, H, W); mask (..., 1, H, W): equal bit for bit wherever the mask is 0."""
    outside = (mask == 0).expand_as(original)
    return bool(torch.equal(image[outside], original[outside]))


def test_the_fixture_maps_part_of_the_pixels(model):
    """Else the properties below hold trivially: an all-zero or all-one mask leaves nothing to check."""
    images = torch.rand(2, 3, 64, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mapped = (model(images, [PROMPTS[:2]] * 2).mask > 0).float().mean().item()
    assert 0.2 < mapped < 0.8


latent_side = st.integers(2, 24)  # in latent cells; 24 * 4 = 96 pixels
extreme_side = st.sampled_from([1, 2, 100, 225])


@SETTINGS
@given(rows=st.one_of(latent_side, extreme_side), cols=st.one_of(latent_side, extreme_side),
       batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_the_model_keeps_shape_and_every_unmapped_pixel_and_repeats_itself(model, rows, cols, batch, seed):
    if rows == cols == 1:
        rows = 2  # a 1x1 latent is refused (test below)
    images = torch.rand(batch, 3, rows * STRIDE, cols * STRIDE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        first, again = model(images, [PROMPTS[:2]] * batch), model(images, [PROMPTS[:2]] * batch)
    assert first.image.shape == images.shape and first.image.dtype == images.dtype
    assert first.mask.shape == (batch, 1, *images.shape[-2:]) and first.maps.shape == (batch, 2, *images.shape[-2:])
    assert _unchanged_outside(first.image, first.mask, images)
    assert bool(first.image.isfinite().all()) and bool(first.maps.isfinite().all())
    assert torch.equal(first.image, again.image) and torch.equal(first.mask, again.mask)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_model_moved_to_another_float_dtype_keeps_that_dtype_and_the_unmapped_pixels(model, dtype):
    images = torch.rand(2, 3, 40, 24, generator=torch.Generator().manual_seed(1)).to(dtype)
    moved = LangBRT(model.config, prompt_bank=model.prompt_bank)
    moved.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = moved.to(dtype).eval()(images, [PROMPTS[:1]] * 2)
    assert out.image.dtype == dtype and bool(out.image.isfinite().all())
    assert _unchanged_outside(out.image, out.mask, images)


@SETTINGS
@given(height=st.integers(1, 40), width=st.integers(1, 40))
def test_every_size_the_model_cannot_take_is_one_input_error(model, height, width):
    images = torch.rand(1, 3, height, width)
    fits = height % STRIDE == 0 and width % STRIDE == 0 and (height, width) != (STRIDE, STRIDE)
    if fits:
        with torch.no_grad():
            assert model(images, [PROMPTS[:1]]).image.shape == images.shape
    else:
        with pytest.raises(LangBRTInputError, match=r"image size \(\d+, \d+\)"):
            model(images, [PROMPTS[:1]])


photo_side = st.one_of(st.integers(1, 90), st.sampled_from([1, 2, 3, 7, 63, 65, 300, 900]))
photo_dtype = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.uint8, torch.uint16])


def _photo(height: int, width: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    unit = torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))
    if dtype == torch.uint8:
        return (unit * 255).round().to(torch.uint8)
    if dtype == torch.uint16:
        return (unit * 65535).round().to(torch.int32).to(torch.uint16)
    return unit.to(dtype)


def _as_float32(photo: torch.Tensor) -> torch.Tensor:
    scale = {torch.uint8: 255.0, torch.uint16: 65535.0}.get(photo.dtype, 1.0)
    return photo.float() / scale if scale != 1.0 else photo.float()


@SETTINGS
@given(sizes=st.lists(st.tuples(photo_side, photo_side), min_size=1, max_size=3), dtype=photo_dtype,
       count=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_the_retoucher_gives_each_photo_back_at_its_size_unchanged_outside_its_mask(retoucher, sizes, dtype,
                                                                                     count, seed):
    photos = [_photo(h, w, dtype, seed + i) for i, (h, w) in enumerate(sizes)]
    results = retoucher.retouch(photos, PROMPTS[:count])
    again = retoucher.retouch(photos, PROMPTS[:count])
    for photo, result, repeat in zip(photos, results, again, strict=True):
        H, W = photo.shape[-2:]
        assert result.image.shape == (3, H, W) and result.image.dtype == torch.float32
        assert result.mask.shape == (1, H, W) and result.maps.shape == (count, H, W)
        assert _unchanged_outside(result.image, result.mask, _as_float32(photo))
        assert bool(result.image.isfinite().all()) and bool(result.maps.isfinite().all())
        assert torch.equal(result.image, repeat.image)
