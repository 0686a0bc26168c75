"""Paired before/after data: finding pairs (generic and FFHQR layouts), their prompts, loading them, and subsets."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from langbrt.errors import LangBRTInputError
from langbrt.training.data.blemish_types import mirror_prompt
from langbrt.training.data.ffhqr import find_ffhqr_pairs
from langbrt.training.data.pair_discovery import ImagePair, find_pairs
from langbrt.training.data.pair_prompts import PROMPTS_FILE, read_pair_prompts
from langbrt.training.data.paired import (
    DEFAULT_REAL_PROMPTS,
    PairedImageDataset,
    collate_pairs,
)
from langbrt.training.data.subset import PAPER_FRACTIONS, describe_subset, select_fraction
from langbrt.training.datasets import build_dataset
from langbrt.training.train_config import TrainConfig


def write_image(path: Path, size: tuple[int, int] = (8, 8), value: int = 128) -> Path:
    """A small RGB image (size is W, H) whose left half is `value` and right half black, in PIL's format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    pixels = np.zeros((height, width, 3), dtype=np.uint8)  # (H, W, 3)
    pixels[:, : width // 2] = value
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def make_generic(root: Path, sources: list[str], targets: list[str]) -> Path:
    for name in sources:
        write_image(root / "source" / name, value=200)
    for name in targets:
        write_image(root / "target" / name, value=100)
    return root


def checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def pair_at(tmp_path: Path, name: str = "a", size: tuple[int, int] = (8, 8)) -> ImagePair:
    source = write_image(tmp_path / "source" / f"{name}.png", size, value=200)
    target = write_image(tmp_path / "target" / f"{name}.png", size, value=100)
    return ImagePair(source, target, name)


def corrupt(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:30])  # header survives, image data does not
    return path


# ------------------------------------------------------------------------------------------- generic layout


def test_generic_layout_pairs_by_stem_across_mixed_suffixes(tmp_path):
    make_generic(tmp_path, ["001.jpg", "002.PNG", "003.webp"], ["001.png", "002.jpeg", "003.png"])
    index = find_pairs(tmp_path)
    assert [p.name for p in index] == ["001", "002", "003"]
    assert index[0].source.name == "001.jpg" and index[0].target.name == "001.png"
    assert index[1].source.name == "002.PNG" and index[1].target.name == "002.jpeg"


def test_generic_layout_takes_every_format_infer_reads(tmp_path):
    """QA, 2026-11-27: .tif/.tiff/.bmp pairs (which langbrt-infer retouches) were left out of the set without a
    word, so a retoucher's TIFF exports trained and scored on the set's JPEG/PNG pairs only."""
    make_generic(tmp_path, ["a.png", "b.png", "c.png"], ["a.png", "b.png", "c.png"])
    for side, value in (("source", 200), ("target", 100)):
        for name, fmt in (("b.tif", "TIFF"), ("c.BMP", "BMP"), ("d.tiff", "TIFF")):
            (tmp_path / side / (name.split(".")[0] + ".png")).unlink(missing_ok=True)
            Image.new("RGB", (8, 8), (value,) * 3).save(tmp_path / side / name, format=fmt)
    index = find_pairs(tmp_path)
    assert [(p.name, p.source.name) for p in index] == [
        ("a", "a.png"), ("b", "b.tif"), ("c", "c.BMP"), ("d", "d.tiff")
    ]
    dataset = PairedImageDataset(index, image_size=8)
    assert dataset.validate() == 0
    assert float(dataset[1]["source"].mean()) == pytest.approx(200 / 255)
    assert float(dataset[3]["target"].mean()) == pytest.approx(100 / 255)


def test_generic_layout_ignores_non_image_and_hidden_files(tmp_path):
    make_generic(tmp_path, ["a.png"], ["a.png"])
    (tmp_path / "source" / "notes.txt").write_text("hello")
    (tmp_path / "target" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "target" / "._a.png").write_bytes(b"resource fork")
    assert [p.name for p in find_pairs(tmp_path)] == ["a"]


