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
