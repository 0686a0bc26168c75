"""Removing the temporary files and staging folders that killed processes left behind.

Why a module of its own: `atomic.py` cleans up after every failure it sees, but a process killed while writing
(SIGKILL, the out-of-memory killer) runs no cleanup at all, and its hidden temporaries stayed forever, tens of
MB to GBs each. The commands that write into a folder call these first. What counts as ours is exactly the name
form `temporary_names.py` defines; anything else in the folder is never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import time
from collections.abc import Collection, Iterator
from pathlib import Path

from langbrt.temporary_names import hidden_prefix, staging_folders, temporary_files

ORPHAN_AGE_SECONDS = 3600.0
"""Age past which a temporary file of ours counts as orphaned: writing one file takes seconds, not an hour."""


def remove_orphaned_temporaries(folder: Path, names: Collection[str]) -> None:
    """Remove the temporary files `atomic_path` and `atomic_paths` left in `folder` beside any of `names` and
    older than ORPHAN_AGE_SECONDS.

    Why: a process killed while writing (SIGKILL, the out-of-memory killer) runs no cleanup, and its hidden
    '.<name>.XXXXXXXX.tmp' (also '..<name>.XXXXXXXX.tmp.XXXXXXXX.tmp': an image written into a staged file)
    stayed forever, tens of MB each (QA: a rerun that succeeded left them all). Only names of exactly that
    form for the given outputs, only regular files, and only old ones: a live run's temporary is seconds old.
    """
    stems = "|".join(re.escape(hidden_prefix(name, ".tmp")[1:-1]) for name in names)
    if stems:
        _remove_entries(folder, temporary_files(stems), folders=False, older_than=ORPHAN_AGE_SECONDS)


def remove_orphaned_staging(folder: Path, name: str) -> None:
    """Remove the staging folders `new_staging_folder` made in `folder` for `name` and older than
    ORPHAN_AGE_SECONDS.

    Why: as for `remove_orphaned_temporaries`, a process killed while filling one (SIGKILL) runs no cleanup,
    and its hidden '.<name>.XXXXXXXX.partial' folder (a half-written model, megabytes to gigabytes) stayed
    forever (QA). Only real folders, not links, of exactly that name form.
    """
    stem = re.escape(hidden_prefix(name, ".partial")[1:-1])
    _remove_entries(folder, staging_folders(stem), folders=True, older_than=ORPHAN_AGE_SECONDS)


def remove_leftovers_of_locked_folder(folder: Path, *, files: str = "", folders: str = "") -> None:
    """Remove, whatever their age, the temporary files `atomic_path` and `atomic_paths` left in `folder` beside a
    name matching the regular expression `files`, and the staging folders `atomic_folder` left beside a name
    matching `folders` (exactly '.<name>.XXXXXXXX.partial', folders only).

    Only for a caller that holds the lock every writer of `folder` takes (a training run's OUTPUT, `RunLock`):
    then none of them is a live process's, so no age has to tell. Why: a training run SIGKILLed while saving a
    checkpoint left its staging folder (the weights and the optimizer state, up to GBs) in OUTPUT forever, and
    the --resume that followed at once would keep it for an hour under `remove_orphaned_temporaries`' rule.
    """
    if files:
        _remove_entries(folder, temporary_files(files), folders=False, older_than=None)
    if folders:
        _remove_entries(folder, staging_folders(folders), folders=True, older_than=None)


def _remove_entries(folder: Path, pattern: re.Pattern[str], *, folders: bool, older_than: float | None) -> None:
    """Remove the entries of `folder` whose whole name matches `pattern`, that are folders (`folders`) or regular
    files (not `folders`; a symlink is neither) and, unless `older_than` is None, were last modified over
    `older_than` seconds ago (a live run's temporary is seconds old)."""
    now = time.time()
    for path, info in _matching_entries(folder, pattern):
        if older_than is not None and now - info.st_mtime <= older_than:
            continue
        if folders and stat.S_ISDIR(info.st_mode):
            shutil.rmtree(path, ignore_errors=True)
        elif not folders and stat.S_ISREG(info.st_mode):
            with contextlib.suppress(OSError):  # gone meanwhile, or not ours to remove: it stays, as before
                os.unlink(path)


def _matching_entries(folder: Path, pattern: re.Pattern[str]) -> Iterator[tuple[str, os.stat_result]]:
    """Entries of `folder` whose whole name matches `pattern`, with their own stat (links not followed). A
    missing folder has none."""
    try:
        entries = os.scandir(folder)
    except OSError:
        return  # no such folder (yet): nothing was left there
    with entries:
        for entry in entries:
            if not pattern.fullmatch(entry.name):
                continue
            try:
                yield entry.path, entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