def test_unpaired_files_on_both_sides_are_reported_in_one_error(tmp_path):
    make_generic(tmp_path, ["a.png", "b.png", "c.png", "k.png"], ["k.png", "z.png"])
    with pytest.raises(LangBRTInputError) as err:
        find_pairs(tmp_path)
    message = str(err.value)
    assert "3 source images have no target (a.png, b.png, c.png)" in message
    assert "1 target has no source (z.png)" in message
    assert "\n" not in message


def test_image_links_that_point_nowhere_are_reported_not_skipped(tmp_path):
    """QA, 2026-11-26: a pair whose two files were dangling links vanished from the set without a word."""
    make_generic(tmp_path, ["a.png"], ["a.png"])
    for side in ("source", "target"):
        (tmp_path / side / "b.png").symlink_to(tmp_path / "gone" / "b.png")
    (tmp_path / "source" / "notes.txt").symlink_to(tmp_path / "gone.txt")  # not an image name: still ignored
    with pytest.raises(LangBRTInputError) as err:
        find_pairs(tmp_path)
    assert "1 link in source/ points nowhere (b.png); 1 link in target/ points nowhere (b.png)" in str(err.value)


def test_long_offender_lists_are_cut_short(tmp_path):
    make_generic(tmp_path, [f"{i:02d}.png" for i in range(12)], ["99.png"])
    expected = r"12 source images have no target \(00.png, .*04.png, \.\.\.\)"
    with pytest.raises(LangBRTInputError, match=expected):
        find_pairs(tmp_path)


def test_duplicate_stems_in_one_folder_are_an_error(tmp_path):
    make_generic(tmp_path, ["a.png", "a.jpg"], ["a.png"])
    with pytest.raises(LangBRTInputError, match=r"used twice in source/ \(a.jpg = a.png\)"):
        find_pairs(tmp_path)


def test_missing_target_folder_is_an_error(tmp_path):
    write_image(tmp_path / "source" / "a.png")
    with pytest.raises(LangBRTInputError, match="missing target/"):
        find_pairs(tmp_path)


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(LangBRTInputError, match="no such folder"):
        find_pairs(tmp_path / "nowhere")


def test_empty_folders_are_an_error(tmp_path):
    (tmp_path / "source").mkdir()
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "readme.txt").write_text("x")
    with pytest.raises(LangBRTInputError, match="source/ holds no images.*target/ holds no images"):
        find_pairs(tmp_path)


def test_select_keeps_the_chosen_pairs(tmp_path):
    make_generic(tmp_path, ["a.png", "b.png", "c.png"], ["a.png", "b.png", "c.png"])
    assert [p.name for p in find_pairs(tmp_path).select([0, 2])] == ["a", "c"]


# -------------------------------------------------------------------------------------------- FFHQR layouts

BOUNDARY_IDS = [0, 55_999, 56_000, 62_999, 63_000, 69_999]


def nested(root: Path, i: int) -> Path:
    return root / f"{i // 1000 * 1000:05d}" / f"{i:05d}.png"


def test_prepared_layout_takes_the_split_from_the_folder(tmp_path):
    root = tmp_path / "face_retouching"
    for split, ids in (("train", [0, 1]), ("test", [63_000])):
        for i in ids:
            write_image(root / split / "source" / f"{i:05d}.png")
            write_image(root / split / "target" / f"{i:05d}.png")
    assert [p.name for p in find_ffhqr_pairs(root, split="train")] == ["00000", "00001"]
    assert [p.name for p in find_ffhqr_pairs(root, split="test")] == ["63000"]


def test_prepared_layout_has_no_val_split(tmp_path):
    root = tmp_path / "face_retouching"
    write_image(root / "train" / "source" / "00000.png")
    write_image(root / "train" / "target" / "00000.png")
    with pytest.raises(LangBRTInputError, match="no val/ folder.*no val split"):
        find_ffhqr_pairs(root, split="val")


def test_prepared_layout_refuses_a_target_root(tmp_path):
    root = tmp_path / "face_retouching"
    write_image(root / "train" / "source" / "00000.png")
    write_image(root / "train" / "target" / "00000.png")
    with pytest.raises(LangBRTInputError, match="leave target_root unset"):
        find_ffhqr_pairs(root, tmp_path / "other")


