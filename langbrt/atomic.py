"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one behind."""

from __future__ import annotations

import contextlib
import os
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


def new_file_mode() -> int:
    """The mode a plain open() would give a new file: 0o666 minus the umask.

    Read from /proc rather than with os.umask(), which sets the process-wide umask and races with threads.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    return 0o644
