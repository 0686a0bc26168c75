"""Synthetic blemish benchmark: exact masks and partial targets, prompts that resolve, flips, real bases."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from langbrt.errors import LangBRTInputError
from langbrt.training.data.blemish_render import composite
from langbrt.training.data.blemish_types import (
    PREDEFINED_PROMPTS,
    PREDEFINED_SPECS,
    REGION_INDEX,
    BlemishType,
    FaceRegion,
    RegionGroup,
    canonical_prompts,
    make_spec,
    mirror_prompt,
    parse_prompt,
    prompt_for,
    valid_specs,
)
from langbrt.training.data.procedural_face import render_procedural_face
from langbrt.training.data.real_face import RealFaceBase
from langbrt.training.data.synthetic import (
    SyntheticBlemishDataset,
    collate_synthetic,
    flip_sample,
    scene_to_sample,
)

SIZE = 64
TENSOR_KEYS = ("source", "target", "clean", "prompt_masks", "removed_mask", "kept_mask", "region_masks",
               "type_masks", "predefined_region_masks")  # fmt: skip


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in TENSOR_KEYS) and a["prompts"] == b["prompts"]


def _scenes(n: int, seed: int = 0, **kwargs):
    ds = SyntheticBlemishDataset(n, image_size=SIZE, seed=seed, flip=False, **kwargs)
    return [ds.scene(i)[0] for i in range(n)]


def _union(masks: list[np.ndarray]) -> np.ndarray:
    return np.max(masks, axis=0) if masks else np.zeros((SIZE, SIZE), np.float32)


# ---- determinism and splits -------------------------------------------------------------------------------


def test_same_seed_and_index_give_identical_samples():
    a = SyntheticBlemishDataset(10, image_size=SIZE, seed=3)[7]
    b = SyntheticBlemishDataset(10, image_size=SIZE, seed=3)[7]
    assert _same(a, b)


def test_different_indices_give_different_samples():
    ds = SyntheticBlemishDataset(10, image_size=SIZE)
    assert not torch.equal(ds[0]["clean"], ds[1]["clean"])


def test_train_and_test_splits_draw_different_faces():
    train = SyntheticBlemishDataset(5, image_size=SIZE, split="train", flip=False)
    test = SyntheticBlemishDataset(5, image_size=SIZE, split="test", flip=False)
    for i in range(5):
        assert not torch.equal(train[i]["clean"], test[i]["clean"])


# ---- exact masks and exact partial targets ---------------------------------------------------------------


def test_pixels_outside_every_blemish_mask_equal_the_clean_face_exactly():
    for scene in _scenes(20):
        for blemish in scene.blemishes:
            alone = composite(scene.base.image, [blemish])  # (3, H, W)
            assert np.array_equal(alone[:, blemish.mask == 0], scene.base.image[:, blemish.mask == 0])
            assert not np.array_equal(alone, scene.base.image)  # and the blemish does show
        sample = scene_to_sample(scene)
        untouched = (sample["removed_mask"][0] == 0) & (sample["kept_mask"][0] == 0)  # (H, W)
        assert torch.equal(sample["source"][:, untouched], sample["clean"][:, untouched])


def test_target_removes_exactly_the_named_blemishes_and_keeps_the_others():
    kept_somewhere = 0
    for scene in _scenes(30):
        sample = scene_to_sample(scene)
        removed, kept = sample["removed_mask"][0], sample["kept_mask"][0]  # (H, W)
        source, target, clean = sample["source"], sample["target"], sample["clean"]
        assert torch.equal(target[:, removed == 0], source[:, removed == 0])
        only_removed = (removed > 0) & (kept == 0)
        assert torch.equal(target[:, only_removed], clean[:, only_removed])
        named = scene.named().any(axis=0)  # (N,)
        expected = composite(
            scene.base.image, [b for b, n in zip(scene.blemishes, named, strict=True) if not n]
        )
        assert np.array_equal(target.numpy(), expected)
        if (kept > 0).any():
            kept_somewhere += 1
            assert not torch.equal(target[:, kept > 0], clean[:, kept > 0])
    assert kept_somewhere > 0


def test_prompt_masks_are_the_union_of_the_blemishes_each_prompt_names():
    for scene in _scenes(30):
        sample = scene_to_sample(scene)
        assert sample["prompt_masks"].shape[0] == len(scene.prompts) == len(scene.specs)
        for k, (text, spec) in enumerate(zip(scene.prompts, scene.specs, strict=True)):
            assert parse_prompt(text) == spec
            expected = _union([b.mask for b in scene.blemishes if spec.names(b.kind, b.region)])
            assert np.array_equal(sample["prompt_masks"][k].numpy(), expected)


def test_every_sample_has_a_blemish_and_its_first_prompt_names_one():
    for scene in _scenes(40):
        assert len(scene.blemishes) >= 1
        assert scene.named()[0].any()


def test_every_blemish_type_occurs():
    ds = SyntheticBlemishDataset(200, image_size=SIZE)
    counts = torch.stack([ds[i]["type_masks"].flatten(1).amax(1) > 0 for i in range(200)]).sum(0)  # (T,)
    assert (counts >= 5).all(), dict(zip([t.value for t in BlemishType], counts.tolist(), strict=True))


def test_predefined_prompts_are_frequent_and_absent_blemish_prompts_rare():
    scenes = _scenes(250)
    prompts = [(p, s.named()[k].any()) for s in scenes for k, p in enumerate(s.prompts)]
    predefined = np.mean([p in PREDEFINED_PROMPTS for p, _ in prompts])
    absent = np.mean([not present for _, present in prompts])
    assert 0.2 < predefined < 0.45
    assert 0.03 < absent < 0.2


def test_skin_tone_spans_very_light_to_very_dark():
    means = []
    for i in range(40):
        face = render_procedural_face(np.random.default_rng(i), SIZE)
        luminance = face.image.T @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (W, H)
        means.append(float((luminance.T * face.skin_mask).sum() / face.skin_mask.sum()))
    assert max(means) - min(means) > 0.4, means
    assert min(means) < 0.25 and max(means) > 0.6


def test_regions_are_disjoint_and_non_empty():
    for i in range(10):
        regions = render_procedural_face(np.random.default_rng(i), SIZE).region_masks  # (R, H, W)
        assert ((regions > 0.5).sum(axis=(1, 2)) > 0).all()
        assert (regions.sum(axis=0) <= 1.0 + 1e-5).all()


def test_values_shapes_and_dtypes():
    ds = SyntheticBlemishDataset(8, image_size=SIZE, max_prompts=3)
    for i in range(8):
        sample = ds[i]
        k = len(sample["prompts"])
        assert 1 <= k <= 3
        shapes = {"source": 3, "target": 3, "clean": 3, "prompt_masks": k, "removed_mask": 1, "kept_mask": 1,
                  "region_masks": 7, "type_masks": 7, "predefined_region_masks": 3}  # fmt: skip
        for key, lead in shapes.items():
            tensor = sample[key]
            assert tensor.shape == (lead, SIZE, SIZE) and tensor.dtype == torch.float32, key
            assert tensor.min() >= 0 and tensor.max() <= 1, key


def test_collate_pads_prompt_masks_and_marks_valid_prompts():
    ds = SyntheticBlemishDataset(16, image_size=SIZE, max_prompts=3)
    batch = [ds[i] for i in range(16)]
    out = collate_synthetic(batch)
    k = max(len(s["prompts"]) for s in batch)
    assert out["source"].shape == (16, 3, SIZE, SIZE)
    assert out["prompt_masks"].shape == (16, k, SIZE, SIZE)
    assert out["prompt_valid"].tolist() == [[j < len(s["prompts"]) for j in range(k)] for s in batch]
    for i, s in enumerate(batch):
        n = len(s["prompts"])
        assert torch.equal(out["prompt_masks"][i, :n], s["prompt_masks"])
        assert not out["prompt_masks"][i, n:].any()
    assert out["prompts"] == [s["prompts"] for s in batch]


def test_predefined_region_masks_cover_the_predefined_prompts_regions():
    sample = SyntheticBlemishDataset(1, image_size=SIZE)[0]
    regions = sample["region_masks"]
    left_eye, right_eye = (
        regions[REGION_INDEX[r]] for r in (FaceRegion.UNDER_LEFT_EYE, FaceRegion.UNDER_RIGHT_EYE)
    )
    assert torch.equal(sample["predefined_region_masks"][0], torch.maximum(left_eye, right_eye))
    assert torch.equal(sample["predefined_region_masks"][1], regions[REGION_INDEX[FaceRegion.FOREHEAD]])


# ---- flips ---------------------------------------------------------------------------------------------


def test_flipping_twice_is_the_identity():
    sample = SyntheticBlemishDataset(1, image_size=SIZE, flip=False)[0]
    assert _same(flip_sample(flip_sample(sample)), sample)


def test_flipped_prompts_resolve_to_the_flipped_blemishes():
    sided = [s for s in _scenes(60) if any(" left " in f" {p} " or " right " in f" {p} " for p in s.prompts)]
    assert sided
    for scene in sided[:5]:
        flipped = flip_sample(scene_to_sample(scene))
        assert _same(flipped, scene_to_sample(scene.flipped()))
        mirror = scene.flipped()
        for k, text in enumerate(flipped["prompts"]):
            assert text == mirror_prompt(scene.prompts[k])
            assert (text != scene.prompts[k]) == any(side in text.split() for side in ("left", "right"))
            spec = parse_prompt(text)
            assert spec == scene.specs[k].mirrored()
            expected = _union([b.mask for b in mirror.blemishes if spec.names(b.kind, b.region)])
            assert np.array_equal(flipped["prompt_masks"][k].numpy(), expected)
        assert torch.equal(flipped["source"], scene_to_sample(scene)["source"].flip(-1))


def test_training_flips_are_the_flip_of_the_unflipped_sample():
    flipping = SyntheticBlemishDataset(12, image_size=SIZE, flip=True)
    plain = SyntheticBlemishDataset(12, image_size=SIZE, flip=False)
    mirrored = [flipping.scene(i)[1] for i in range(12)]
    assert any(mirrored) and not all(mirrored)
    for i, mirror in enumerate(mirrored):
        expected = flip_sample(plain[i]) if mirror else plain[i]
        assert _same(flipping[i], expected)


def test_test_split_never_flips():
    ds = SyntheticBlemishDataset(20, image_size=SIZE, split="test", flip=True)
    assert not any(ds.scene(i)[1] for i in range(20))


# ---- prompts -------------------------------------------------------------------------------------------


def test_canonical_prompts_are_deterministic_unique_and_include_the_predefined():
    prompts = canonical_prompts()
    assert prompts == canonical_prompts() and len(set(prompts)) == len(prompts) == len(valid_specs())
    assert set(PREDEFINED_PROMPTS) <= set(prompts)
    assert [parse_prompt(p) for p in PREDEFINED_PROMPTS] == list(PREDEFINED_SPECS)
    assert [parse_prompt(p) for p in prompts] == list(valid_specs())


def test_paraphrases_resolve_to_their_spec():
    rng = np.random.default_rng(0)
    for spec in valid_specs():
        for _ in range(5):
            assert parse_prompt(prompt_for(spec.kind, spec.where, rng)) == spec
    assert parse_prompt("Acne on my right  cheek") == make_spec(BlemishType.ACNE, FaceRegion.RIGHT_CHEEK)
    assert parse_prompt("crow's feet") == make_spec(BlemishType.EYE_WRINKLES, RegionGroup.EVERYWHERE)


def test_places_that_cover_every_allowed_region_mean_everywhere():
    assert make_spec(BlemishType.DARK_CIRCLES, RegionGroup.UNDER_EYES).where == RegionGroup.EVERYWHERE
    assert make_spec(BlemishType.FOREHEAD_WRINKLES, FaceRegion.FOREHEAD).where == RegionGroup.EVERYWHERE
    assert parse_prompt("dark circles") == parse_prompt("dark circles under the eyes")
    with pytest.raises(LangBRTInputError):
        make_spec(BlemishType.DARK_CIRCLES, FaceRegion.CHIN)
    with pytest.raises(LangBRTInputError):
        parse_prompt("make me look younger")


def test_mirror_prompt_swaps_sides_only():
    assert mirror_prompt("acne on the left cheek") == "acne on the right cheek"
    assert mirror_prompt("dark circles under my right eye") == "dark circles under my left eye"
    assert mirror_prompt("forehead wrinkles") == "forehead wrinkles"


# ---- real face bases -----------------------------------------------------------------------------------

_POLYGONS = {
    "forehead": [[28, 8], [68, 8], [68, 22], [28, 22]],
    "right_cheek": [[18, 40], [40, 40], [40, 58], [18, 58]],  # the person's right: the image's left
    "left_cheek": [[56, 40], [78, 40], [78, 58], [56, 58]],
    "under_right_eye": [[22, 30], [44, 30], [44, 37], [22, 37]],
    "under_left_eye": [[52, 30], [74, 30], [74, 37], [52, 37]],
    "nose": [[43, 30], [53, 30], [53, 50], [43, 50]],
    "chin": [[36, 64], [60, 64], [60, 74], [36, 74]],
}


@pytest.fixture
def real_face(tmp_path):
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal([200, 150, 120], 5, (80, 96, 3)), 0, 255).astype(np.uint8)  # H=80, W=96
    Image.fromarray(pixels).save(tmp_path / "face.png")
    (tmp_path / "face.json").write_text(json.dumps({"image": "face.png", "regions": _POLYGONS}))
    return tmp_path / "face.png", tmp_path / "face.json"


def test_real_base_rasterises_regions_in_the_cropped_resized_frame(real_face):
    base = RealFaceBase.from_files(*real_face).face_base(SIZE)
    assert base.image.shape == (3, SIZE, SIZE) and base.image.dtype == np.float32
    forehead = base.region(FaceRegion.FOREHEAD) > 0.5
    rows, cols = np.flatnonzero(forehead.any(1)), np.flatnonzero(forehead.any(0))
    scale = SIZE / 80  # 96x80 is centre-cropped to 80x80 (8 px off each side), then resized
    assert abs(cols[0] - (28 - 8) * scale) <= 1 and abs(rows[0] - 8 * scale) <= 1
    assert base.eyes[FaceRegion.UNDER_LEFT_EYE].x > base.eyes[FaceRegion.UNDER_RIGHT_EYE].x


def test_dataset_mixes_real_bases_and_puts_blemishes_on_their_regions(real_face):
    real = RealFaceBase.from_regions_file(real_face[1])
    ds = SyntheticBlemishDataset(20, image_size=SIZE, bases=[real], real_fraction=1.0)
    base = real.face_base(SIZE)
    near = torch.from_numpy(base.region_masks.max(axis=0) > 0).float()  # (H, W)
    near = torch.nn.functional.max_pool2d(near[None, None], 9, stride=1, padding=4)[0, 0]  # a little slack
    for i in range(20):
        sample = ds[i]
        clean = sample["clean"].numpy()
        assert np.array_equal(clean, base.image) or np.array_equal(clean, base.image[:, :, ::-1])
        footprint = torch.maximum(sample["removed_mask"][0], sample["kept_mask"][0])
        assert footprint.any() and not (footprint * (1 - near)).any()


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"image": "face.png"}),
        json.dumps({"regions": {"left_ear": [[0, 0], [1, 0], [1, 1]]}}),
        json.dumps({"regions": {"nose": [[0, 0], [1, 1]]}}),
        json.dumps({"regions": {"nose": [[0, 0], [1, "x"], [1, 1]]}}),
    ],
)
def test_bad_regions_file_is_one_clear_input_error(real_face, content):
    real_face[1].write_text(content)
    with pytest.raises(LangBRTInputError) as err:
        RealFaceBase.from_files(*real_face)
    assert "\n" not in str(err.value) and str(real_face[1]) in str(err.value)


def test_missing_files_are_input_errors(real_face, tmp_path):
    with pytest.raises(LangBRTInputError):
        RealFaceBase.from_files(real_face[0], tmp_path / "missing.json")
    with pytest.raises(LangBRTInputError):
        RealFaceBase.from_files(tmp_path / "missing.png", real_face[1])


def test_a_regions_file_whose_image_is_missing_says_so_and_where_it_looked(real_face, tmp_path):
    """QA: a regions file copied away from its photo (`--real-face copy.json`) failed "face.png: no such file",
    naming neither the --real-face file nor the folder the photo is looked for in."""
    moved = tmp_path / "elsewhere" / "copy.json"
    moved.parent.mkdir()
    moved.write_text(real_face[1].read_text())
    with pytest.raises(LangBRTInputError) as err:
        RealFaceBase.from_regions_file(moved)
    assert str(err.value) == (f"{moved}: its \"image\" entry 'face.png' names no file ({moved.parent / 'face.png'} "
                              "does not exist; the entry is relative to the regions file's folder)")


@pytest.mark.parametrize(
    "kwargs",
    [{"length": 0}, {"image_size": 8}, {"split": "val"}, {"max_prompts": 0}, {"real_fraction": 0.5}],
)
def test_bad_dataset_arguments_are_input_errors(kwargs):
    with pytest.raises(LangBRTInputError):
        SyntheticBlemishDataset(**({"length": 4} | kwargs))


def test_a_regions_file_with_a_number_of_5000_digits_is_one_line_naming_it(real_face):
    image, regions = real_face
    regions.write_text('{"image": "face.png", "regions": {"chin": [[' + "1" * 5000 + ', 2]]}}')
    with pytest.raises(LangBRTInputError, match=f"^{regions}: not a readable JSON regions file \\(a number of more"):
        RealFaceBase.from_files(image, regions)
