"""The cleanup of what killed processes left recognises exactly what the atomic writes make: the two sides of
the hidden-name form live in different modules, and a name one makes and the other misses stays forever."""

import os
import time

import pytest

from langbrt.atomic import atomic_path, new_staging_folder
from langbrt.orphan_cleanup import ORPHAN_AGE_SECONDS, remove_orphaned_staging, remove_orphaned_temporaries

NAMES = ["face.png", "a" * 251 + ".png"]  # the longest legal name: its temporary's name is cut to fit


def _age(path) -> None:
    long_ago = time.time() - 2 * ORPHAN_AGE_SECONDS
    os.utime(path, (long_ago, long_ago))


@pytest.mark.parametrize("name", NAMES, ids=["short", "255-bytes"])
def test_an_old_temporary_of_atomic_path_is_removed_as_orphaned(tmp_path, name):
    with pytest.raises(InterruptedError), atomic_path(tmp_path / name) as tmp:
        tmp.write_bytes(b"half written")
        _age(tmp)
        remove_orphaned_temporaries(tmp_path, [name])
        assert not tmp.exists()
        raise InterruptedError  # the write is abandoned: it was the "killed" one
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", NAMES, ids=["short", "255-bytes"])
def test_an_old_staging_folder_of_new_staging_folder_is_removed_as_orphaned(tmp_path, name):
    staging = new_staging_folder(tmp_path / name)
    (staging / "model.onnx").write_bytes(b"half written")
    _age(staging)
    remove_orphaned_staging(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_a_recent_temporary_is_a_live_write_and_stays(tmp_path):
    with atomic_path(tmp_path / "face.png") as tmp:
        tmp.write_bytes(b"being written")
        remove_orphaned_temporaries(tmp_path, ["face.png"])
        assert tmp.exists()
    assert (tmp_path / "face.png").read_bytes() == b"being written"
