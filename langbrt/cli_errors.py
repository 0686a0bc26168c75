"""The one form of every LangBRT command's error line: `PROG: error: MESSAGE`, alone on stderr.

Why one helper: the commands used to word it three ways (`Error: ...` from the click ones, `langbrt-export:
...` without the word, `langbrt-infer: error: ...`), so neither a person reading a log nor a script could find
the errors of all of them with one pattern. argparse's usage errors have the same form, with the hint to
`--help` after the message (`usage_error_line`).
"""

from __future__ import annotations

import sys


def error_line(prog: str, message: object) -> str:
    """`PROG: error: MESSAGE`, line breaks inside the message folded to spaces so that it stays one line."""
    return f"{prog}: error: {' '.join(str(message).splitlines())}"


def usage_error_line(prog: str, message: object) -> str:
    """The error line of a bad flag: it also says where the flags are explained."""
    return error_line(prog, f"{message} (see {prog} --help)")


def fail(prog: str, message: object, code: int) -> int:
    """Print `error_line` to stderr and return `code`, the exit status: `return fail(PROG, err, EXIT_USAGE)`."""
    print(error_line(prog, message), file=sys.stderr)
    return code