@pytest.mark.parametrize("originals_nested", [False, True], ids=["flat-originals", "nested-originals"])
def test_id_layouts_pair_by_integer_id_and_split_on_official_ranges(tmp_path, originals_nested):
    originals, retouched = tmp_path / "images1024x1024", tmp_path / "ffhqr"
    for i in BOUNDARY_IDS:
        write_image(nested(originals, i) if originals_nested else originals / f"{i:05d}.png")
        write_image(nested(retouched, i))
    splits = {s: find_ffhqr_pairs(originals, retouched, s) for s in ("train", "val", "test")}
    assert [p.name for p in splits["train"]] == ["00000", "55999"]
    assert [p.name for p in splits["val"]] == ["56000", "62999"]
    assert [p.name for p in splits["test"]] == ["63000", "69999"]
    pair = splits["val"][0]
    assert pair.source.parent.name == ("56000" if originals_nested else "images1024x1024")
    assert pair.target == retouched / "56000" / "56000.png"


def test_ids_pair_even_when_zero_padding_differs(tmp_path):
    write_image(tmp_path / "orig" / "42.png")
    write_image(nested(tmp_path / "ret", 42))
    (pair,) = find_ffhqr_pairs(tmp_path / "orig", tmp_path / "ret")
    assert pair.name == "00042"


def test_ffhq_download_folder_is_accepted_for_its_images_child(tmp_path):
    write_image(tmp_path / "ffhq" / "images1024x1024" / "00007.png")
    write_image(nested(tmp_path / "ret", 7))
    assert [p.name for p in find_ffhqr_pairs(tmp_path / "ffhq", tmp_path / "ret")] == ["00007"]


def test_ids_on_one_side_only_are_left_out_with_one_warning(tmp_path):
    for i in (1, 2, 3):
        write_image(tmp_path / "orig" / f"{i:05d}.png")
    for i in (2, 3):
        write_image(nested(tmp_path / "ret", i))
    with pytest.warns(UserWarning, match=r"leaving out 1 id .*\(00001\)") as record:
        index = find_ffhqr_pairs(tmp_path / "orig", tmp_path / "ret")
    assert len(record) == 1
    assert [p.name for p in index] == ["00002", "00003"]


def test_split_without_any_ids_is_an_error_that_names_the_ids_found(tmp_path):
    write_image(tmp_path / "orig" / "00005.png")
    write_image(nested(tmp_path / "ret", 5))
    with pytest.raises(LangBRTInputError, match=r"no image of split 'test' .*ids found are 5-5"):
        find_ffhqr_pairs(tmp_path / "orig", tmp_path / "ret", split="test")


def test_folder_without_id_files_is_an_error(tmp_path):
    write_image(tmp_path / "orig" / "face.png")
    write_image(nested(tmp_path / "ret", 5))
    with pytest.raises(LangBRTInputError, match="no images named by FFHQ id"):
        find_ffhqr_pairs(tmp_path / "orig", tmp_path / "ret")


def test_id_layout_without_target_root_is_an_error(tmp_path):
    write_image(tmp_path / "orig" / "00005.png")
    with pytest.raises(LangBRTInputError, match=r"FFHQR retouched images \(--ffhqr-target-root"):
        find_ffhqr_pairs(tmp_path / "orig")


def test_same_id_twice_is_an_error(tmp_path):
    write_image(tmp_path / "orig" / "00005.png")
    write_image(nested(tmp_path / "orig", 5))
    write_image(nested(tmp_path / "ret", 5))
    with pytest.raises(LangBRTInputError, match="1 id occurs more than once"):
        find_ffhqr_pairs(tmp_path / "orig", tmp_path / "ret")


def test_unknown_split_is_an_error(tmp_path):
    with pytest.raises(LangBRTInputError, match="unknown FFHQR split 'validation'"):
        find_ffhqr_pairs(tmp_path, tmp_path, split="validation")


# ------------------------------------------------------------------------------------------------- dataset


def test_sample_is_resized_to_image_size_as_float32_in_unit_range(tmp_path):
    dataset = PairedImageDataset([pair_at(tmp_path, size=(64, 64))], image_size=16)
    sample = dataset[0]
    assert sample["source"].shape == (3, 16, 16) and sample["target"].shape == (3, 16, 16)
    assert sample["source"].dtype == torch.float32
    assert 0.0 <= sample["source"].min() and sample["source"].max() <= 1.0
    assert sample["name"] == "a" and sample["region_masks"] is None


