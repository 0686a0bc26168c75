"""`langbrt-infer`: files, folders and globs in; `<stem>_retouched.<ext>` out; bad files skipped, inputs never
touched, usage errors one line with exit 2, a disk that fills one line with exit 4."""

import errno
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from bad_inputs import CAMERA_TAGS, TIFF_LAYOUT_TAGS, camera_tiff_bytes, deep_noise, png16_bytes, tiff16_bytes
from PIL import Image
from test_io import png_zlib_level_class

from langbrt import LangBRT, LangBRTConfig
from langbrt.artifact import METADATA_KEY
from langbrt.io import load_image
from langbrt.orphan_cleanup import ORPHAN_AGE_SECONDS
from langbrt.pixel_values import from_uint8_hwc, to_uint8_hwc
from langbrt.png16 import decode_png16
from langbrt.runtime import Retoucher
from langbrt.runtime.cli_infer import OVERLAY_ALPHA, OVERLAY_COLOR, main, overlay
from langbrt.text import default_text_encoder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("infer") / "ckpt"
    LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder()).save_pretrained(path)
    return path


def _photo(path, size=(48, 30), mode="RGB", **save):
    rng = np.random.default_rng(len(str(path)))
    channels = {"RGB": 3, "RGBA": 4}[mode]
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8), mode).save(path, **save)
    return path


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(model_dir, *args):
    return main([*map(str, args), "--model", str(model_dir), "--device", "cpu"])


def test_a_file_is_retouched_into_retouched_beside_it_in_its_own_format(model_dir, tmp_path):
    src = _photo(tmp_path / "face.jpg")
    assert _run(model_dir, src) == 0
    out = tmp_path / "retouched" / "face_retouched.jpg"
    with Image.open(out) as img:
        assert img.format == "JPEG" and img.size == (48, 30)


