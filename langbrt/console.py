"""The console scripts' entry points (pyproject.toml's [project.scripts]).

Each imports its command's module only when called, inside a Ctrl-C guard: torch takes seconds to import,
and a Ctrl-C in that time would otherwise print the interpreter's traceback instead of the one line and
exit status 130 the commands give once running. This module and `langbrt/__init__` import nothing heavy.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from langbrt.exit_codes import EXIT_INTERRUPTED


def _run(module: str, prog: str) -> Any:
    """`module.main()`, or one line and exit 130 when Ctrl-C or SIGTERM lands while `module` is still importing.

    While importing, a signal ends the process at once from its handler: raising KeyboardInterrupt inside an
    import can leave a C extension half initialised (numpy then fails with "cannot load module more than
    once", a RecursionError, or an abort), and a library that catches BaseException around an import could
    swallow it. Nothing has been written yet, so there is nothing to clean up.

    Once running, SIGTERM (`kill`, `docker stop`) is handled as Ctrl-C: every command already cleans up on
    KeyboardInterrupt (temporary files removed, checkpoints named), and the default SIGTERM action would skip
    that and leave half-written files. `langbrt-serve` sets its own handler.
    """
    def exit_while_starting(signum: int, frame: object) -> None:
        os.write(sys.stderr.fileno(), f"{prog}: interrupted while starting\n".encode())
        os._exit(EXIT_INTERRUPTED)

    # A signal the parent set to be ignored stays ignored (`nohup`, a shell's background job ignores SIGINT).
    caught = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN]
    for signum in caught:
        signal.signal(signum, exit_while_starting)
    main = importlib.import_module(module).main
    return run_command(main)


def run_command(main: Callable[[], Any]) -> Any:
    """`main()` with SIGTERM handled as Ctrl-C (a signal the parent set to be ignored stays ignored) and
    unprintable output escaped: how every command runs, from its console script (`_run`, once imported) or
    as `python -m MODULE`, which is how torchrun starts the README's multi-GPU training (QA, 2026-11-26:
    there a SIGTERM, which torchrun forwards to its workers, killed them with checkpoints half written)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, signal.default_int_handler)
    escape_unprintable_output()
    return main()


def escape_unprintable_output() -> None:
    """Make stdout and stderr write what their encoding cannot take as backslash escapes.

    Why: Python holds a file name's undecodable bytes as lone surrogates ('bad\\xff.png' -> 'bad\\udcff.png'),
    and a strict UTF-8 stdout (PYTHONIOENCODING=utf-8, some desktop locales) raised UnicodeEncodeError when a
    command printed that path, after its work was done and its outputs written (QA, 2026-11-26).
    """
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):  # a TextIOWrapper; a test's capture object may not be
            stream.reconfigure(errors="backslashreplace")


def _entry(module: str, prog: str) -> Callable[[], Any]:
    """The entry point of one console script (named in pyproject.toml)."""
    return lambda: _run(module, prog)


serve = _entry("langbrt.runtime.cli_serve", "langbrt-serve")
export = _entry("langbrt.export.cli", "langbrt-export")
infer = _entry("langbrt.runtime.cli_infer", "langbrt-infer")
bench = _entry("langbrt.runtime.cli_bench", "langbrt-bench")
train = _entry("langbrt.training.cli_train", "langbrt-train")
evaluate = _entry("langbrt.training.cli_eval", "langbrt-eval")