def test_non_square_pair_is_centre_cropped_not_stretched(tmp_path):
    dataset = PairedImageDataset([pair_at(tmp_path, size=(16, 8))], image_size=8)
    source = dataset[0]["source"]  # (3, 8, 8): columns 4..11 of a 16-wide image, bright half = columns 0..7
    assert source.shape == (3, 8, 8)
    assert torch.allclose(source[:, :, :4], torch.full((3, 8, 4), 200 / 255))
    assert torch.allclose(source[:, :, 4:], torch.zeros(3, 8, 4))


def test_image_already_at_size_is_returned_unchanged(tmp_path):
    sample = PairedImageDataset([pair_at(tmp_path)], image_size=8)[0]
    assert torch.allclose(sample["target"][:, :, :4], torch.full((3, 8, 4), 100 / 255))


def test_every_sample_carries_the_fixed_prompts(tmp_path):
    assert PairedImageDataset([pair_at(tmp_path)], image_size=8)[0]["prompts"] == list(DEFAULT_REAL_PROMPTS)
    custom = PairedImageDataset([pair_at(tmp_path)], image_size=8, prompts=["Acne on the  LEFT cheek"])
    assert custom[0]["prompts"] == ["acne on the left cheek"]


def test_flip_mirrors_source_and_target_together_and_swaps_sides_in_prompts(tmp_path):
    pairs = [pair_at(tmp_path, f"p{i}") for i in range(16)]
    plain = PairedImageDataset(pairs, image_size=8, prompts=["acne on the left cheek"])
    flipped = PairedImageDataset(pairs, image_size=8, flip=True, seed=3, prompts=["acne on the left cheek"])
    flips = []
    for i in range(len(pairs)):
        a, b = plain[i], flipped[i]
        was_flipped = not torch.equal(a["source"], b["source"])
        assert torch.equal(b["target"], a["target"].flip(-1) if was_flipped else a["target"])
        assert b["prompts"] == (["acne on the right cheek"] if was_flipped else ["acne on the left cheek"])
        flips.append(was_flipped)
    assert 0 < sum(flips) < len(flips)
    again = PairedImageDataset(pairs, image_size=8, flip=True, seed=3)
    assert all(torch.equal(again[i]["source"], flipped[i]["source"]) for i in range(len(pairs)))


@pytest.mark.parametrize("prompt, mirrored", [
    ("acne on the right cheek, left brow", "acne on the left cheek, right brow"),
    ("acne on the left, redness on the right", "acne on the right, redness on the left"),  # QA: "left," stayed
    ("acne on the cheek on the left.", "acne on the cheek on the right."),
    ("spots near the left-eye", "spots near the right-eye"),
    ("pimples (left cheek)", "pimples (right cheek)"),
    ("bright forehead, leftover redness", "bright forehead, leftover redness"),
])
def test_a_flipped_real_pair_swaps_every_side_word_and_nothing_else(prompt, mirrored):
    assert mirror_prompt(prompt) == mirrored


def test_corrupt_file_is_skipped_with_one_warning_and_counted(tmp_path):
    good, bad = pair_at(tmp_path, "good"), pair_at(tmp_path, "bad")
    corrupt(bad.target)
    dataset = PairedImageDataset([bad, good], image_size=8)
    with pytest.warns(UserWarning, match="bad.png") as record:
        sample = dataset[0]
    assert len(record) == 1
    assert sample["name"] == "good"
    assert len(dataset.skipped) == 1 and dataset.skipped[0].path == bad.target
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second visit neither warns again nor counts again
        assert dataset[0]["name"] == "good"
    assert len(dataset.skipped) == 1


def test_corrupt_file_raises_naming_it_when_strict(tmp_path):
    bad = pair_at(tmp_path, "bad")
    corrupt(bad.source)
    with pytest.raises(LangBRTInputError, match="bad.png"):
        PairedImageDataset([bad], image_size=8, strict=True)[0]