def test_folders_and_globs_expand_to_their_images(model_dir, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.webp"):
        _photo(folder / name)
    (folder / "notes.txt").write_text("not an image")
    other = _photo(tmp_path / "d.png")
    assert _run(model_dir, folder, str(tmp_path / "d*.png"), "-o", tmp_path / "out", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_retouched.png", "b_retouched.png", "c_retouched.webp", "d_retouched.png"]
    assert len(report["results"]) == 4 and report["failed"] == [] and other.exists()


def test_a_folder_holds_jpe_jfif_and_apng_images_too(model_dir, tmp_path, capsys):
    """QA, 2026-11-26: a folder scan skipped .jpe and .apng files, which Pillow reads (an APNG, like an animated
    GIF, as its first frame, with a warning line)."""
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(folder / "a.jpe", format="JPEG")
    _photo(folder / "b.jfif", format="JPEG")
    frames = [Image.new("RGB", (48, 30), colour) for colour in ("red", "blue")]
    frames[0].save(folder / "c.apng", "PNG", save_all=True, append_images=frames[1:])
    assert _run(model_dir, folder) == 0
    assert _names(folder / "retouched") == ["a_retouched.jpg", "b_retouched.jpg", "c_retouched.png"]
    assert "c.apng: PNG holds 2 frames" in capsys.readouterr().err


def test_json_reports_each_file_with_outputs_prompts_and_timings(model_dir, tmp_path, capsys):
    src = _photo(tmp_path / "face.png", size=(100, 60))
    assert _run(model_dir, src, "--json", "--prompt", "acne on the cheeks", "--prompt", "A red nose") == 0
    report = json.loads(capsys.readouterr().out)
    [entry] = report["results"]
    assert entry["input"] == str(src) and entry["prompts"] == ["acne on the cheeks", "a red nose"]
    assert entry["size"] == [100, 60] and set(entry["timing_ms"]) == {"preprocess", "model", "postprocess", "total"}
    assert set(entry) >= {"output", "maps", "mask", "changed_fraction"}


def test_save_maps_writes_one_overlay_per_prompt_and_the_mask(model_dir, tmp_path):
    src = _photo(tmp_path / "face.png")
    assert _run(model_dir, src, "--save-maps", "--prompt", "Acne on the cheeks!", "--prompt", "forehead wrinkles") == 0
    names = sorted(p.name for p in (tmp_path / "retouched").iterdir())
    assert names == ["face_map_0_acne-on-the-cheeks.png", "face_map_1_forehead-wrinkles.png", "face_mask.png",
                     "face_retouched.png"]


def test_save_maps_writes_overlays_at_fast_zlib_and_the_mask_at_the_default_level(model_dir, tmp_path):
    """The overlays, full-size previews, cost 6x less CPU at zlib level 1 (12 MP: 5.2 -> 0.9 s); the mask,
    mostly 0, is 4x smaller at level 6 for little time. The overlay's pixels are the painted photo's."""
    src = _photo(tmp_path / "face.png", size=(120, 90))
    assert _run(model_dir, src, "--save-maps", "--prompt", "forehead wrinkles") == 0
    out = tmp_path / "retouched"
    map_file, mask_file = out / "face_map_0_forehead-wrinkles.png", out / "face_mask.png"
    assert png_zlib_level_class(map_file.read_bytes()) == 0 and png_zlib_level_class(mask_file.read_bytes()) == 2
    photo = load_image(src)
    [result] = Retoucher.load(model_dir, device="cpu").retouch([photo], ["forehead wrinkles"])
    assert torch.equal(load_image(map_file).rgb, from_uint8_hwc(to_uint8_hwc(overlay(photo.rgb, result.maps))))


@pytest.mark.parametrize("covered", ["none", "spot", "edge", "all"])
def test_a_map_overlay_equals_painting_the_whole_frame_and_is_the_photo_where_the_map_is_0(covered):
    """`overlay` paints only the map's box; the photo it gives is the one the whole-frame blend gives."""
    g = torch.Generator().manual_seed(7)
    photo = torch.rand(3, 70, 90, generator=g)
    heat = torch.zeros(1, 70, 90)
    spot = {"none": (slice(0, 0), slice(0, 0)), "spot": (slice(20, 31), slice(40, 47)),
            "edge": (slice(60, 70), slice(0, 5)), "all": (slice(None), slice(None))}[covered]
    heat[:, spot[0], spot[1]] = torch.rand(1, 70, 90, generator=g)[:, spot[0], spot[1]]
    a = heat.clamp(0, 1) * OVERLAY_ALPHA  # (1, H, W)
    painted = overlay(photo, heat)
    assert torch.equal(painted, photo * (1 - a) + OVERLAY_COLOR * a)
    assert torch.equal(painted[:, heat[0] == 0], photo[:, heat[0] == 0])


def test_an_existing_output_is_refused_without_overwrite(model_dir, tmp_path, capsys):
    src = _photo(tmp_path / "face.png")
    assert _run(model_dir, src) == 0
    out = tmp_path / "retouched" / "face_retouched.png"
    before = _sha(out)
    out.write_bytes(b"keep me")
    assert _run(model_dir, src) == 1
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert _run(model_dir, src, "--overwrite") == 0 and _sha(out) == before


def test_a_dangling_link_in_an_outputs_place_is_an_existing_output(model_dir, tmp_path, capsys):
    """QA: a symbolic link to nothing where an output goes passed the 'exists?' check (it followed the link) and
    failed as the output was put in place, as "appeared while this run worked on it (another run?)", after the
    model had run: it was there all along, and with --overwrite it is replaced like any existing output."""
    src = _photo(tmp_path / "face.png")
    out = tmp_path / "retouched" / "face_retouched.png"
    out.parent.mkdir()
    out.symlink_to(tmp_path / "gone.png")
    assert _run(model_dir, src) == 1
    err = capsys.readouterr().err
    assert f"{out} exists; pass --overwrite" in err and "another run" not in err and out.is_symlink()
    assert _run(model_dir, src, "--overwrite") == 0 and not out.is_symlink() and out.is_file()


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_run_removes_the_old_temporaries_a_killed_run_left_beside_its_outputs(model_dir, tmp_path):
    """QA: a run killed while writing (SIGKILL) left hidden temporaries, 68 MB each, that reruns kept. Only
    ours (exact name form, for this run's outputs) and only old ones go: a live run's are seconds old."""
    src, out = _photo(tmp_path / "img.png"), tmp_path / "st"
    out.mkdir()
    orphans = [".img_retouched.png.k1ll3d_x.tmp", "..img_mask.png.k1ll3d_x.tmp.0nested0.tmp"]
    kept = [".img_retouched.png.fresh123.tmp",  # another run's, being written now
            ".img_retouched.png.my-notes.tmp", ".other_retouched.png.k1ll3d_x.tmp", "img_retouched.png.k1ll3d_x.tmp"]
    long_ago = time.time() - 2 * ORPHAN_AGE_SECONDS
    for name in orphans + kept:
        (out / name).write_bytes(b"partial")
        if name != ".img_retouched.png.fresh123.tmp":
            os.utime(out / name, (long_ago, long_ago))
    assert _run(model_dir, src, "-o", out, "--save-maps", "--prompt", "acne") == 0
    assert _names(out) == sorted([*kept, "img_map_0_acne.png", "img_mask.png", "img_retouched.png"])


def test_overwrite_removes_the_maps_and_mask_of_an_earlier_run_that_it_does_not_replace(model_dir, tmp_path):
    """QA: a second run with other prompts (or without --save-maps) left the first run's maps and mask beside
    its image, two `map_0_*` of one photo."""
    src, out = _photo(tmp_path / "img.png"), tmp_path / "st"
    assert _run(model_dir, src, "-o", out, "--save-maps", "--prompt", "acne on the cheeks",
                "--prompt", "forehead wrinkles") == 0
    assert _run(model_dir, src, "-o", out, "--overwrite", "--save-maps", "--prompt", "dark circles") == 0
    assert _names(out) == ["img_map_0_dark-circles.png", "img_mask.png", "img_retouched.png"]
    assert _run(model_dir, src, "-o", out, "--overwrite", "--prompt", "dark circles") == 0
    assert _names(out) == ["img_retouched.png"]


def test_overwrite_removes_no_file_another_photo_or_an_input_could_own(model_dir, tmp_path):
    """Only names of this photo's maps and mask go: not another photo's outputs, not a name that is also the
    mask of a photo called `img_map_0` ('img_map_0_mask.png'), not an input, not a folder."""
    out = tmp_path / "st"
    out.mkdir()
    kept = ["img_map_0_mask.png", "img_map_0_retouched.png", "other_map_0_acne.png", "img_map_00_acne.png",
            "img_map_0_acne.jpg", "img_mask.png.txt", "xx_img_mask.png"]
    for name in kept:
        (out / name).write_bytes(b"not ours")
    (out / "img_map_1_wrinkles.png").mkdir()
    src, input_named_like_a_mask = _photo(tmp_path / "img.png"), _photo(out / "img_mask.png")
    before = _sha(input_named_like_a_mask)
    assert _run(model_dir, src, input_named_like_a_mask, "-o", out, "--overwrite") == 0
    assert _names(out) == sorted([*kept, "img_map_1_wrinkles.png", "img_mask.png", "img_mask_retouched.png",
                                  "img_retouched.png"])
    assert _sha(input_named_like_a_mask) == before


def test_without_overwrite_an_earlier_runs_maps_are_kept(model_dir, tmp_path, capsys):
    src, out = _photo(tmp_path / "img.png"), tmp_path / "st"
    assert _run(model_dir, src, "-o", out, "--save-maps", "--prompt", "acne") == 0
    assert _run(model_dir, src, "-o", out, "--prompt", "a mole") == 1  # refused: its image exists
    assert "pass --overwrite" in capsys.readouterr().err
    (out / "img_retouched.png").unlink()
    assert _run(model_dir, src, "-o", out, "--prompt", "a mole") == 0
    assert _names(out) == ["img_map_0_acne.png", "img_mask.png", "img_retouched.png"]


def test_an_overwrite_run_that_stops_before_its_outputs_are_in_place_keeps_the_earlier_ones(model_dir, tmp_path,
                                                                                            monkeypatch):
    """The earlier maps go only once the new outputs are in place: Ctrl-C while writing leaves the old result
    whole, never a photo with neither."""
    src, out = _photo(tmp_path / "img.png"), tmp_path / "st"
    assert _run(model_dir, src, "-o", out, "--save-maps", "--prompt", "acne") == 0
    before = {name: _sha(out / name) for name in _names(out)}
    _interrupt_after_the_first_write(monkeypatch)
    assert _run(model_dir, src, "-o", out, "--overwrite", "--save-maps", "--prompt", "a mole") == 130
    assert {name: _sha(out / name) for name in _names(out)} == before


def test_an_earlier_map_that_cannot_be_removed_is_one_warning_line(model_dir, tmp_path, capsys, monkeypatch):
    src, out = _photo(tmp_path / "img.png"), tmp_path / "st"
    assert _run(model_dir, src, "-o", out, "--save-maps", "--prompt", "acne") == 0
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if self.name == "img_map_0_acne.png":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    capsys.readouterr()
    assert _run(model_dir, src, "-o", out, "--overwrite") == 0
    assert capsys.readouterr().err == (f"langbrt-infer: warning: {src}: could not remove an earlier run's "
                                       f"{out / 'img_map_0_acne.png'} (Permission denied); delete it by hand\n")


@pytest.mark.parametrize("prompt", ["Acne on the cheeks!", "x" * 80, "!!!", "dark circles under the eyes"])
@pytest.mark.parametrize("name", ["img", "s_bmp_2", "a b.c"])
def test_every_map_and_mask_name_the_writer_gives_is_known_as_that_photos(name, prompt):
    """What --overwrite removes is found by name: each name `planned` writes must be recognised, for no other."""
    from langbrt.runtime.infer_names import is_only_map_or_mask_of, map_name, mask_name

    for file_name in (map_name(name, 12, prompt), mask_name(name)):
        assert is_only_map_or_mask_of(file_name, name)
        assert not is_only_map_or_mask_of(file_name, name + "_x") and not is_only_map_or_mask_of(file_name, "im")


def _another_run_writes(monkeypatch, name, *, links=True):
    """Make `name` appear in the results folder just before this run puts it there, as a second langbrt-infer
    writing the same folder would after this run checked its outputs; os.link raises EPERM if not `links`."""
    from langbrt import atomic

    real_link = os.link

    def link(src, dst):
        if Path(dst).name == name and not Path(dst).exists():
            Path(dst).write_bytes(b"another run's")
        if not links:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        real_link(src, dst)

    monkeypatch.setattr(atomic.os, "link", link)


@pytest.mark.parametrize("links", [True, False], ids=["hard-links", "no-hard-links"])
def test_an_output_another_run_writes_meanwhile_is_kept_and_the_photo_left_undone(model_dir, tmp_path, capsys,
                                                                                 monkeypatch, links):
    """QA: two runs into one folder both passed the exists-check, and the second rename silently replaced the
    first run's files, leaving a photo's image from one run and its maps from the other."""
    sources = [_photo(tmp_path / "a.png"), _photo(tmp_path / "b.png")]
    _another_run_writes(monkeypatch, "a_retouched.png", links=links)  # the image: renamed last
    assert _run(model_dir, *sources, "-o", tmp_path / "out", "--save-maps", "--prompt", "acne") == 1
    assert _one_line(capsys) == (f"langbrt-infer: error: {sources[0]}: {tmp_path / 'out' / 'a_retouched.png'} "
                                 "appeared while this run worked on it (another run?); pass --overwrite to replace it")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_retouched.png", "b_map_0_acne.png", "b_mask.png", "b_retouched.png"]  # a's maps undone, no temporaries
    assert (tmp_path / "out" / "a_retouched.png").read_bytes() == b"another run's"


def test_with_overwrite_an_output_another_run_writes_meanwhile_is_replaced(model_dir, tmp_path, monkeypatch):
    from langbrt import atomic

    src = _photo(tmp_path / "face.png")
    out = tmp_path / "retouched" / "face_retouched.png"
    real_replace = os.replace

    def replace(tmp, dst):
        if Path(dst) == out and not out.exists():
            out.write_bytes(b"another run's")
        real_replace(tmp, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    assert _run(model_dir, src, "--overwrite") == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (48, 30)


def test_a_corrupt_file_is_reported_and_the_others_still_processed(model_dir, tmp_path, capsys):
    good = [_photo(tmp_path / "a.png"), _photo(tmp_path / "c.png")]
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    sums = {p: _sha(p) for p in [*good, tmp_path / "b.png"]}
    assert _run(model_dir, tmp_path, "--json") == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [f["input"] for f in report["failed"]] == [str(tmp_path / "b.png")]
    assert len(report["results"]) == 2
    assert len([line for line in captured.err.splitlines() if "b.png" in line]) == 1
    assert "Traceback" not in captured.err
    assert {p: _sha(p) for p in sums} == sums  # inputs are never modified


def test_an_output_that_would_overwrite_an_input_is_refused(model_dir, tmp_path):
    src = _photo(tmp_path / "face.png")
    clash = _photo(tmp_path / "face_retouched.png")
    before = _sha(clash)
    assert _run(model_dir, src, clash, "-o", tmp_path, "--overwrite") == 2  # face -> face_retouched: an input
    assert _sha(clash) == before and not (tmp_path / "face_retouched_retouched.png").exists()  # refused up front


def test_an_output_folder_that_cannot_be_made_is_one_line_before_any_photo(model_dir, tmp_path, capsys, monkeypatch):
    """`retouched` beside the inputs is a file: one line, exit 2, instead of one failure per photo."""
    from langbrt.runtime import Retoucher

    sources = [_photo(tmp_path / f"{name}.png") for name in "abc"]
    (tmp_path / "retouched").write_text("not a folder")
    monkeypatch.setattr(Retoucher, "retouch", lambda *a, **k: pytest.fail("the model ran"))
    assert _run(model_dir, *sources) == 2
    err = capsys.readouterr().err
    assert "cannot write into" in err and len(err.strip().splitlines()) == 1, err


def test_an_output_folder_that_is_a_dangling_link_is_named_as_one(model_dir, tmp_path, capsys):
    """It was 'cannot write into out (File exists)': true of the link, no help to whoever typed the name."""
    src = _photo(tmp_path / "face.png")
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    assert _run(model_dir, src, "-o", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"is a symbolic link to {tmp_path / 'gone'}, which does not exist" in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_disk_that_fills_mid_run_stops_it_with_exit_4_keeping_the_complete_photos(model_dir, tmp_path, capsys,
                                                                                    monkeypatch):
    """Not a per-file failure (exit 1, go on): every later photo would fail the same way."""
    sources = [_photo(tmp_path / f"{name}.png") for name in "abc"]
    real_save, saved = Image.Image.save, []

    def full_after_the_first_photo(self, fp, *args, **kwargs):
        if saved:
            fp.write(b"\x89PNG half an image")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        saved.append(fp)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_after_the_first_photo)
    assert _run(model_dir, *sources, "-o", tmp_path / "out", "--json") == 4
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith(f"langbrt-infer: error: {sources[1]}: cannot write into {tmp_path / 'out'} (No space left")
    assert err.rstrip().endswith("stopped there: 1 of 3 image(s) retouched, their outputs complete")
    assert err.count("\n") == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a_retouched.png"]  # no temporary file left
    report = json.loads(captured.out)  # --json still reports what was done, and where it stopped
    assert [r["input"] for r in report["results"]] == [str(sources[0])]
    assert [f["input"] for f in report["failed"]] == [str(sources[1])]


def test_a_write_that_fails_for_one_photo_alone_skips_it_and_goes_on(model_dir, tmp_path, capsys):
    """A folder where one output goes (or a name too long) fails that photo only: exit 1, not 4, and the
    photos after it are retouched."""
    sources = [_photo(tmp_path / f"{name}.png") for name in "ab"]
    (tmp_path / "out" / "a_retouched.png").mkdir(parents=True)
    assert _run(model_dir, *sources, "-o", tmp_path / "out", "--overwrite") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"langbrt-infer: error: {sources[0]}: cannot write into") and err.count("\n") == 1
    assert (tmp_path / "out" / "b_retouched.png").is_file()


def test_rgba_input_keeps_its_alpha_as_png(model_dir, tmp_path):
    src = _photo(tmp_path / "face.png", mode="RGBA")
    assert _run(model_dir, src) == 0
    with Image.open(tmp_path / "retouched" / "face_retouched.png") as img, Image.open(src) as orig:
        assert img.mode == "RGBA" and np.array_equal(np.array(img)[..., 3], np.array(orig)[..., 3])


def test_an_exif_rotated_photo_keeps_its_orientation(model_dir, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    src = _photo(tmp_path / "portrait.jpg", size=(80, 40), exif=exif.tobytes())
    assert _run(model_dir, src) == 0
    with Image.open(tmp_path / "retouched" / "portrait_retouched.jpg") as img:
        assert img.size == (40, 80)  # stored upright
        assert img.getexif().get(0x0112, 1) == 1  # and not rotated a second time by viewers


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "{tmp}/missing"], "no such model"),
        (["--model", "{model}", "--prompt", "  "], "prompt"),
        (["--model", "{model}", "--backend", "tflite"], "invalid choice"),
    ],
)
def test_usage_errors_are_one_line_exit_2_and_write_nothing(model_dir, tmp_path, capsys, args, message):
    src = _photo(tmp_path / "face.png")
    argv = [str(src), *(a.format(tmp=tmp_path, model=model_dir) for a in args)]
    with pytest.raises(SystemExit) if "--backend" in args else _no_raise() as caught:
        code = main(argv)
    code = caught.value.code if caught is not None else code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "retouched").exists()


