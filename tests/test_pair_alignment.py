"""Misaligned before/after pairs: what `pair_alignment` measures, and the one line training and eval say."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from test_distributed import FAST_ON_PAIRS as TORCHRUN_FAST
from test_distributed import error_lines, torchrun
from test_train_cli import ERROR, run_cli

from langbrt.config import LangBRTConfig
from langbrt.io import read_image, write_image
from langbrt.model import LangBRT
from langbrt.text import default_text_encoder
from langbrt.training.cli_eval import main as eval_main
from langbrt.training.data.pair_alignment import (
    MAX_CHECKED,
    PairAlignment,
    check_alignment,
    measure_alignment,
    misaligned_message,
    offset_costs,
    subpixel_minimum,
)
from langbrt.training.data.pair_discovery import find_pairs
from langbrt.training.data.synthetic import SyntheticBlemishDataset

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SIZE = 128  # px of the test pairs


@pytest.fixture(scope="module")
def retouches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Synthetic (source, target) pairs: blemishes drawn, then the named ones removed in place."""
    data = SyntheticBlemishDataset(6, image_size=SIZE, seed=3, flip=False)
    return [(data[i]["source"], data[i]["target"]) for i in range(len(data))]


def moved(image: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """`image` (3, H, W) with its content moved right by dx and down by dy pixels, edges repeated."""
    _, h, w = image.shape
    p = max(abs(dx), abs(dy))
    padded = F.pad(image[None], (p, p, p, p), mode="replicate")[0]  # (3, H + 2p, W + 2p)
    return padded[:, p - dy : p - dy + h, p - dx : p - dx + w]  # (3, H, W)


def rescaled(image: torch.Tensor, factor: float) -> torch.Tensor:
    """`image` (3, H, W) zoomed by `factor` about its centre, as a second crop of the same photo would be."""
    theta = torch.tensor([[[1 / factor, 0.0, 0.0], [0.0, 1 / factor, 0.0]]])  # (1, 2, 3)
    grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)  # (1, H, W, 2)
    return F.grid_sample(image[None], grid, mode="bicubic", padding_mode="border", align_corners=False)[0].clamp(0, 1)


def save_pair(root: Path, name: str, source: torch.Tensor, target: torch.Tensor) -> None:
    for side, image in (("source", source), ("target", target)):
        (root / side).mkdir(parents=True, exist_ok=True)
        write_image(root / side / f"{name}.png", image)


# ------------------------------------------------------------------------------------------ the statistics


def test_offset_costs_are_least_at_the_targets_displacement():
    before = torch.rand(32, 32)
    after = torch.roll(before, shifts=(1, -2), dims=(0, 1))  # content down 1, left 2
    costs = offset_costs(before, after, max_shift=3)  # (7, 7, 26, 26)
    assert costs.shape == (7, 7, 26, 26)
    assert divmod(int(costs.mean((2, 3)).argmin()), 7) == (3 + 1, 3 - 2)
    assert costs[4, 1].max() == 0


def test_subpixel_minimum_finds_the_tip_of_a_v_between_pixels():
    offsets = torch.arange(-4, 5, dtype=torch.float32)
    cost = (offsets[None, :] - 0.3).abs() + (offsets[:, None] + 1.2).abs() + 0.5  # (9, 9), tip at (0.3, -1.2)
    dx, dy = subpixel_minimum(cost)
    assert dx == pytest.approx(0.3, abs=1e-6) and dy == pytest.approx(-1.2, abs=1e-6)


def test_subpixel_minimum_says_nothing_on_a_flat_cost():
    assert subpixel_minimum(torch.full((9, 9), 0.2)) is None
    assert subpixel_minimum(torch.rand(9, 9) * 1e-5) is None  # rounding noise of a plain image


# -------------------------------------------------------------------------------------------- the verdicts


def test_a_retouch_in_place_is_not_flagged(retouches):
    results = [measure_alignment(source, target) for source, target in retouches]
    assert [r.problem for r in results] == [None] * len(retouches), results


def test_an_unchanged_plain_pair_is_not_flagged():
    plain = torch.tensor([0.5, 0.4, 0.3])[:, None, None].expand(3, 40, 40).contiguous()  # (3, 40, 40)
    assert measure_alignment(plain, plain.clone()).problem is None


@pytest.mark.parametrize("dx, dy", [(1, 0), (0, -2), (3, 3)])
def test_a_shifted_target_is_flagged_with_its_shift(retouches, dx, dy):
    for source, target in retouches:
        result = measure_alignment(source, moved(target, dx, dy))
        assert result.problem == f"shifted by ~({dx}, {dy}) px", result