def test_validate_drops_unreadable_pairs_up_front_with_one_warning(tmp_path):
    good, bad, junk = pair_at(tmp_path, "good"), pair_at(tmp_path, "bad"), pair_at(tmp_path, "junk")
    corrupt(bad.source)
    junk.target.write_bytes(b"this is not an image")
    dataset = PairedImageDataset([bad, good, junk], image_size=8)
    with pytest.warns(UserWarning, match="skipping 2 image pairs") as record:
        assert dataset.validate() == 2
    assert len(record) == 1
    assert len(dataset) == 1 and dataset[0]["name"] == "good"
    assert {s.path for s in dataset.skipped} == {bad.source, junk.target}


def test_validate_raises_on_the_first_bad_file_when_strict(tmp_path):
    good, junk = pair_at(tmp_path, "good"), pair_at(tmp_path, "junk")
    junk.target.write_bytes(b"this is not an image")
    with pytest.raises(LangBRTInputError, match="junk.png"):
        PairedImageDataset([good, junk], image_size=8, strict=True).validate()


def test_pair_with_different_aspect_ratios_is_rejected(tmp_path):
    pair = ImagePair(
        write_image(tmp_path / "s.png", (8, 8)), write_image(tmp_path / "t.png", (16, 8)), "mismatch"
    )
    with pytest.raises(LangBRTInputError, match="same framing"):
        PairedImageDataset([pair], image_size=8, strict=True)[0]


def test_pair_at_different_resolutions_is_fine(tmp_path):
    pair = ImagePair(write_image(tmp_path / "s.png", (16, 16)), write_image(tmp_path / "t.png", (8, 8)), "x")
    dataset = PairedImageDataset([pair], image_size=8, strict=True)
    assert dataset.validate() == 0
    assert dataset[0]["source"].shape == dataset[0]["target"].shape == (3, 8, 8)


def test_validate_reads_the_aspect_ratio_after_exif_rotation(tmp_path):
    source = write_image(tmp_path / "s.jpg", (16, 8))  # stored landscape, shown portrait
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.open(source).save(source, format="JPEG", exif=exif.tobytes())
    pair = ImagePair(source, write_image(tmp_path / "t.png", (8, 16)), "rotated")
    dataset = PairedImageDataset([pair], image_size=8, strict=True)
    assert dataset.validate() == 0
    assert dataset[0]["source"].shape == (3, 8, 8)


@pytest.mark.parametrize("suffix", [".png", ".webp"])
def test_a_pair_whose_exif_block_cannot_be_read_is_kept_as_the_reader_reads_it(tmp_path, suffix):
    """The header check refused a PNG or WebP with a damaged EXIF block as 'not a readable image' while
    langbrt-infer and read_pair take its pixels as stored: the pair was dropped from training for nothing."""
    source = tmp_path / f"s{suffix}"
    Image.open(write_image(tmp_path / "plain.png", (8, 8))).save(source, exif=b"\xff" * 50, lossless=True)
    pair = ImagePair(source, write_image(tmp_path / "t.png", (8, 8)), "damaged-exif")
    dataset = PairedImageDataset([pair], image_size=8, strict=True)
    assert dataset.validate() == 0
    assert dataset[0]["source"].shape == (3, 8, 8)


def test_input_files_are_never_modified(tmp_path):
    root = make_generic(tmp_path / "data", ["a.jpg", "b.png"], ["a.png", "b.webp"])
    corrupt(root / "source" / "b.png")
    before = checksums(root)
    dataset = PairedImageDataset(find_pairs(root), image_size=4, flip=True)
    with pytest.warns(UserWarning):
        dataset.validate()
    _ = [dataset[i] for i in range(len(dataset))]
    assert checksums(root) == before


def test_collate_stacks_images_and_keeps_prompts_per_sample(tmp_path):
    dataset = PairedImageDataset([pair_at(tmp_path, "a"), pair_at(tmp_path, "b")], image_size=8)
    batch = collate_pairs([dataset[0], dataset[1]])
    assert batch["source"].shape == (2, 3, 8, 8)
    assert batch["name"] == ["a", "b"]
    assert batch["prompts"] == [list(DEFAULT_REAL_PROMPTS)] * 2
    assert batch["region_masks"] is None


@pytest.mark.parametrize("kwargs", [{"image_size": 0}, {"prompts": []}, {"prompts": "acne"}])
def test_bad_constructor_arguments_are_input_errors(tmp_path, kwargs):
    with pytest.raises(LangBRTInputError):
        PairedImageDataset([pair_at(tmp_path)], **kwargs)