@pytest.mark.parametrize("spelling", ["{name}", "@{name}", "{path}"])
def test_a_prompt_that_names_a_file_is_one_line_exit_2_not_retouched_for_as_words(model_dir, tmp_path, capsys,
                                                                                  monkeypatch, spelling):
    """QA: `--prompt prompts.txt` retouched the photo for the blemish "prompts.txt", exit 0."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.txt").write_text("acne on the cheeks\n")
    src = _photo(tmp_path / "face.png")
    prompt = spelling.format(name="prompts.txt", path=tmp_path / "prompts.txt")
    code = _run(model_dir, src, "--prompt", prompt)
    err = capsys.readouterr().err
    assert code == 2 and f"--prompt {prompt!r} names a file" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "retouched").exists()


def test_a_prompt_word_that_is_also_a_file_name_here_is_still_a_prompt(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acne").write_text("")
    assert _run(model_dir, _photo(tmp_path / "face.png"), "--prompt", "acne") == 0


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("metadata", [{"format": "langbrt-artifact"},
                                      {"format": "langbrt-artifact", "format_version": "x"}])
def test_an_export_with_incomplete_metadata_is_one_line_exit_2(tmp_path, capsys, metadata):
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(metadata)})
    onnx.save(model, tmp_path / "edited.onnx")
    src = _photo(tmp_path / "face.png")
    code = main([str(src), "--model", str(tmp_path / "edited.onnx"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "edited.onnx" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "retouched").exists()


def test_inputs_sharing_a_stem_get_their_extension_in_the_output_names(model_dir, tmp_path):
    """s.bmp, s.gif and s.tif all become PNGs: each keeps its own outputs, maps included."""
    sources = [_photo(tmp_path / f"s.{ext}") for ext in ("bmp", "gif", "tif")]
    assert _run(model_dir, *sources, "-o", tmp_path / "out", "--save-maps") == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    for ext in ("bmp", "gif", "tif"):
        assert f"s_{ext}_retouched.png" in names and f"s_{ext}_mask.png" in names
    assert "s_retouched.png" not in names


def test_a_stem_taken_by_the_extension_scheme_gets_a_number_not_an_error(model_dir, tmp_path, capsys):
    """QA: `s.bmp`, `s.gif` and `s_bmp.png` in one folder were refused ('coll/s.bmp and coll/s_bmp.png would
    write the same outputs'): s.bmp's name `s_bmp` is s_bmp.png's own stem."""
    folder = tmp_path / "coll"
    folder.mkdir()
    sources = [_photo(folder / name) for name in ("s.bmp", "s.gif", "s_bmp.png")]
    assert _run(model_dir, folder, "--json", "--save-maps", "--prompt", "acne") == 0
    outputs = {Path(r["input"]).name: Path(r["output"]).name for r in json.loads(capsys.readouterr().out)["results"]}
    assert outputs == {"s_bmp.png": "s_bmp_retouched.png", "s.bmp": "s_bmp_2_retouched.png",
                       "s.gif": "s_gif_retouched.png"}
    names = sorted(p.name for p in (folder / "retouched").iterdir())
    assert names == sorted(f"{stem}_{kind}.png" for stem in ("s_bmp", "s_bmp_2", "s_gif")
                           for kind in ("retouched", "mask", "map_0_acne"))
    assert all(source.exists() for source in sources)


def test_output_names_do_not_depend_on_the_order_the_inputs_are_named_in(model_dir, tmp_path, capsys):
    """`s.BMP` and `s.bmp` (one folder, a case-sensitive file system) both want `s_bmp`: the second in sorted
    order gets `s_bmp_2`, whichever was named first."""
    sources = [_photo(tmp_path / "s.bmp"), _photo(tmp_path / "s.BMP")]
    for order in (sources, sources[::-1]):
        assert _run(model_dir, *order, "-o", tmp_path / "out", "--json", "--overwrite") == 0
        results = json.loads(capsys.readouterr().out)["results"]
        assert {Path(r["input"]).name: Path(r["output"]).name for r in results} == {
            "s.BMP": "s_bmp_retouched.png", "s.bmp": "s_bmp_2_retouched.png"}


def test_max_pixels_sets_the_largest_photo_and_the_refusal_names_the_flag(model_dir, tmp_path, capsys):
    """QA: photos over 64 MP were refused with no way to raise the limit."""
    src = _photo(tmp_path / "face.png", size=(48, 30))  # 1440 pixels
    assert _run(model_dir, src, "--max-pixels", "1439") == 1
    assert _one_line(capsys) == (f"langbrt-infer: error: {src}: image is 48x30 = 0.0 MP, over the 0.001439 MP limit; "
                                 "pass a larger --max-pixels (W*H) to retouch it")
    assert not (tmp_path / "retouched").exists()
    assert _run(model_dir, src, "--max-pixels", "1440") == 0
    assert (tmp_path / "retouched" / "face_retouched.png").is_file()


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_max_pixels_under_1_is_one_usage_line_as_in_langbrt_serve(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exited:
        main([str(_photo(tmp_path / "face.png")), "--max-pixels", value])
    assert exited.value.code == 2
    assert _one_line(capsys) == "langbrt-infer: error: --max-pixels must be at least 1 (see langbrt-infer --help)"


@pytest.mark.parametrize("flag", ["--model", "-o"])
def test_an_empty_model_or_output_is_a_usage_error_not_the_default(tmp_path, capsys, monkeypatch, flag):
    """QA: `--model "$MODEL"` with the variable unset retouched with the bundled model, and `-o "$OUT"` wrote into
    the current folder, both exit 0: an empty name is a mistake to report, not a request for the default."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main([str(_photo(tmp_path / "face.png")), flag, ""])
    assert exited.value.code == 2
    line = _one_line(capsys)
    assert line.startswith("langbrt-infer: error: argument ") and flag in line
    assert ": is empty (an unset shell variable?)" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.png"]


def test_the_same_file_spelt_twice_is_retouched_once(model_dir, tmp_path, capsys, monkeypatch):
    src = _photo(tmp_path / "face.png")
    monkeypatch.chdir(tmp_path)
    assert _run(model_dir, "face.png", src, "--json") == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 1


def test_one_name_from_two_folders_into_one_output_folder_is_refused_up_front(model_dir, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sources = [_photo(tmp_path / "a" / "x.png"), _photo(tmp_path / "b" / "x.png")]
    assert _run(model_dir, *sources, "-o", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "would write the same outputs" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_existing_output_is_refused_before_the_model_runs(model_dir, tmp_path, monkeypatch):
    from langbrt.runtime import Retoucher

    src = _photo(tmp_path / "face.png")
    (tmp_path / "retouched").mkdir()
    (tmp_path / "retouched" / "face_retouched.png").write_bytes(b"keep me")
    monkeypatch.setattr(Retoucher, "retouch", lambda *a, **k: pytest.fail("the model ran for a refused file"))
    assert _run(model_dir, src) == 1


def _interrupt_after_the_first_write(monkeypatch) -> list:
    """Ctrl-C on langbrt-infer's second image write; returns the list of writes that went through."""
    import langbrt.runtime.cli_infer as cli_infer

    real_write, written = cli_infer.write_image, []

    def interrupted_after_the_first(*args, **kwargs):
        if written:
            raise KeyboardInterrupt
        written.append(real_write(*args, **kwargs))
        return written[-1]

    monkeypatch.setattr(cli_infer, "write_image", interrupted_after_the_first)
    return written


def test_a_map_name_too_long_for_the_file_system_skips_that_photo_in_one_line(model_dir, tmp_path, capsys):
    """A legal 244-byte input name whose map names run past 255 bytes. QA, 2026-11-26: the check for an existing
    output (Path.exists) raised 'File name too long' and the run ended in a traceback, the photos after it
    not retouched."""
    long_one = _photo(tmp_path / ("L" * 240 + ".png"))
    other = _photo(tmp_path / "z.png")
    (tmp_path / "retouched").mkdir()  # where it is missing, looking up a name in it fails 'No such file' first
    assert _run(model_dir, long_one, other, "--save-maps") == 1
    err = _one_line(capsys)
    assert err.startswith(f"langbrt-infer: error: {long_one}: cannot write into ") and "(File name too long)" in err
    written = sorted(p.name for p in (tmp_path / "retouched").iterdir())
    assert all(name.startswith("z_") for name in written) and {"z_retouched.png", "z_mask.png"} <= set(written)


def test_an_interrupt_while_writing_leaves_none_of_that_photos_outputs(model_dir, tmp_path, capsys, monkeypatch):
    """Ctrl-C after the retouched image is written but before its maps: neither is left, no temp files."""
    src = _photo(tmp_path / "face.png")
    written = _interrupt_after_the_first_write(monkeypatch)
    assert _run(model_dir, src, "--save-maps") == 130
    assert written, "the first output was not even attempted"
    assert not (tmp_path / "retouched").exists()  # created by this run, left empty: removed again
    assert "interrupted after 0 of 1" in capsys.readouterr().err


def test_an_interrupt_while_the_outputs_are_synced_to_disk_leaves_none_of_them(model_dir, tmp_path, capsys,
                                                                                monkeypatch):
    """Ctrl-C during the last fsync of a photo's outputs (a slow disk), after all were written. QA, 2026-11-26:
    each output was renamed into place after its own fsync, so the maps and mask stayed without the image, and
    running the command again refused the photo ('exists; pass --overwrite')."""
    src = _photo(tmp_path / "face.png")
    real_fsync, image_syncs = os.fsync, []

    def fsync(fd):
        if "face_retouched" in os.readlink(f"/proc/self/fd/{fd}"):
            image_syncs.append(fd)
            if len(image_syncs) == 2:  # the first is write_image's own, of the image's staged file
                raise KeyboardInterrupt
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert _run(model_dir, src, "--save-maps") == 130
    assert not (tmp_path / "retouched").exists()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert _run(model_dir, src, "--save-maps") == 0
    assert "interrupted after 0 of 1" in capsys.readouterr().err


def test_an_interrupt_keeps_the_output_folders_that_hold_results(model_dir, tmp_path, monkeypatch):
    """Two photos into a new nested -o folder, Ctrl-C on the second: the first's outputs and their folder stay."""
    sources = [_photo(tmp_path / "a.png"), _photo(tmp_path / "b.png")]
    _interrupt_after_the_first_write(monkeypatch)
    out = tmp_path / "new" / "results"
    assert main([*map(str, sources), "--model", str(model_dir), "--device", "cpu", "-o", str(out)]) == 130
    assert [p.name for p in out.iterdir()] == ["a_retouched.png"]


def test_a_prompt_an_export_cannot_take_is_refused_before_anything_runs(model_dir, tmp_path, capsys):
    """An ONNX export with one extra prompt slot and two new prompts: exit 2 up front, not per file."""
    pytest.importorskip("onnxruntime")
    from langbrt.export.onnx_export import export_onnx

    onnx_path = export_onnx(LangBRT.from_pretrained(model_dir).eval(), tmp_path / "m.onnx", extra_prompt_slots=1)
    sources = [_photo(tmp_path / "a.png"), _photo(tmp_path / "b.png")]
    code = main([*map(str, sources), "--model", str(onnx_path), "--prompt", "a red spot", "--prompt", "a mole"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "2 prompts outside" in err and "it has 1 extra prompt slot;" in err  # counted in good English
    assert not (tmp_path / "retouched").exists()


def test_a_reader_that_stops_early_ends_it_quietly(model_dir, tmp_path):
    """`langbrt-infer ... --json | head -c 10`: no BrokenPipeError traceback, the outputs are still written."""
    import subprocess
    import sys

    src = _photo(tmp_path / "face.png")
    code = "import sys; from langbrt.runtime.cli_infer import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, str(src), "--model", str(model_dir), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the JSON is printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert (tmp_path / "retouched" / "face_retouched.png").exists()


def test_a_stdout_on_a_full_disk_is_one_line_and_exit_4_with_the_outputs_written(model_dir, tmp_path, monkeypatch,
                                                                                  capsys):
    """`langbrt-infer ... --json > /dev/full`: the photos are retouched, the report cannot be printed; QA,
    2026-11-26: that was an OSError traceback."""
    from test_cli_pipes import _FullDisk

    src = _photo(tmp_path / "face.png")
    with open(tmp_path / "stdout", "w") as handle:
        monkeypatch.setattr("sys.stdout", _FullDisk(handle.fileno()))
        code = _run(model_dir, src, "--json")
    assert code == 4
    assert _one_line(capsys) == "langbrt-infer: error: cannot write to standard output (No space left on device)"
    assert (tmp_path / "retouched" / "face_retouched.png").exists()


# ------------------------------------------------------------------------------------------ error paths


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_no_input_images_is_one_line_exit_2_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from langbrt.runtime import Retoucher

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    monkeypatch.setattr(Retoucher, "load", lambda *a, **k: pytest.fail("the model loaded"))
    assert main([str(tmp_path / "empty"), str(tmp_path / "none_*.png"), str(tmp_path / "gone.jpg")]) == 2
    err = _one_line(capsys)
    assert err.startswith("langbrt-infer: error: no input images: ") and "none_*.png" in err and "gone.jpg" in err
    assert "gone.jpg: no such file, or no images in it" in err  # the same words as beside good inputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


@pytest.mark.parametrize("missing", ["gone.png", "none_*.png"])
def test_a_missing_file_or_empty_glob_beside_good_inputs_is_one_line_and_exit_1(model_dir, tmp_path, capsys, missing):
    good = [_photo(tmp_path / "a.png"), _photo(tmp_path / "b.png")]
    assert _run(model_dir, good[0], tmp_path / missing, good[1], "--json") == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert sorted(Path(r["input"]).name for r in report["results"]) == ["a.png", "b.png"]
    assert [f["input"] for f in report["failed"]] == [str(tmp_path / missing)]
    said = f"langbrt-infer: error: {tmp_path / missing}: no such file, or no images in it"
    assert captured.err.strip().splitlines() == [said]
    assert sorted(p.name for p in (tmp_path / "retouched").iterdir()) == ["a_retouched.png", "b_retouched.png"]


@pytest.mark.parametrize(("flags", "says"), [(["--precision", "fp16"], "fp16"), (["--device", "cuda"], "--device cpu")])
def test_gpu_only_options_on_a_machine_without_cuda_are_one_line(model_dir, tmp_path, capsys, monkeypatch, flags, says):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    src = _photo(tmp_path / "face.png")
    assert main([str(src), "--model", str(model_dir), *flags]) == 2
    err = _one_line(capsys)
    assert err.startswith("langbrt-infer: error: ") and says in err and "CUDA" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.png"]


@pytest.mark.parametrize("name", ["face.jpg", "face.png"])
def test_the_inputs_icc_profile_is_carried_into_the_output(model_dir, tmp_path, name):
    """A Display P3 or Adobe RGB photo retouched without its profile would show with shifted colours."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # Pillow writes none by default
    src = _photo(tmp_path / name, icc_profile=profile)
    with Image.open(src) as img:
        assert img.info.get("icc_profile") == profile  # the input really has it
        fmt = img.format
    assert _run(model_dir, src) == 0
    with Image.open(tmp_path / "retouched" / name.replace("face", "face_retouched")) as out:
        assert out.format == fmt and out.info.get("icc_profile") == profile


def test_a_tiffs_exif_is_carried_into_the_png_output(model_dir, tmp_path):
    """QA: `langbrt-infer x.tiff` wrote a PNG without the TIFF's Make, Model and Software."""
    src = tmp_path / "scan.tiff"
    src.write_bytes(camera_tiff_bytes())
    assert _run(model_dir, src) == 0
    with Image.open(tmp_path / "retouched" / "scan_retouched.png") as out:
        exif = out.getexif()
        assert {tag: exif.get(tag) for tag in CAMERA_TAGS} == CAMERA_TAGS and not set(exif) & set(TIFF_LAYOUT_TAGS)
        assert out.info.get("icc_profile") == b"fake-icc"


# ------------------------------------------------------------------------------------------ 16-bit


@pytest.fixture(scope="module")
def gated_model_dir(tmp_path_factory):
    """A tiny model whose map is exactly 0 on part of a photo (the random tiny model's covers nearly all)."""
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(map_threshold=0.45, map_saturation=0.55), text_encoder=default_text_encoder())
    with torch.no_grad():
        model.tbd.map_bias.fill_(0.0)  # probabilities straddle the threshold
    return model.save_pretrained(tmp_path_factory.mktemp("infer-gated") / "ckpt")


def _api_mask(model_dir, src, prompt):
    """The (H, W) mask the Python API computes for the same photo and prompt: where the CLI may change pixels."""
    [result] = Retoucher.load(model_dir, device="cpu").retouch([load_image(src)], [prompt])
    return result.mask[0].numpy()


def test_a_16bit_png_comes_back_16bit_and_bit_identical_where_the_mask_is_0(gated_model_dir, tmp_path, capsys):
    samples = deep_noise()  # (H, W, 3) uint16, no multiple of 257: nothing passes through 8 bits unseen
    src = tmp_path / "deep.png"
    src.write_bytes(png16_bytes(samples))
    assert _run(gated_model_dir, src, "--prompt", "acne on the cheeks", "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["results"][0]["bit_depth"] == 16 and "warning" not in captured.err
    data = (tmp_path / "retouched" / "deep_retouched.png").read_bytes()
    assert (data[24], data[25]) == (16, 2)  # IHDR: 16 bits per sample, RGB
    out = decode_png16(data, alpha=False)
    mask = _api_mask(gated_model_dir, src, "acne on the cheeks")
    untouched = mask == 0  # (H, W)
    assert out.shape == samples.shape and untouched.any() and (~untouched).any()
    assert np.array_equal(out[untouched], samples[untouched])  # bit for bit, at 16 bits
    assert not np.array_equal(out[~untouched], samples[~untouched])  # the retouch did reach the file


def test_a_16bit_photo_with_an_undecodable_name_gets_a_16bit_mask_and_strict_json(model_dir, tmp_path, capsys):
    """QA, 2026-11-26: the saved mask was 8-bit beside a 16-bit output (values under 1/510 showed 0 where the
    image changed), and a name with a non-UTF-8 byte reached --json as a lone '\\udcff' escape."""
    src = tmp_path / os.fsdecode(b"bad\xff.png")
    src.write_bytes(png16_bytes(deep_noise()))
    assert _run(model_dir, src, "--json", "--save-maps") == 0
    out = capsys.readouterr().out
    assert "\\udc" not in out and "bad\\\\xff.png" in out, out
    [entry] = json.loads(out)["results"]
    mask = (tmp_path / "retouched" / os.fsdecode(b"bad\xff_mask.png")).read_bytes()
    assert mask[24] == 16 and entry["bit_depth"] == 16  # IHDR bit depth


def test_a_16bit_rgba_png_keeps_its_alpha_at_16_bits(model_dir, tmp_path):
    samples = deep_noise(channels=4)
    src = tmp_path / "cutout.png"
    src.write_bytes(png16_bytes(samples))
    assert _run(model_dir, src) == 0
    out = decode_png16((tmp_path / "retouched" / "cutout_retouched.png").read_bytes(), alpha=True)
    assert out.shape == samples.shape and np.array_equal(out[:, :, 3], samples[:, :, 3])


def test_an_8bit_png_still_comes_back_8bit_and_identical_where_the_mask_is_0(gated_model_dir, tmp_path):
    src = _photo(tmp_path / "face.png")
    assert _run(gated_model_dir, src, "--prompt", "acne on the cheeks") == 0
    with Image.open(tmp_path / "retouched" / "face_retouched.png") as img, Image.open(src) as orig:
        assert img.mode == "RGB"
        out, before = np.asarray(img), np.asarray(orig)
    untouched = _api_mask(gated_model_dir, src, "acne on the cheeks") == 0
    assert out.dtype == np.uint8 and untouched.any() and np.array_equal(out[untouched], before[untouched])


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_a_lossless_webp_comes_back_lossless_and_identical_where_the_mask_is_0(gated_model_dir, tmp_path, mode):
    """QA, 2026-11-26: a lossless WebP was written back lossy (quality 95), so noise outside the mask moved by
    up to 225 levels. A lossy WebP stays lossy: its pixels were never exact."""
    src = _photo(tmp_path / "face.webp", mode=mode, lossless=True)
    assert load_image(src).lossless
    assert _run(gated_model_dir, src, "--prompt", "acne on the cheeks") == 0
    out_path = tmp_path / "retouched" / "face_retouched.webp"
    assert out_path.read_bytes()[12:16] in (b"VP8L", b"VP8X") and b"VP8L" in out_path.read_bytes()[:64]
    with Image.open(out_path) as img, Image.open(src) as orig:
        out, before = np.asarray(img), np.asarray(orig)
    untouched = _api_mask(gated_model_dir, src, "acne on the cheeks") == 0
    assert untouched.any() and np.array_equal(out[untouched], before[untouched])
    lossy = _photo(tmp_path / "lossy.webp", quality=80)
    assert not load_image(lossy).lossless
    assert _run(gated_model_dir, lossy, "--prompt", "acne on the cheeks") == 0
    assert b"VP8L" not in (tmp_path / "retouched" / "lossy_retouched.webp").read_bytes()[:64]


def test_the_output_suffix_names_the_format_written_not_the_inputs_misleading_one(model_dir, tmp_path):
    """QA, 2026-11-26: JPEG data named 'x.webp' came back as 'x_retouched.webp' holding a JPEG, a file with no
    suffix as 'noext_retouched' with none. A suffix that names the format ('.jpeg') is kept."""
    sources = [_photo(tmp_path / name, format="JPEG") for name in ("x.webp", "noext", "y.jpeg")]
    assert _run(model_dir, *sources) == 0
    written = {p.name: p for p in (tmp_path / "retouched").iterdir()}
    assert sorted(written) == ["noext_retouched.jpg", "x_retouched.jpg", "y_retouched.jpeg"]
    for path in written.values():
        with Image.open(path) as img:
            assert img.format == "JPEG"


def test_a_16bit_colour_tiff_comes_back_as_a_16bit_png_bit_identical_where_the_mask_is_0(gated_model_dir, tmp_path,
                                                                                         capsys):
    samples = deep_noise()
    src = tmp_path / "deep.tif"
    src.write_bytes(tiff16_bytes(samples))
    assert _run(gated_model_dir, src, "--prompt", "acne on the cheeks", "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["results"][0]["bit_depth"] == 16 and "warning" not in captured.err
    out = decode_png16((tmp_path / "retouched" / "deep_retouched.png").read_bytes(), alpha=False)
    untouched = _api_mask(gated_model_dir, src, "acne on the cheeks") == 0  # (H, W)
    assert out.shape == samples.shape and untouched.any() and (~untouched).any()
    assert np.array_equal(out[untouched], samples[untouched])  # bit for bit, at 16 bits


def test_an_lzw_16bit_colour_tiff_comes_back_8bit_with_one_warning_line(model_dir, tmp_path, capsys):
    src = tmp_path / "deep.tif"
    src.write_bytes(tiff16_bytes(deep_noise(), lzw=True))
    assert _run(model_dir, src, "--json") == 0
    captured = capsys.readouterr()
    [entry] = json.loads(captured.out)["results"]
    warning = f"langbrt-infer: warning: {src}: 16-bit TIFF comes back as 8-bit"
    assert captured.err.startswith(warning) and len(captured.err.strip().splitlines()) == 1, captured.err
    assert entry["bit_depth"] == 8 and entry["warning"] in captured.err
    with Image.open(tmp_path / "retouched" / "deep_retouched.png") as img:
        assert img.mode == "RGB" and img.size == (48, 30)


def test_threads_sets_torchs_cpu_threads_before_the_model_runs(model_dir, tmp_path, monkeypatch):
    """On a machine whose cores other jobs share, one thread was 3-10x faster than torch's default (README: CPU
    threads); without a flag the only way was an environment variable."""
    asked = []
    monkeypatch.setattr(torch, "set_num_threads", asked.append)  # this test's process keeps its own setting
    assert _run(model_dir, _photo(tmp_path / "face.png"), "--threads", "1") == 0
    assert asked == [1]


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_threads_below_one_is_a_flag_error(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as stop:
        main([str(_photo(tmp_path / "face.png")), "--threads", value])
    assert stop.value.code == 2
    said = f"langbrt-infer: error: argument --threads: must be a whole number >= 1, got {value}"
    assert _one_line(capsys).startswith(said)
