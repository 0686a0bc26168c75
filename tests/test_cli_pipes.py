"""A stdout that cannot take a command's result: a full disk is one error line and exit 4, a closed stdout
takes nothing and is no error, a reader gone early ends quietly (tests/test_infer_cli.py)."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import textwrap

import pytest

from langbrt.cli_pipes import StdoutWriteError, print_out, quiet_on_broken_pipe


class _FullDisk(io.TextIOBase):
    """A stdout whose every write fails as `> /dev/full` does; `fileno` is a file of the test's own, so the
    command's redirect of stdout to /dev/null after the error touches nothing of pytest's."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fileno(self) -> int:
        return self._fd


@quiet_on_broken_pipe("langbrt-test")
def _main() -> int:
    print_out('{"results": []}')
    return 0


def test_print_out_on_a_full_disk_is_a_stdout_write_error_naming_the_reason(tmp_path, monkeypatch):
    with open(tmp_path / "stdout", "w") as handle:
        monkeypatch.setattr(sys, "stdout", _FullDisk(handle.fileno()))
        with pytest.raises(StdoutWriteError, match=r"^cannot write to standard output \(No space left on device\)$"):
            print_out("x")


def test_a_stdout_on_a_full_disk_is_one_error_line_and_exit_4(tmp_path, monkeypatch, capsys):
    """QA, 2026-11-26: `langbrt-infer ... --json > /dev/full` (and every other command) ended in a traceback."""
    with open(tmp_path / "stdout", "w") as handle:
        monkeypatch.setattr(sys, "stdout", _FullDisk(handle.fileno()))
        code = _main()
    assert code == 4
    assert capsys.readouterr().err == "langbrt-test: error: cannot write to standard output (No space left on device)\n"


def test_a_command_started_with_stdout_closed_runs_and_says_nothing():
    """QA, 2026-11-26: `langbrt-infer ... >&-` wrote its outputs, then failed with an AttributeError traceback
    (sys.stdout is None when fd 1 is closed at start-up)."""
    probe = textwrap.dedent("""
        import sys
        from langbrt.cli_pipes import print_out, quiet_on_broken_pipe
        sys.exit(quiet_on_broken_pipe("langbrt-test")(lambda: print_out("done") or 0)())
    """)
    done = subprocess.run([sys.executable, "-c", probe], stderr=subprocess.PIPE, text=True, timeout=60,
                          preexec_fn=lambda: os.close(1))
    assert (done.returncode, done.stderr) == (0, "")
