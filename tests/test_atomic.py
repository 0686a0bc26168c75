"""`atomic_folder`: a folder is replaced whole or not at all, and a failure leaves nothing hidden behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from langbrt import atomic
from langbrt.atomic import atomic_folder


def _folder(path: Path, **files: str) -> Path:
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_new_folder_replaces_the_old_one_whole(tmp_path):
    _folder(tmp_path / "final", a="old", stale="old")
    with atomic_folder(tmp_path / "final") as staging:
        (staging / "a").write_text("new")
    assert _tree(tmp_path) == {"final/a": "new"}  # no stale file, no staging or .old folder left


def test_a_new_folder_gets_the_mode_mkdir_would_give(tmp_path):
    """Not mkdtemp's 0700: a Triton server or a colleague reading the folder runs as another user."""
    (tmp_path / "by-mkdir").mkdir()
    with atomic_folder(tmp_path / "final"):
        pass
    assert stat.S_IMODE((tmp_path / "final").stat().st_mode) == stat.S_IMODE((tmp_path / "by-mkdir").stat().st_mode)


def test_an_error_while_writing_keeps_the_old_folder_and_removes_the_staging_one(tmp_path):
    _folder(tmp_path / "final", a="old")
    with pytest.raises(OSError, match="disk full"), atomic_folder(tmp_path / "final") as staging:
        (staging / "a").write_text("half")
        raise OSError("disk full")
    assert _tree(tmp_path) == {"final/a": "old"} and [p.name for p in tmp_path.iterdir()] == ["final"]


def test_a_failed_rename_into_place_puts_the_old_folder_back(tmp_path, monkeypatch):
    _folder(tmp_path / "final", a="old")
    real_replace = os.replace

    def refuse_the_new_folder(src, dst):
        if ".partial" in str(src):
            raise OSError("rename refused")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", refuse_the_new_folder)
    with pytest.raises(OSError, match="rename refused"), atomic_folder(tmp_path / "final") as staging:
        (staging / "a").write_text("new")
    assert _tree(tmp_path) == {"final/a": "old"} and [p.name for p in tmp_path.iterdir()] == ["final"]


def test_an_old_folder_left_aside_by_a_crash_is_cleared_by_the_next_replace(tmp_path):
    _folder(tmp_path / ".final.old", a="older")
    _folder(tmp_path / "final", a="old")
    with atomic_folder(tmp_path / "final") as staging:
        (staging / "a").write_text("new")
    assert _tree(tmp_path) == {"final/a": "new"}
