"""Atomic writes of files and folders: a reader never sees a half-written one, a failure never leaves one behind.

A write that fails here is an `OutputWriteError` line naming the target, never a LangBRTInputError: the caller
checked its output path before any work, so what fails now is the disk (full, read-only, an I/O error).
What a killed process leaves behind (it runs no cleanup) is `orphan_cleanup.py`'s to remove.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from langbrt.errors import OutputWriteError
from langbrt.temporary_names import hidden_prefix

K = TypeVar("K")


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target`, on error it is removed.

    The temporary file lives in the target's folder so the final `os.replace` is a rename on one file
    system, which POSIX makes atomic. It gets the mode a plain `open()` would give (mkstemp's is 0600).
    Creating it raises the OSError of an unwritable folder before the caller writes anything.

    A `target` that is a device, a FIFO or a socket (`--out /dev/null`, a named pipe; through a symlink too) is
    yielded itself and written in place: renaming a file over it replaced the device node with a regular file
    (QA: as root, `langbrt-eval --out /dev/null` turned /dev/null into a JSON file), and such a target has no
    half-written state to hide. `/dev/stdout`, `/dev/stderr` and `/dev/fd/N` are written through the process's
    own descriptor once the block succeeds (`_through_descriptor`), whatever it leads to.
    """
    target = Path(target)
    fd = _stream_descriptor(target)
    if fd is not None:
        with _through_descriptor(fd) as tmp:
            yield tmp
        return
    if _is_special_file(target):
        yield target
        return
    tmp = _new_temporary(target)
    try:
        yield tmp
        _sync(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class TargetExistsError(FileExistsError):
    """`atomic_paths(..., replace=False)` found a target in place at rename time (another process wrote it
    after the caller checked); `filename` is that target. None of the call's targets was left behind."""


# What os.link raises on a file system without hard links (FAT, exFAT, some FUSE and network mounts)
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS})


@contextlib.contextmanager
def atomic_paths(targets: Mapping[K, Path], replace: bool = True) -> Iterator[dict[K, Path]]:
    """`atomic_path` for files that belong together (a photo's image, maps and mask): yield a temporary path
    beside each target; once the block succeeds, all are synced, then renamed into place in the order given.

    Why not one `atomic_path` each: they renamed one by one, each after its own fsync, so a Ctrl-C during a
    later file's fsync (a slow disk) left the earlier ones in place without it (QA: a photo's mask and maps
    without its image, which a rerun then refused as existing outputs). Here the slow part (fsync) comes
    first, while an interrupt still removes every temporary file and changes no target; the renames run
    with Ctrl-C and SIGTERM held, and those take effect after the last one. A rename that fails (an I/O
    error) removes the targets this call had created, so none is left without the others. With `replace`, a
    target that is a device or FIFO is written in place, as by `atomic_path`.

    `replace=False` never replaces a target, however late it appears: each is put in place with
    `os.link(tmp, target)`, which fails if the target exists, in one step (QA: two runs into one folder both
    passed their callers' "does it exist?" check, and the second rename silently replaced the first run's
    files, leaving a photo's image from one run and its maps from the other). If one exists, the targets
    this call had already placed are removed and `TargetExistsError` names it. On a file system without hard
    links this falls back to checking, then renaming, which is not race-free there.
    """
    staged: dict[K, Path] = {}
    try:
        for key, target in targets.items():
            in_place = replace and _is_special_file(Path(target))
            staged[key] = Path(target) if in_place else _new_temporary(Path(target))
        yield dict(staged)
        renames = [(staged[key], Path(target)) for key, target in targets.items() if staged[key] != Path(target)]
        for tmp, target in renames:
            _sync(tmp)
            if target.is_dir():  # a folder in the way fails before any target changes
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
        placed: list[tuple[Path, os.stat_result]] = []  # targets this call created, with their file's identity
        with _signals_held():
            try:
                for tmp, target in renames:
                    identity = os.stat(tmp)
                    if replace:
                        existed = os.path.lexists(target)
                        os.replace(tmp, target)
                        if not existed:
                            placed.append((target, identity))
                    else:
                        _place_new(tmp, target)
                        placed.append((target, identity))
            except OSError:
                for target, identity in placed:
                    _unlink_if_same(target, identity)
                raise
    except BaseException:
        for key, tmp in staged.items():
            if tmp != Path(targets[key]):
                tmp.unlink(missing_ok=True)
        raise