# --------------------------------------------------------------------------------------- per-pair prompts


def write_prompts(root: Path, entries: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / PROMPTS_FILE).write_text(json.dumps(entries), encoding="utf-8")
    return root


def test_prompts_file_gives_listed_pairs_their_own_prompts_and_the_rest_the_common_ones(tmp_path):
    root = make_generic(tmp_path, ["001.png", "002.png", "003.png"], ["001.png", "002.png", "003.png"])
    write_prompts(root, {"001": ["Acne on the  CHEEKS"], "002": ["forehead wrinkles", "dark circles under the eyes"]})
    cfg = TrainConfig(data=str(root), prompts=("red spots",), flip=False)
    _, _, dataset = build_dataset(cfg, image_size=8)
    by_name = {dataset[i]["name"]: dataset[i]["prompts"] for i in range(len(dataset))}
    assert by_name == {"001": ["acne on the cheeks"], "002": ["forehead wrinkles", "dark circles under the eyes"],
                       "003": ["red spots"]}


def test_without_a_prompts_file_or_prompt_every_pair_answers_the_default_prompts(tmp_path):
    root = make_generic(tmp_path, ["001.png"], ["001.png"])
    _, _, dataset = build_dataset(TrainConfig(data=str(root)), image_size=8)
    assert dataset[0]["prompts"] == list(DEFAULT_REAL_PROMPTS)


def test_a_pairs_prompts_are_deduplicated_once_normalised_as_the_model_asks_them(tmp_path):
    pair = pair_at(tmp_path, "a")
    dataset = PairedImageDataset([pair], image_size=8, pair_prompts={"a": ["Acne", "acne ", "wrinkles", "ACNE"]})
    assert dataset[0]["prompts"] == ["acne", "wrinkles"]


def test_flip_swaps_sides_in_a_pairs_own_prompts(tmp_path):
    pairs = [pair_at(tmp_path, f"p{i}") for i in range(16)]
    own = {pair.name: ["acne on the left cheek", "forehead wrinkles"] for pair in pairs}
    dataset = PairedImageDataset(pairs, image_size=8, flip=True, seed=3, prompts=["unused"], pair_prompts=own)
    plain = PairedImageDataset(pairs, image_size=8, pair_prompts=own)
    flipped = [not torch.equal(dataset[i]["source"], plain[i]["source"]) for i in range(len(pairs))]
    assert 0 < sum(flipped) < len(pairs)
    for i, was_flipped in enumerate(flipped):
        side = "right" if was_flipped else "left"
        assert dataset[i]["prompts"] == [f"acne on the {side} cheek", "forehead wrinkles"]
    assert dataset.prompt_texts() == {"acne on the left cheek", "acne on the right cheek", "forehead wrinkles"}


@pytest.mark.parametrize("content, message", [
    ("{not json", "prompts.json: not valid JSON (Expecting property name"),
    ('["001"]', "prompts.json: must be a JSON object mapping pair names to lists of prompts, got an array"),
    ('{"001": ["acne"], "001": ["wrinkles"]}', "prompts.json: not valid JSON (key '001' appears twice"),
    ('{"001": "acne"}', "1 value is not a non-empty list of prompt strings (001)"),
    ('{"001": [], "002": [7]}', "2 values are not a non-empty list of prompt strings (001, 002)"),
    ('{"001": ["   "]}', "1 prompt is unusable (001: empty prompt)"),
    ('{"001": ["acne"], "01": ["acne"], "xyz": ["acne"]}', "2 names match no pair (01, xyz)"),
])
def test_a_bad_prompts_file_is_one_error_line_naming_the_problem(tmp_path, content, message):
    root = make_generic(tmp_path / "data", ["001.png", "002.png"], ["001.png", "002.png"])
    (root / PROMPTS_FILE).write_text(content, encoding="utf-8")
    with pytest.raises(LangBRTInputError) as caught:
        build_dataset(TrainConfig(data=str(root)), image_size=8)
    text = str(caught.value)
    assert text.startswith(str(root / PROMPTS_FILE)) and message in text and "\n" not in text, text


