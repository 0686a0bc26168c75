"""One training run at a time per OUTPUT folder: an OS file lock held while the run writes there.

Why: `check_run_folder` refuses a folder that already holds a run's records, but two runs started into the
same empty folder within seconds both pass it (neither has written a log line yet) and then interleave
their log.jsonl, TensorBoard events and checkpoints. The lock (`OUTPUT/.lock`, taken with `filelock`, an
advisory `flock` on POSIX) is taken once OUTPUT exists and before anything of the run is written, and the
OS drops it when the process ends, however it ends, so a crashed run never leaves a stale lock behind. The
empty `.lock` file stays; it is not a run record, so it never makes `check_run_folder` refuse the folder.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

from langbrt.errors import LangBRTInputError

LOCK_FILE = ".lock"


class RunLock:
    """The lock on one OUTPUT folder; `acquire` refuses at once, never waits, when another run holds it."""

    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        self._lock = FileLock(self.output / LOCK_FILE, timeout=0)

    def acquire(self) -> None:
        """Take the lock, or raise `LangBRTInputError` saying another run is writing to OUTPUT."""
        try:
            self._lock.acquire()
        except Timeout:
            raise self.in_use() from None
        except OSError as err:
            raise LangBRTInputError(f"{self.output}: cannot lock the output folder ({err.strerror or err})") from None

    def check_free(self) -> None:
        """Raise `in_use()` if a live run holds OUTPUT's lock; create nothing where no lock file is.

        Why before the folder checks: a live run's folder already holds its log, and "continue it with
        --resume" is the wrong advice while that run is still writing to it.
        """
        if not (self.output / LOCK_FILE).is_file():
            return
        try:
            with self._lock:
                pass
        except Timeout:
            raise self.in_use() from None
        except OSError:
            return  # a lock file this user cannot open: whether it is live is for `acquire` to find out

    def in_use(self) -> LangBRTInputError:
        """The one-line error for an OUTPUT another run holds."""
        return LangBRTInputError(f"--output {self.output} is in use by another training run right now; wait for it "
                                 "to finish (then --resume from its checkpoint) or choose another folder")

    def release(self) -> None:
        """Let another run into OUTPUT (a no-op when this one never took the lock)."""
        self._lock.release()
