"""`langbrt-train --resume` from another current folder: the run's relative paths (data, output, ...) lead where
they led when it started (`training/run_paths.py`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from langbrt.training.cli_train import main
from langbrt.training.run_paths import rebased, started_from
from langbrt.training.train_config import TrainConfig

FAST = ["--perceptual-weight", "0", "--semantic-weight", "0", "--adversarial-weight", "0", "--ema-decay", "0",
        "--batch-size", "2", "--threads", "1", "--quiet"]


def _pairs(root: Path, colour: tuple[int, int, int]) -> None:
    """Two pairs of one colour whose source has a dark spot the target lacks."""
    for side in ("source", "target"):
        (root / side).mkdir(parents=True)
        for name in ("a", "b"):
            image = Image.new("RGB", (64, 64), colour)
            if side == "source":
                image.paste((20, 20, 20), (24, 24, 30, 30))
            image.save(root / side / f"{name}.png")


def _train(*args: str):
    return CliRunner().invoke(main, [*args, *FAST])


def _weights(checkpoint: Path) -> dict:
    return load_file(checkpoint / "model.safetensors")


def test_a_resume_from_another_folder_continues_the_run_on_its_own_data_in_its_own_folder(tmp_path, monkeypatch):
    """QA, 2026-11-28: from another folder the saved relative --data and --output led there: the resume trained
    on that folder's pairs (a decoy here) and wrote the continued run beside them, without a word."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    _pairs(project / "pairs", (120, 90, 80))
    _pairs(elsewhere / "pairs", (30, 200, 40))  # same names, other photos
    monkeypatch.chdir(project)
    result = _train("--data", "pairs", "--output", "runs/x", "--steps", "1")
    assert result.exit_code == 0, result.output
    shutil.copytree(project, tmp_path / "copy")  # the reference: resumed from its own folder
    monkeypatch.chdir(tmp_path / "copy")
    assert _train("--resume", "runs/x/final", "--steps", "2").exit_code == 0
    monkeypatch.chdir(elsewhere)
    result = _train("--resume", str(project / "runs/x/final"), "--steps", "2")
    assert result.exit_code == 0 and "Warning" not in result.output, result.output
    assert sorted(p.name for p in elsewhere.iterdir()) == ["pairs"]  # nothing written here
    resumed, reference = _weights(project / "runs/x/final"), _weights(tmp_path / "copy/runs/x/final")
    assert all(resumed[name].equal(reference[name]) for name in reference)
    assert len((project / "runs/x/log.jsonl").read_text().splitlines()) == 2
    saved = json.loads((project / "runs/x/final/train_config.json").read_text())
    assert saved["data"] == str(project / "pairs") and saved["workdir"] == str(elsewhere)


def test_a_missing_data_folder_named_relative_is_reported_where_the_run_looked(tmp_path, monkeypatch):
    (tmp_path / "project").mkdir()
    _pairs(tmp_path / "project/pairs", (120, 90, 80))
    monkeypatch.chdir(tmp_path / "project")
    assert _train("--data", "pairs", "--output", "runs/x", "--steps", "1").exit_code == 0
    shutil.rmtree(tmp_path / "project/pairs")
    monkeypatch.chdir(tmp_path)
    result = _train("--resume", "project/runs/x/final", "--steps", "2")
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert f"{tmp_path / 'project/pairs'}: no such folder" in result.output


def test_relative_paths_are_taken_from_the_folder_whose_output_is_the_checkpoints_run(tmp_path):
    old = TrainConfig(data="pairs", output="runs/x")  # written before workdir was recorded
    assert started_from(old, tmp_path / "p/runs/x/checkpoints/step_000002") == tmp_path / "p"
    assert started_from(old, tmp_path / "p/runs/x/final") == tmp_path / "p"
    moved = TrainConfig(data="pairs", output="runs/x", workdir=str(tmp_path / "gone"))  # the project was moved
    assert started_from(moved, tmp_path / "new/runs/x/final") == tmp_path / "new"
    absolute = TrainConfig(data="pairs", output=str(tmp_path / "out"), workdir=str(tmp_path / "w"))
    assert started_from(absolute, tmp_path / "out/final") == tmp_path / "w"


def test_rebased_paths_lead_from_the_start_folder_and_names_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(data="synthetic", output="runs/x", real_faces=("a.json", "/abs/b.json"), val="held_out")
    moved = rebased(cfg, tmp_path / "p")
    assert (moved.data, moved.output, moved.val) == ("synthetic", str(tmp_path / "p/runs/x"),
                                                     str(tmp_path / "p/held_out"))
    assert moved.real_faces == (str(tmp_path / "p/a.json"), "/abs/b.json")
    assert rebased(cfg, tmp_path) == cfg  # resumed from where it started: the paths as typed
