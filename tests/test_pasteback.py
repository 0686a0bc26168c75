"""Letterbox and paste-back: any photo size in, the retouch applied at full resolution, and every pixel
outside the upsampled mask bit-identical to the input."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from langbrt.errors import LangBRTInputError
from langbrt.runtime import Retoucher
from langbrt.runtime.backends.base import BackendOutput
from langbrt.runtime.preprocess import (
    Letterbox,
    _crop,
    _resize,
    letterbox,
    letterbox_geometry,
    nonzero_box,
    paste_back,
    upsample_maps,
)

S = 64


class DiscBackend:
    """A stand-in network: brightens a centred disc of the model input by `delta`, mask 1 there, 0 elsewhere."""

    name = "fake"
    device = "cpu"
    image_size = S
    prompts = predefined_prompts = ["acne on the cheeks"]

    def __init__(self, delta: float = 0.1, radius: float = 0.25) -> None:
        yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
        self.disc = (((yy - S / 2) ** 2 + (xx - S / 2) ** 2) < (radius * S) ** 2).float()[None]  # (1, S, S)
        self.delta = delta

    def prepare_prompts(self, prompts: object) -> None:
        pass  # any prompt runs

    def run(self, images: torch.Tensor, prompts: Sequence[Sequence[str]]) -> BackendOutput:
        B = images.shape[0]
        mask = self.disc.expand(B, 1, S, S)
        K = max(len(p) for p in prompts)
        return BackendOutput(image=(images + self.delta * mask).clamp(0, 1), mask=mask,
                             maps=mask.expand(B, K, S, S).clone())


def _identical_outside(result_image: torch.Tensor, mask: torch.Tensor, original: torch.Tensor) -> bool:
    outside = mask[0] == 0  # (H, W)
    return bool(torch.equal(result_image[:, outside], original[:, outside]))


@pytest.mark.parametrize(("height", "width"), [(64, 64), (37, 1001), (1001, 37), (1, 1), (20, 30)])
def test_letterbox_keeps_aspect_and_centres_the_photo(height, width):
    box = letterbox_geometry(height, width, S)
    assert max(box.height, box.width) == S
    assert abs(box.height / box.width - height / width) <= max(1 / box.width, 1 / box.height) * (height / width + 1)
    assert box.top == (S - box.height) // 2 and box.left == (S - box.width) // 2
    x, _ = letterbox(torch.rand(3, height, width), S)
    assert x.shape == (3, S, S)


@settings(max_examples=40, deadline=None)
@given(height=st.integers(1, 200), width=st.integers(1, 200), seed=st.integers(0, 2**16),
       zero_fraction=st.floats(0.0, 1.0))
def test_pixels_outside_the_upsampled_mask_are_bit_identical(height, width, seed, zero_fraction):
    g = torch.Generator().manual_seed(seed)
    original = torch.rand(3, height, width, generator=g)
    x, box = letterbox(original, S)
    blocks = (torch.rand(1, 1, 8, 8, generator=g) >= zero_fraction).float()
    mask = torch.nn.functional.interpolate(blocks, size=(S, S))[0] * torch.rand(1, S, S, generator=g)  # (1, S, S)
    output = torch.rand(3, S, S, generator=g)  # any output: only where mask > 0 may it matter
    image, full_mask = paste_back(original, x, output, mask, box)
    assert image.shape == original.shape and full_mask.shape == (1, height, width)
    # the mask returned is the model's, upsampled: a mask that covered everything would leave "outside" empty
    assert torch.equal(full_mask == 0, upsample_maps(mask, box) == 0)
    assert _identical_outside(image, full_mask, original)
    assert image.min() >= 0 and image.max() <= 1


def _paste_back_whole_frame(original: torch.Tensor, model_input: torch.Tensor, output: torch.Tensor,
                            mask: torch.Tensor, box: Letterbox) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: `paste_back` as it was before it worked in the mask's box, blending every pixel."""
    low_mask = _crop(mask.float(), box).clamp(0.0, 1.0)  # (1, h, w)
    delta = torch.where(low_mask > 0, _crop(output.float() - model_input.float(), box), 0.0)  # (3, h, w)
    up = _resize(torch.cat([delta, low_mask]), box.full_height, box.full_width)  # (4, H, W)
    full_mask = up[3:].clamp(0.0, 1.0)  # (1, H, W)
    retouched = (up[:3] + original).clamp(0.0, 1.0)  # (3, H, W)
    return torch.where(full_mask > 0, retouched, original), full_mask


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 300), width=st.integers(1, 300), seed=st.integers(0, 2**16),
       spots=st.integers(0, 3), spot_size=st.integers(1, S))