def test_the_shift_is_said_in_pixels_of_the_source_file(retouches):
    source, target = retouches[0]
    big = [F.interpolate(image[None], scale_factor=4, mode="bicubic")[0].clamp(0, 1) for image in (source, target)]
    result = measure_alignment(big[0], moved(big[1], 8, 0))  # 2 px at the 128 px the check compares at
    assert result.problem == "shifted by ~(8, 0) px", result


@pytest.mark.parametrize("factor", [1.02, 0.98])
def test_a_rescaled_target_is_flagged(retouches, factor):
    for source, target in retouches:
        result = measure_alignment(source, rescaled(target, factor))
        assert result.problem is not None and result.problem.startswith("rescaled or rotated"), result


def test_another_pairs_target_is_flagged_as_differing(retouches):
    for (source, _), (_, other) in zip(retouches, retouches[1:] + retouches[:1], strict=True):
        result = measure_alignment(source, other)
        assert result.problem is not None and result.problem.endswith("% of pixels differ"), result
        assert result.changed > 0.25


def test_the_example_photo_pair_is_mirrored_and_aligned_once_flipped_back():
    """examples/astronaut_face_blemished.png was rendered on the mirrored crop (the synthetic set mirrors a real
    face half the time), so beside astronaut_face.png it is a real photo pair that is mirrored."""
    blemished, face = read_image(EXAMPLES / "astronaut_face_blemished.png"), read_image(EXAMPLES / "astronaut_face.png")
    assert measure_alignment(blemished, face).problem == "mirrored left-right"
    assert measure_alignment(blemished, face.flip(-1)).problem is None
    assert measure_alignment(blemished, moved(face.flip(-1), 0, 2)).problem == "shifted by ~(0, 2) px"


# ----------------------------------------------------------------------------------- pairs on disk, messages


def test_check_alignment_reads_the_pairs_and_leaves_out_one_that_fails_to_decode(retouches, tmp_path):
    (source, target), (other, _) = retouches[0], retouches[1]
    save_pair(tmp_path, "a", source, target)
    save_pair(tmp_path, "b", source, moved(target, 2, 0))
    save_pair(tmp_path, "c", other, target)
    (tmp_path / "target/c.png").write_bytes((tmp_path / "target/c.png").read_bytes()[:60])  # cut short
    results = check_alignment(find_pairs(tmp_path))
    assert [(r.name, r.problem) for r in results] == [("a", None), ("b", "shifted by ~(2, 0) px")]


