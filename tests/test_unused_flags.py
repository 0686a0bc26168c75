"""A flag typed where it has no effect is never accepted silently (QA): `training/unused_flags.py`.

An input or mode the run lacks is one usage line (exit 2, nothing created); a loss setting whose term another
setting switched off is one warning line, the run going on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from langbrt.config import LangBRTConfig
from langbrt.model import LangBRT
from langbrt.text import default_text_encoder
from langbrt.training.cli_eval import main as eval_main
from langbrt.training.cli_train import main as train_main
from langbrt.training.losses.weights import LossWeights
from langbrt.training.train_config import TrainConfig
from langbrt.training.trainer import train

FAST = ["--perceptual-weight", "0", "--semantic-weight", "0", "--adversarial-weight", "0", "--steps", "1",
        "--batch-size", "2", "--threads", "1", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pairs(root: Path) -> Path:
    for side in ("source", "target"):
        (root / side).mkdir(parents=True)
        for name in ("a", "b"):
            Image.new("RGB", (64, 64), (120, 90, 80)).save(root / side / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny model whose text encoder is MiniLM, which takes no weights file."""
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder())
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "final")


def _one_error_line(output: str, prog: str, starts: str) -> None:
    assert output.startswith(f"{prog}: error: {starts}") and output.count("\n") == 1, output


@pytest.mark.parametrize(("args", "line"), [
    (["--data", "DATA", "--ffhqr-root", "F"],
     "--ffhqr-root F applies only to --data ffhqr, not to --data DATA; drop it"),
    (["--ffhqr-target-root", "F"], "--ffhqr-target-root F applies only to --data ffhqr, not to --data synthetic"),
    (["--val-every", "2"], "--val-every 2 applies only with --val DIR|synthetic (held-out validation), which this run "
                           "has none of; add --val or drop it"),
    (["--val-samples", "4", "--val-every", "2"], "--val-every 2 and --val-samples 4 apply only with --val"),
    (["--data", "DATA", "--synthetic-length", "8"], "--synthetic-length 8 applies only to --data synthetic"),
    (["--data", "DATA", "--real-face", "face.json"], "--real-face applies only to --data synthetic"),
    (["--real-fraction", "0.5"], "--real-fraction 0.5 applies only with --real-face (the share of samples drawn on "
                                 "those photos); add --real-face or drop it"),
], ids=["ffhqr-root", "ffhqr-target-root", "val-every", "val-every-and-samples", "synthetic-length", "real-face",
        "real-fraction"])
def test_a_train_flag_for_an_input_or_mode_the_run_lacks_is_one_error_line_and_creates_nothing(tmp_path, args, line):
    data = str(_pairs(tmp_path / "data"))
    args = [data if arg == "DATA" else arg for arg in args]
    result = CliRunner().invoke(train_main, [*FAST, *args, "--output", str(tmp_path / "out")])
    assert result.exit_code == 2
    _one_error_line(result.output, "langbrt-train", line.replace("DATA", data))
    assert not (tmp_path / "out").exists()