def test_paste_back_is_bit_identical_to_blending_the_whole_frame(height, width, seed, spots, spot_size):
    """Working in the box of the non-zero mask changes no value, inside the mask or out, whether the box is
    small (blended in the box) or most of the photo (blended over the whole frame)."""
    g = torch.Generator().manual_seed(seed)
    original = torch.rand(3, height, width, generator=g)
    x, box = letterbox(original, S)
    mask = torch.zeros(1, S, S)
    for _ in range(spots):  # a few soft blobs anywhere, edges included, up to the whole model input
        top, left = (int(v) for v in torch.randint(0, S, (2,), generator=g))
        mask[:, top : top + spot_size, left : left + spot_size] = torch.rand(1, 1, 1, generator=g)
    output = torch.rand(3, S, S, generator=g)
    image, full_mask = paste_back(original, x, output, mask, box)
    expected_image, expected_mask = _paste_back_whole_frame(original, x, output, mask, box)
    assert torch.equal(image, expected_image) and torch.equal(full_mask, expected_mask)


def test_paste_back_returns_a_new_tensor_and_leaves_the_original_alone():
    original = torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(3))
    before = original.clone()
    x, box = letterbox(original, S)
    image, _ = paste_back(original, x, torch.rand(3, S, S), torch.zeros(1, S, S), box)
    image[:] = 0.5
    assert torch.equal(original, before)


@pytest.mark.parametrize(("points", "expected"), [
    ([], None),
    ([(0, 0)], (slice(0, 1), slice(0, 1))),
    ([(3, 7), (5, 2)], (slice(3, 6), slice(2, 8))),
    ([(9, 11)], (slice(9, 10), slice(11, 12))),
])
def test_nonzero_box_is_the_smallest_box_around_the_non_zero_values(points, expected):
    plane = torch.zeros(10, 12)
    for row, col in points:
        plane[row, col] = 0.25
    assert nonzero_box(plane) == expected


def test_a_zero_mask_returns_the_input_unchanged():
    original = torch.rand(3, 50, 70)
    x, box = letterbox(original, S)
    image, full_mask = paste_back(original, x, torch.rand(3, S, S), torch.zeros(1, S, S), box)
    assert torch.equal(image, original) and not full_mask.any()


def test_upsampled_maps_are_zero_where_the_low_res_maps_are_zero():
    _, box = letterbox(torch.rand(3, 300, 200), S)
    maps = torch.zeros(2, S, S)
    maps[0, 30:34, 30:34] = 1.0
    full = upsample_maps(maps, box)  # (2, 300, 200)
    assert full.shape == (2, 300, 200) and not full[1].any() and 0 < (full[0] > 0).float().mean() < 0.05


@pytest.mark.parametrize(("height", "width"), [(3000, 4000), (37, 1001), (1001, 37), (5, 3)])
def test_retoucher_leaves_every_pixel_outside_the_mask_identical(height, width):
    original = torch.rand(3, height, width, generator=torch.Generator().manual_seed(height))
    [result] = Retoucher(DiscBackend()).retouch([original])
    assert result.image.shape == (3, height, width) and result.mask.shape == (1, height, width)
    assert result.maps.shape == (1, height, width)
    assert (result.mask > 0).any() and ((result.mask == 0).any() or height * width < 100)  # tiny: all covered
    assert _identical_outside(result.image, result.mask, original)


def test_a_12_megapixel_photo_keeps_its_detail_inside_the_retouched_area():
    """The change is upsampled, not the low-res output: inside the disc the result is original + delta."""
    original = torch.rand(3, 3000, 4000, generator=torch.Generator().manual_seed(0)) * 0.8  # room for +0.1
    [result] = Retoucher(DiscBackend(delta=0.1)).retouch([original])
    inside = result.mask[0] == 1.0  # (H, W): the disc's interior, away from its soft edge
    assert inside.float().mean() > 0.05
    change = (result.image - original)[:, inside]
    np.testing.assert_allclose(change.numpy(), 0.1, atol=1e-5)  # full-resolution texture survives


