"""A CLI's stdout that cannot take its output: a reader that stops early (`langbrt-infer ... --json | head -c
10`) ends the command quietly, as `yes | head` does; a stdout on a full disk or a device that fails (`> /dev/full`)
is one error line, exit 4; a closed one (`>&-`) takes nothing.

Python raises BrokenPipeError on the next write to a closed pipe and prints its traceback; the reader leaving is
not an error of ours. The recipe is the one in Python's `signal` documentation.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec

from langbrt.cli_errors import fail
from langbrt.errors import OutputWriteError
from langbrt.exit_codes import EXIT_OUTPUT_NOT_WRITTEN

P = ParamSpec("P")

EXIT_BROKEN_PIPE = 1


class StdoutWriteError(OutputWriteError):
    """stdout refused the command's result (ENOSPC, EIO): its files are written, only what it prints is lost."""


def print_out(text: str) -> None:
    """Print `text` and a newline on stdout, flushed, so that a failing stdout fails here, as a StdoutWriteError
    line, not as a traceback (QA, 2026-11-26: `langbrt-infer ... --json > /dev/full` printed one). A reader gone
    stays BrokenPipeError (`quiet_on_broken_pipe`); a closed stdout (None) takes nothing, as print does."""
    if sys.stdout is None:
        return
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise
    except OSError as err:
        raise StdoutWriteError(f"cannot write to standard output ({err.strerror or err})", errno=err.errno) from None


def quiet_on_broken_pipe(prog: str) -> Callable[[Callable[P, int]], Callable[P, int]]:
    """Wrap the CLI `main` of `prog`: a closed pipe on stdout ends it with exit 1 and no traceback, a stdout that
    refused its result (`print_out`) with one error line and exit 4 (files it wrote are kept either way)."""

    def wrap(main: Callable[P, int]) -> Callable[P, int]:
        @functools.wraps(main)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> int:
            try:
                code = main(*args, **kwargs)
                if sys.stdout is not None:  # None: started with stdout closed (`>&-`)
                    sys.stdout.flush()  # here, not at interpreter exit, where a closed pipe is reported again
                return code
            except BrokenPipeError:
                _silence_stdout()
                return EXIT_BROKEN_PIPE
            except StdoutWriteError as err:
                _silence_stdout()
                return fail(prog, err, EXIT_OUTPUT_NOT_WRITTEN)

        return wrapper

    return wrap


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the exit-time flush of what could not be written goes nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