def test_every_problem_of_a_prompts_file_is_reported_at_once(tmp_path):
    path = write_prompts(tmp_path, {"001": [], "002": [""], "nope": ["acne"], "bad\nname": ["acne"], " ": ["acne"]})
    path = path / PROMPTS_FILE
    with pytest.raises(LangBRTInputError) as caught:
        read_pair_prompts(path, {"001", "002"})
    text = str(caught.value)
    assert "1 value is not a non-empty list of prompt strings (001)" in text
    assert "1 prompt is unusable (002: empty prompt)" in text
    assert "3 names match no pair (nope, 'bad\\nname', ' ')" in text and "\n" not in text, text


def test_an_unreadable_prompts_file_is_one_error_line(tmp_path):
    root = make_generic(tmp_path / "data", ["001.png"], ["001.png"])
    (root / PROMPTS_FILE).write_bytes(b"\xff\xfe{}")
    with pytest.raises(LangBRTInputError, match="prompts.json: unreadable prompts file .*utf-8"):
        build_dataset(TrainConfig(data=str(root)), image_size=8)
    (root / PROMPTS_FILE).unlink()
    (root / PROMPTS_FILE).symlink_to(tmp_path / "missing.json")
    with pytest.raises(LangBRTInputError, match="prompts.json: unreadable prompts file .*No such file"):
        build_dataset(TrainConfig(data=str(root)), image_size=8)


def test_ffhqr_prompts_file_at_its_root_is_keyed_by_id_and_serves_every_split(tmp_path):
    root = tmp_path / "face_retouching"
    for split, i in (("train", 1), ("test", 63_000)):
        write_image(root / split / "source" / f"{i:05d}.png")
        write_image(root / split / "target" / f"{i:05d}.png")
    write_prompts(root, {"00001": ["acne on the cheeks"], "63000": ["forehead wrinkles"], "69999": ["moles"]})
    cfg = TrainConfig(data="ffhqr", ffhqr_root=str(root), flip=False)
    for split, expected in (("train", ["acne on the cheeks"]), ("test", ["forehead wrinkles"])):
        _, _, dataset = build_dataset(cfg, image_size=8, split=split)
        assert dataset[0]["prompts"] == expected
    write_prompts(root, {"1": ["acne"], "70000": ["acne"]})
    with pytest.raises(LangBRTInputError, match=r"2 names match no pair \(1, 70000\) \(FFHQR pairs are named by "
                                                r"5-digit FFHQ id"):
        build_dataset(cfg, image_size=8)


# ------------------------------------------------------------------------------------------------- subsets


def test_select_fraction_is_reproducible_from_the_seed():
    assert select_fraction(1000, 0.05, seed=7) == select_fraction(1000, 0.05, seed=7)


def test_select_fraction_differs_across_seeds():
    assert select_fraction(1000, 0.05, seed=7) != select_fraction(1000, 0.05, seed=8)


@pytest.mark.parametrize("fraction", PAPER_FRACTIONS)
def test_select_fraction_takes_the_ceiling_of_the_fraction(fraction):
    ids = select_fraction(56_000, fraction, seed=0)
    assert len(ids) == int(np.ceil(round(fraction * 56_000, 6)))
    assert ids == sorted(set(ids)) and 0 <= ids[0] and ids[-1] < 56_000


def test_select_fraction_is_not_fooled_by_float_rounding():
    assert len(select_fraction(100, 0.07, seed=0)) == 7  # 0.07 * 100 == 7.000000000000001


def test_select_fraction_takes_at_least_one_item():
    assert len(select_fraction(10, 0.01, seed=0)) == 1


def test_smaller_fractions_are_nested_in_larger_ones_for_one_seed():
    small, large = set(select_fraction(500, 0.01, 3)), set(select_fraction(500, 0.2, 3))
    assert small <= large


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan"), True])
def test_fraction_outside_unit_interval_is_an_input_error(fraction):
    with pytest.raises(LangBRTInputError, match="fraction must be in"):
        select_fraction(100, fraction, seed=0)


def test_describe_subset_records_what_was_chosen():
    info = describe_subset(1000, 0.1, seed=5)
    assert (info.fraction, info.seed, info.n_items, info.count) == (0.1, 5, 1000, 100)
    assert len(info.ids_hash) == 12
    assert info.as_dict()["ids_hash"] == info.ids_hash
    assert describe_subset(1000, 0.1, seed=6).ids_hash != info.ids_hash
