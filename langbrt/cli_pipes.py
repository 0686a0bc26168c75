"""A CLI whose reader stops early (`langbrt-infer ... --json | head -c 10`) ends quietly, as `yes | head` does.

Python raises BrokenPipeError on the next write to a closed stdout and prints its traceback; the reader
leaving is not an error of ours. The recipe is the one in Python's `signal` documentation.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec

P = ParamSpec("P")

EXIT_BROKEN_PIPE = 1


def quiet_on_broken_pipe(main: Callable[P, int]) -> Callable[P, int]:
    """Wrap a CLI `main`: a closed stdout ends it with exit 1 and no traceback (files it wrote are kept)."""

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            code = main(*args, **kwargs)
            sys.stdout.flush()  # here, not at interpreter exit, where a closed pipe is reported again
            return code
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # the exit-time flush then goes nowhere
            return EXIT_BROKEN_PIPE

    return wrapper