def test_pairs_saved_as_cameras_and_editors_save_them_are_aligned_and_a_shifted_one_is_not(retouches, tmp_path):
    """QA, 2026-11-28 (real-ish photos): a JPEG source stored sideways with its EXIF orientation beside an upright
    PNG target, an RGBA source beside an RGB target, and a target saved at half size as JPEG are all one framing;
    a JPEG target shifted by 4 px is still found."""
    (source, target), (other, other_target), (third, third_target) = retouches[:3]
    for side in ("source", "target"):
        (tmp_path / side).mkdir()
    sideways = Image.open(write_image(tmp_path / "upright.png", source)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: upright again
    sideways.save(tmp_path / "source/exif.jpg", quality=95, exif=exif.tobytes())
    write_image(tmp_path / "target/exif.png", target)
    write_image(tmp_path / "source/alpha.png", other, alpha=torch.linspace(0, 1, SIZE).expand(1, SIZE, SIZE))
    write_image(tmp_path / "target/alpha.png", other_target)
    write_image(tmp_path / "source/small.png", third)
    half = Image.open(write_image(tmp_path / "half.png", third_target)).resize((SIZE // 2, SIZE // 2), Image.LANCZOS)
    half.save(tmp_path / "target/small.jpg", quality=90)
    write_image(tmp_path / "source/shifted.png", source)
    write_image(tmp_path / "target/shifted.jpg", moved(target, 4, 0))
    results = check_alignment(find_pairs(tmp_path))
    assert [(r.name, r.problem) for r in results] == [("alpha", None), ("exif", None),
                                                      ("shifted", "shifted by ~(4, 0) px"), ("small", None)]


def test_a_large_set_is_checked_on_pairs_spread_evenly_over_it(retouches, tmp_path):
    source, target = retouches[0]
    for i in range(5):
        save_pair(tmp_path, f"p{i}", source, target)
    assert [r.name for r in check_alignment(find_pairs(tmp_path), limit=2)] == ["p0", "p2"]


def result(name: str, changed: float = 0.0, shift: tuple[float, float] = (0.0, 0.0)) -> PairAlignment:
    return PairAlignment(name, shift, warp=0.0, changed=changed, mirrored=False, scale=1.0)


def test_the_message_names_how_many_look_misaligned_the_first_few_and_why():
    results = [result("ok"), *(result(f"s{i}", shift=(2.0, -1.0)) for i in range(6)), result("other", changed=0.6)]
    message = misaligned_message(results, len(results), "data")
    assert message.startswith("data: 7 of 8 pairs look misaligned (s0: shifted by ~(2, -1) px, s1: ")
    assert "s4: shifted by ~(2, -1) px, ...)" in message and "other" not in message and "\n" not in message
    assert misaligned_message([result("other", changed=0.6)], 1, "data").startswith(
        "data: 1 of 1 pair looks misaligned (other: 60% of pixels differ)")
    assert misaligned_message([result("ok")], 1, "data") is None


def test_the_message_says_when_only_a_sample_was_checked():
    message = misaligned_message([result("a", changed=0.9)], MAX_CHECKED + 500, "ffhqr")
    assert message.startswith(f"ffhqr: 1 of 1 pair checked (spread evenly over {MAX_CHECKED + 500}) looks misaligned")


# ---------------------------------------------------------------------------------------- the commands


@pytest.fixture
def folder_with_a_shifted_pair(retouches, tmp_path) -> Path:
    """a, b: retouched in place; c: its target shifted 2 px right."""
    root = tmp_path / "data"
    for name, (source, target) in zip("abc", retouches[:3], strict=True):
        save_pair(root, name, source, moved(target, 2, 0) if name == "c" else target)
    return root


def test_training_on_a_misaligned_pair_warns_in_one_line_and_trains(folder_with_a_shifted_pair, tmp_path):
    result = run_cli("--data", str(folder_with_a_shifted_pair), "--steps", "1", "--batch-size", "3",
                     "--adversarial-weight", "0", "--output", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning: ")]
    assert warnings == [f"Warning: {folder_with_a_shifted_pair}: 1 of 3 pairs looks misaligned (c: shifted by ~(2, 0) "
                        "px); a target must be its source retouched in place, or the model learns to move or repaint "
                        "the whole face: fix or remove these pairs"], result.output
    assert (tmp_path / "out/final/model.safetensors").is_file()


def test_strict_pairs_makes_a_misaligned_pair_one_error_line_before_output_exists(folder_with_a_shifted_pair, tmp_path):
    result = run_cli("--data", str(folder_with_a_shifted_pair), "--strict-pairs", "--steps", "1",
                     "--output", str(tmp_path / "out"))
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"{ERROR}{folder_with_a_shifted_pair}: 1 of 3 pairs looks misaligned (c: shifted")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_under_torchrun_the_warning_is_said_once_and_strict_pairs_stops_every_rank(folder_with_a_shifted_pair,
                                                                                   tmp_path):
    common = ("-m", "langbrt.training.cli_train", "--data", str(folder_with_a_shifted_pair), "--batch-size", "1",
              *TORCHRUN_FAST)
    warned = torchrun(*common, "--output", str(tmp_path / "warned"))
    assert warned.returncode == 0, warned.stderr[-3000:]
    assert sum("looks misaligned (c: shifted" in line for line in warned.stderr.splitlines()) == 1, warned.stderr
    stopped = torchrun(*common, "--strict-pairs", "--output", str(tmp_path / "stopped"))
    assert stopped.returncode == 1, stopped.stderr[-3000:]  # torchrun's own status when a worker fails
    lines = error_lines(stopped.stderr)
    assert len(lines) == 1 and "1 of 3 pairs looks misaligned (c: shifted" in lines[0], stopped.stderr[-3000:]
    assert not (tmp_path / "stopped").exists()


def test_training_on_aligned_pairs_says_nothing(retouches, tmp_path):
    for name, (source, target) in zip("ab", retouches[:2], strict=True):
        save_pair(tmp_path / "data", name, source, target)
    result = run_cli("--data", str(tmp_path / "data"), "--strict-pairs", "--steps", "1", "--batch-size", "2",
                     "--adversarial-weight", "0", "--output", str(tmp_path / "out"))
    assert result.exit_code == 0 and "Warning" not in result.output, result.output


def test_eval_on_a_misaligned_pair_warns_in_one_line(folder_with_a_shifted_pair, tmp_path):
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder())
    checkpoint = model.save_pretrained(tmp_path / "final")
    result = CliRunner().invoke(eval_main, ["--model", str(checkpoint), "--data", str(folder_with_a_shifted_pair),
                                            "--json"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 1 and "1 of 3 pairs looks misaligned (c: shifted by ~(2, 0) px)" in warnings[0]


def test_training_on_a_fraction_of_the_synthetic_set_trains(tmp_path):
    """A `--fraction` subset of the synthetic set, which has no pairs to check, was an IndexError traceback:
    the subset's indices were looked up in the synthetic set's empty list of pairs (quality_suite.sh's
    frac-0.1, frac-0.01 and no-prior-0.01 variants all failed)."""
    result = run_cli("--fraction", "0.25", "--synthetic-length", "8", "--steps", "1", "--batch-size", "2",
                     "--adversarial-weight", "0", "--output", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out/final/model.safetensors").is_file()
