"""Atomic writes of files and folders: a reader never sees a half-written one, a failure never leaves one behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from langbrt.errors import LangBRTInputError


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target`, on error it is removed.

    The temporary file lives in the target's folder so the final `os.replace` is a rename on one file
    system, which POSIX makes atomic. It gets the mode a plain `open()` would give (mkstemp's is 0600).
    Creating it raises the OSError of an unwritable folder before the caller writes anything.
    """
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write `text` (UTF-8) atomically; a failure (folder gone, disk full) is one LangBRTInputError line."""
    try:
        with atomic_path(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as err:
        raise LangBRTInputError(f"{target}: cannot write file ({err.strerror or err})") from err


@contextlib.contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `target`; on success it replaces `target` (see `replace_folder`),
    on error it is removed and `target` is left as it was.

    Why: a folder of files that belong together (a checkpoint, a Triton model) must never be seen half
    written or half replaced, and a failure while writing it must leave no hidden staging folder behind.
    """
    target = Path(target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    try:
        os.chmod(staging, 0o777 & ~_umask())  # what mkdir gives (mkdtemp's is 0700)
        yield staging
        replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_folder(new: str | Path, target: str | Path) -> None:
    """Rename folder `new` to `target`. An old `target` is renamed aside first and deleted only once `new` is
    in place, so `target` is never a mix of old and new files; if a crash falls between the two renames, the
    old folder survives as `.NAME.old` beside it. If the second rename fails, the old folder is put back."""
    new, target = Path(new), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)  # left by an earlier crash; `target` is the newer copy
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def new_file_mode() -> int:
    """The mode a plain open() would give a new file: 0o666 minus the umask."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read from /proc rather than with os.umask(), which sets the process-wide umask and
    races with threads; 0o022 where /proc does not say."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022
