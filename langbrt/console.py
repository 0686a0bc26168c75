"""The console scripts' entry points (pyproject.toml's [project.scripts]).

Each imports its command's module only when called, inside a Ctrl-C guard: torch takes seconds to import,
and a Ctrl-C in that time would otherwise print the interpreter's traceback instead of the one line and
exit status 130 the commands give once running. This module and `langbrt/__init__` import nothing heavy.
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Callable
from typing import Any

from langbrt.exit_codes import EXIT_INTERRUPTED


def _run(module: str, prog: str) -> Any:
    """`module.main()`, or one line and exit 130 when Ctrl-C lands while `module` is still importing.

    SIGTERM (`kill`, `docker stop`, a closed terminal's hangup aside) is handled as Ctrl-C: every command
    already cleans up on KeyboardInterrupt (temporary files removed, checkpoints named), and the default
    SIGTERM action would skip that and leave half-written files. `langbrt-serve` sets its own handler.
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        main = importlib.import_module(module).main
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted while starting\n")
        sys.exit(EXIT_INTERRUPTED)
    return main()


def _entry(module: str, prog: str) -> Callable[[], Any]:
    """The entry point of one console script (named in pyproject.toml)."""
    return lambda: _run(module, prog)


serve = _entry("langbrt.runtime.cli_serve", "langbrt-serve")
export = _entry("langbrt.export.cli", "langbrt-export")
infer = _entry("langbrt.runtime.cli_infer", "langbrt-infer")
bench = _entry("langbrt.runtime.cli_bench", "langbrt-bench")
train = _entry("langbrt.training.cli_train", "langbrt-train")
evaluate = _entry("langbrt.training.cli_eval", "langbrt-eval")