def test_val_every_on_resuming_a_run_without_val_is_refused_and_writes_nothing(tmp_path):
    """The resumed run's config decides whether there is a --val, not the flags typed now."""
    first = CliRunner().invoke(train_main, [*FAST, "--output", str(tmp_path / "run")])
    assert first.exit_code == 0, first.output
    result = CliRunner().invoke(train_main, ["--resume", str(tmp_path / "run/final"), "--steps", "2", "--val-every",
                                             "1", "--threads", "1", "--quiet", "--output", str(tmp_path / "out")])
    assert result.exit_code == 2
    _one_error_line(result.output, "langbrt-train", "--val-every 1 applies only with --val")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "warning"), [
    (["--vgg-weights", "vgg.pth"], "--vgg-weights vgg.pth has no effect: --perceptual-weight 0 turns the VGG-19 term "
                                   "(eq. 9) off"),
    (["--alpha-clip-weights", "a.pth"], "--alpha-clip-weights a.pth has no effect: --semantic-weight 0 turns"),
    (["--clip-text-weights", "c.pt"], "--clip-text-weights c.pt has no effect: --text-encoder minilm takes no weights "
                                      "file"),
    (["--ablation", "no-tbd", "--detection-weight", "2", "--detection-loss", "l1"],
     "--detection-weight 2 and --detection-loss l1 have no effect: --ablation no-tbd has no detection maps"),
    (["--ablation", "no-prior", "--alpha-clip-weights", "a.pth"],
     "--alpha-clip-weights a.pth has no effect: --ablation no-prior has no Alpha-CLIP term"),
], ids=["vgg", "alpha-clip", "clip-text", "no-tbd", "no-prior"])
def test_a_typed_loss_setting_whose_term_is_off_is_one_warning_and_the_run_trains(tmp_path, args, warning):
    result = CliRunner().invoke(train_main, [*FAST, *args, "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith(f"Warning: {warning}"), result.output
    assert (tmp_path / "out/final").is_dir()


def test_a_zero_weight_typed_for_a_term_the_ablation_drops_is_not_warned_about(tmp_path):
    """`--ablation no-prior --semantic-weight 0` asks for what the ablation does anyway."""
    result = CliRunner().invoke(train_main, [*FAST, "--ablation", "no-prior", "--output", str(tmp_path / "out")])
    assert result.exit_code == 0 and "Warning: " not in result.output, result.output


def test_an_unused_ffhqr_root_is_no_input_the_output_may_not_overlap(tmp_path):
    """Python's TrainConfig may carry an ffhqr_root on folder data (a run's train_config.json from before the
    CLI refused it): the run does not read it, so an OUTPUT inside it is no overlap with an input."""
    unused = tmp_path / "ffhq"
    unused.mkdir()
    cfg = TrainConfig(data=str(_pairs(tmp_path / "data")), ffhqr_root=str(unused), output=str(unused / "run"),
                      steps=1, batch_size=2, weights=LossWeights(perceptual=0, semantic=0, adversarial=0))
    assert train(cfg, progress=False).final_dir == unused / "run/final"


@pytest.mark.parametrize(("args", "line"), [
    (["--clip-text-weights", "/nope"], "--clip-text-weights /nope applies only to a model with an open_clip text "
                                       "encoder; CKPT's is minilm:"),
    (["--ffhqr-root", "F"], "--ffhqr-root F applies only to --data ffhqr, not to --data synthetic; drop it"),
    (["--data", "DATA", "--ffhqr-target-root", "F"], "--ffhqr-target-root F applies only to --data ffhqr"),
    (["--data", "DATA", "--split", "train"], "--split train applies only to the synthetic set and FFHQR: a folder of "
                                             "pairs is scored whole; drop it"),
    (["--data", "DATA", "--seed", "3"], "--seed 3 applies only to the synthetic set, which it draws"),
    (["--strict"], "--strict applies only to a folder of pairs and FFHQR, whose files can be corrupt: the synthetic "
                   "set is drawn, not read from files; drop it"),
    (["--no-strict"], "--no-strict applies only to a folder of pairs and FFHQR"),
], ids=["clip-text-weights-on-minilm", "ffhqr-root", "ffhqr-target-root", "split-on-a-folder", "seed-on-a-folder",
        "strict-on-synthetic", "no-strict-on-synthetic"])
def test_an_eval_flag_the_data_or_model_ignores_is_one_error_line_and_writes_no_out(checkpoint, tmp_path, args, line):
    data = str(_pairs(tmp_path / "data"))
    args = [data if arg == "DATA" else arg for arg in args]
    result = CliRunner().invoke(eval_main, ["--model", str(checkpoint), "--num-samples", "2", *args,
                                            "--out", str(tmp_path / "scores.json")])
    assert result.exit_code == 2
    _one_error_line(result.output, "langbrt-eval", line.replace("CKPT", str(checkpoint)))
    assert not (tmp_path / "scores.json").exists()


def test_strict_with_suite_is_one_error_line(checkpoint, tmp_path):
    result = CliRunner().invoke(eval_main, ["--suite", f"a={checkpoint}", "--num-samples", "2", "--strict",
                                            "--out", str(tmp_path / "suite.json")])
    assert result.exit_code == 2
    _one_error_line(result.output, "langbrt-eval", "--strict applies only to a folder of pairs and FFHQR")
    assert not (tmp_path / "suite.json").exists()


def test_strict_on_a_folder_of_pairs_is_taken(checkpoint, tmp_path):
    result = CliRunner().invoke(eval_main, ["--model", str(checkpoint), "--data", str(_pairs(tmp_path / "data")),
                                            "--strict", "--json"])
    assert result.exit_code == 0, result.output


def test_clip_text_weights_with_suite_is_one_error_line(checkpoint, tmp_path):
    result = CliRunner().invoke(eval_main, ["--suite", f"a={checkpoint}", "--num-samples", "2", "--clip-text-weights",
                                            "c.pt", "--out", str(tmp_path / "suite.json")])
    assert result.exit_code == 2
    _one_error_line(result.output, "langbrt-eval", "--clip-text-weights c.pt applies only to --model: --suite")
    assert not (tmp_path / "suite.json").exists()