def _place_new(tmp: Path, target: Path) -> None:
    """Move `tmp` to `target` unless `target` exists: then TargetExistsError, and neither changes.

    A hard link is created only if its name is free, atomically, so a target another process writes at the
    same moment is never replaced. Where the file system has no hard links, check then rename: a target that
    appears between the two is replaced (documented in `atomic_paths`)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise TargetExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
    except OSError as err:
        if err.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(target):
            raise TargetExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        os.replace(tmp, target)
        return
    try:
        tmp.unlink()
    except OSError:
        target.unlink(missing_ok=True)  # ours: the link made just now
        raise


def _unlink_if_same(target: Path, identity: os.stat_result) -> None:
    """Remove `target` if it is still the file this process put there (not one another process renamed over
    it since): undoing our part must not delete someone else's output."""
    with contextlib.suppress(OSError):
        now = os.lstat(target)
        if (now.st_dev, now.st_ino) == (identity.st_dev, identity.st_ino):
            target.unlink()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Run the block with SIGINT and SIGTERM recorded instead of handled, then re-raise the first one, so that
    its handler (Ctrl-C's KeyboardInterrupt) runs after the block. Outside the main thread, where Python cannot
    set handlers, the block runs as is. Why not `pthread_sigmask`: it blocks the signal for this thread only,
    and the process's other threads (torch's, tqdm's) would still take it and interrupt the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) not in (signal.SIG_IGN, None)]
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        signal.raise_signal(received[0])


def _new_temporary(target: Path) -> Path:
    """An empty hidden file beside `target`, in its folder so that renaming it over `target` is atomic."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=hidden_prefix(target.name, ".tmp"), suffix=".tmp")
    os.close(fd)
    return Path(tmp_name)


def _sync(tmp: Path) -> None:
    """Flush `tmp` to disk and give it the mode a plain open() would (mkstemp's is 0600)."""
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.chmod(tmp, new_file_mode())


_STD_STREAMS = {Path("/dev/stdin"): 0, Path("/dev/stdout"): 1, Path("/dev/stderr"): 2}


def _stream_descriptor(path: Path) -> int | None:
    """The descriptor `/dev/stdout`, `/dev/stderr`, `/dev/fd/N` or `/proc/self/fd/N` names, else None."""
    path = path.absolute()
    if path in _STD_STREAMS:
        return _STD_STREAMS[path]
    if path.parent in (Path("/dev/fd"), Path("/proc/self/fd")) and path.name.isdigit():
        return int(path.name)
    return None


@contextlib.contextmanager
def _through_descriptor(fd: int) -> Iterator[Path]:
    """Yield a temporary file; once the block succeeds, copy it into the open descriptor `fd`.

    Why not open `/dev/stdout` by name: on Linux that opens the file behind it anew, so with stdout redirected to
    a file (`--out /dev/stdout > report.json`) it truncated what the command had printed (`>>`: the file's older
    contents too) and wrote from offset 0, and the command's next print overwrote the report (QA: langbrt-eval
    --json --out /dev/stdout left invalid JSON). Through the descriptor, the report follows what was printed.
    """
    if (fd, None) in ((1, sys.stdout), (2, sys.stderr)):  # closed at start (`>&-`): fd may be a file opened since
        raise OSError(errno.EBADF, f"{os.strerror(errno.EBADF)} (the stream was closed when the command started)")
    staged, name = tempfile.mkstemp(prefix=".langbrt-stream.", suffix=".tmp")  # the temp folder: not /dev
    os.close(staged)
    tmp = Path(name)
    try:
        yield tmp
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, ValueError, OSError):  # None, closed, or no descriptor
                if stream.fileno() == fd:
                    stream.flush()  # what it printed first comes first
        with open(tmp, "rb") as source:
            while chunk := source.read(1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
    finally:
        tmp.unlink(missing_ok=True)


def _is_special_file(path: Path) -> bool:
    """Whether `path` exists (following symlinks) and is neither a regular file nor a folder, or names a stream
    (`_stream_descriptor`): with stdout redirected to a file, /dev/stdout leads to a regular file, and a rename
    would have replaced the link in /dev itself (as root), not written the caller's stdout."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return _stream_descriptor(path) is not None or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write `text` (UTF-8) atomically; a failure (folder gone, disk full) is one OutputWriteError line."""
    try:
        with atomic_path(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as err:
        raise OutputWriteError(f"{target}: cannot write file ({err.strerror or err})") from err


@contextlib.contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `target`; on success it replaces `target` (see `replace_folder`),
    on error it is removed and `target` is left as it was.

    Why: a folder of files that belong together (a checkpoint, a Triton model) must never be seen half
    written or half replaced, and a failure while writing it must leave no hidden staging folder behind.
    An OSError of the block itself propagates unchanged (the caller knows what it was writing); one of
    creating the staging folder or of swapping it in is an `OutputWriteError` line naming `target`.
    """
    target = Path(target)
    try:
        staging = new_staging_folder(target)
    except OSError as err:
        raise OutputWriteError(f"cannot write {target}: {err.strerror or err}") from None
    try:
        yield staging
        replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def new_staging_folder(target: Path) -> Path:
    """An empty hidden folder beside `target` to fill before it takes `target`'s place: '.<name>.XXXXXXXX.partial',
    the form `remove_orphaned_staging` removes once a killed process left it, with the mode mkdir gives
    (mkdtemp's is 0700)."""
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=hidden_prefix(target.name, ".partial"),
                                    suffix=".partial"))
    os.chmod(staging, 0o777 & ~_umask())
    return staging


def replace_folder(new: str | Path, target: str | Path) -> None:
    """Rename folder `new` to `target`. An old `target` is renamed aside first and deleted only once `new` is
    in place, so `target` is never a mix of old and new files; if a crash falls between the two renames, the
    old folder survives as `.NAME.old` beside it. If the second rename fails, the old folder is put back.

    A failed rename is one `OutputWriteError` line naming `target` (`new` is the caller's to remove) and saying
    where the old copy is if it could not be put back. A failure to delete the old copy once `new` is in place
    is a warning: the new folder is complete, only disk space is lost.
    """
    new, target = Path(new), Path(target)
    old = target.with_name(f"{hidden_prefix(target.name, '.old')}old")  # .NAME.old, NAME cut to fit
    had_old = os.path.lexists(target)
    if had_old:
        try:
            _remove(old)  # left by an earlier crash; `target` is the newer copy
            os.replace(target, old)
        except OSError as err:
            raise OutputWriteError(f"cannot replace {target}: moving the old one aside to {old} failed "
                                   f"({err.strerror or err}); it is unchanged") from None
    try:
        os.replace(new, target)
    except BaseException as err:  # Ctrl-C included: the old folder goes back before it propagates
        reason = (err.strerror or err) if isinstance(err, OSError) else type(err).__name__
        if had_old:
            try:
                os.replace(old, target)
            except OSError as back:
                raise OutputWriteError(f"cannot replace {target} ({reason}), and putting the old one back failed "
                                       f"({back.strerror or back}): the old one is at {old}; rename it to "
                                       f"{target.name} by hand") from None
        if not isinstance(err, OSError):
            raise
        if not had_old:
            raise OutputWriteError(f"cannot create {target}: {reason}") from None
        raise OutputWriteError(f"cannot replace {target}: {reason}; the old one is unchanged") from None
    if had_old:
        try:
            _remove(old)
        except OSError as err:
            warnings.warn(f"{target} is in place, but its old copy {old} could not be deleted "
                          f"({err.strerror or err}); delete it by hand", stacklevel=3)


def _remove(path: Path) -> None:
    """Delete `path` whatever it is (folder, file, symlink; a symlink is removed, not followed); nothing if
    absent. Why not `shutil.rmtree(ignore_errors=True)`: on a file it fails, silently."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


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
