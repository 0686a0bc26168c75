"""The shared output-path check of the CLIs: no input overwritten, bad folders refused up front."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from langbrt.errors import LangBRTInputError
from langbrt.output_paths import check_output_file


def _refusal(output: Path, inputs: list[Path]) -> str:
    with pytest.raises(LangBRTInputError) as err:
        check_output_file(output, inputs, flag="--out")
    message = str(err.value)
    assert "\n" not in message and message.startswith("--out ")
    return message


def test_an_ordinary_new_file_is_fine(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    assert check_output_file(tmp_path / "report.json", [model]) == tmp_path / "report.json"


def test_the_input_itself_is_refused_also_through_a_symlink_or_dot_path(tmp_path: Path) -> None:
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights")
    link = tmp_path / "link.safetensors"
    link.symlink_to(model)
    assert "is the input" in _refusal(model, [model])
    assert "is the input" in _refusal(link, [model])
    assert "is the input" in _refusal(tmp_path / "." / "model.safetensors", [model])


def test_a_file_inside_a_checkpoint_folder_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "final"
    checkpoint.mkdir()
    assert "is inside the input" in _refusal(checkpoint / "config.json", [checkpoint])
    assert "is inside the input" in _refusal(checkpoint / "sub" / "x.json", [checkpoint])


def test_missing_or_non_folder_parents_and_folders_are_refused(tmp_path: Path) -> None:
    assert "does not exist" in _refusal(tmp_path / "nope" / "b.json", [])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "is not a folder" in _refusal(blocker / "b.json", [])
    assert "is a folder" in _refusal(tmp_path, [])


def test_an_unwritable_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The permission is asked of the OS (faked here: root, which runs CI, may write anywhere)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    assert f"the folder {locked} is not writable" in _refusal(locked / "b.json", [])
    assert check_output_file(tmp_path / "b.json", [], flag="--out") == tmp_path / "b.json"


@pytest.mark.parametrize("name", ["L" * 300 + ".json", "é" * 128 + ".json"], ids=["ascii", "two-byte-characters"])
def test_a_name_longer_than_file_systems_take_is_refused_in_one_line(tmp_path: Path, name: str) -> None:
    """QA, 2026-11-26: `--out` with a 300-byte name ended langbrt-eval and langbrt-bench in an OSError
    'File name too long' traceback from Path.is_dir."""
    message = _refusal(tmp_path / name, [])
    assert "bytes long; file systems take at most 255" in message
    assert check_output_file(tmp_path / ("L" * 250 + ".json"), []) == tmp_path / ("L" * 250 + ".json")


def test_every_command_checks_its_output_names_length(tmp_path: Path) -> None:
    """langbrt-infer -o, langbrt-train --output and a Triton repository folder go through the same check."""
    from langbrt.export.exporter import check_repository_folder
    from langbrt.runtime.cli_infer import check_results_folder
    from langbrt.training.train_state import check_run_folder

    too_long = tmp_path / ("L" * 300) / "x"
    for check in (lambda: check_results_folder(too_long), lambda: check_run_folder(too_long, []),
                  lambda: check_repository_folder(too_long, [])):
        with pytest.raises(LangBRTInputError, match="bytes long; file systems take at most 255"):
            check()