@pytest.mark.parametrize(("image", "message"), [
    (torch.randint(0, 256, (3, 8, 8), dtype=torch.int32), "torch.int32 tensors are not taken"),
    (torch.rand(3, 8, 8) > 0.5, "torch.bool tensors are not taken"),
    (torch.rand(3, 8, 8) * 255, r"found \[.*\]; divide it by 255"),
    (torch.rand(3, 8, 8) - 0.5, r"found \[.*\]; clamp it to \[0, 1\]"),
    (torch.full((3, 8, 8), float("nan")), "NaN or infinite"),
    (torch.full((3, 8, 8), float("inf")), "NaN or infinite"),
    (torch.zeros(3, 0, 8), "has no pixels"),
])
def test_an_image_that_is_not_unit_float_uint8_or_uint16_is_one_input_error(image, message):
    """Not clamped into a white or black model input and returned as if retouched."""
    with pytest.raises(LangBRTInputError, match=f"image 1: .*{message}"):
        Retoucher(DiscBackend()).retouch([torch.rand(3, 8, 8), image])


def test_a_float_photo_a_resize_overshot_a_little_is_taken_and_kept_outside_the_mask():
    original = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1)) * 1.16 - 0.08  # [-0.08, 1.08]
    [result] = Retoucher(DiscBackend(delta=0.1)).retouch([original])
    outside = result.mask[0] == 0  # (H, W)
    assert outside.any() and torch.equal(result.image[:, outside], original[:, outside])
    assert result.image[:, ~outside].min() >= 0 and result.image[:, ~outside].max() <= 1


@pytest.mark.parametrize("photo", [torch.rand(3, 8, 8), "face.png", Path("face.png")])
def test_one_photo_instead_of_a_list_is_one_input_error_saying_to_wrap_it(photo):
    with pytest.raises(LangBRTInputError, match=r"images must be a list of photos.*retouch\(\[photo\], prompts\)"):
        Retoucher(DiscBackend()).retouch(photo)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, "8", None, True])
def test_a_batch_size_that_is_not_a_whole_number_from_1_is_one_input_error(batch_size):
    with pytest.raises(LangBRTInputError, match="batch size must be a whole number >= 1"):
        Retoucher(DiscBackend(), batch_size=batch_size)


def test_a_numpy_integer_batch_size_is_taken():
    results = Retoucher(DiscBackend(), batch_size=np.int64(2)).retouch([torch.rand(3, 8, 8)] * 3)
    assert len(results) == 3


def test_prompts_from_any_iterable_are_taken_in_their_order():
    retoucher = Retoucher(DiscBackend())
    [result] = retoucher.retouch([torch.rand(3, 8, 8)], (p for p in ["acne on the cheeks", "forehead wrinkles"]))
    assert result.prompts == ["acne on the cheeks", "forehead wrinkles"]


@pytest.mark.parametrize(("prompts", "message"), [
    (5, "prompts must be a list of strings or one list per image, got int"),
    (b"acne", "got a bare bytes; decode it"),
    ([b"acne"], "prompts must be strings, got bytes b'acne'; decode them"),
    ("acne", r"got a bare str; pass \['acne'\]"),
    ([], r"prompts is an empty list: give at least one prompt, or None for the model's pre-defined ones"),
])
def test_prompts_that_are_not_strings_or_lists_of_them_are_one_input_error(prompts, message):
    with pytest.raises(LangBRTInputError, match=message):
        Retoucher(DiscBackend()).retouch([torch.rand(3, 8, 8)], prompts)


def test_uint8_tensors_and_mixed_sizes_come_back_at_their_own_sizes():
    images = [torch.randint(0, 256, (3, 40, 90), dtype=torch.uint8), torch.rand(3, 64, 64), torch.rand(3, 9, 7)]
    results = Retoucher(DiscBackend(), batch_size=2).retouch(images, ["acne on the cheeks"])
    assert [tuple(r.image.shape) for r in results] == [(3, 40, 90), (3, 64, 64), (3, 9, 7)]
    assert all(set(r.timing) == {"preprocess", "model", "postprocess", "total"} for r in results)
