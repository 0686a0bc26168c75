"""What the argparse CLIs (infer, bench, export, serve) share: one-line usage errors and flag types.

The project's CLI convention: a usage error is ONE line naming the flag and the fix, exit 2, never
argparse's usage dump; it has the form of every other error line (`cli_errors`).
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import NoReturn

from langbrt.cli_errors import usage_error_line
from langbrt.exit_codes import EXIT_USAGE

_DEVICE = re.compile(r"cpu|cuda(:\d{1,3})?")  # an index past 999 is a typo, and torch cannot parse a huge one
DEVICE_HELP = "use cpu, cuda or cuda:N (e.g. cuda:1)"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is `<prog>: error: <message> (see <prog> --help)` alone, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, usage_error_line(self.prog, message) + "\n")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends '(default: X)' to help lines, except where the default is None: those lines say it in words."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def is_device_name(text: str) -> bool:
    """cpu, cuda or cuda:N (which GPU of several): what every command's `--device` accepts."""
    return _DEVICE.fullmatch(text) is not None


def device_arg(text: str) -> str:
    """`--device` for argparse: a name `is_device_name` accepts, else a usage error."""
    if not is_device_name(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: {DEVICE_HELP}")
    return text


EMPTY_NAME = "is empty (an unset shell variable?); name a file or folder"


def non_empty(text: str) -> str:
    """A file or folder name for argparse; an empty one is a usage error.

    Why: `--model "$MODEL"` with the variable unset read as no --model (the bundled model) and `-o ""` as the
    current folder, so a script's typo retouched with the wrong model, or wrote elsewhere, and exited 0.
    """
    if not text:
        raise argparse.ArgumentTypeError(EMPTY_NAME)
    return text


def non_empty_path(text: str) -> Path:
    """`non_empty`, as a Path."""
    return Path(non_empty(text))


def positive_number(text: str) -> float:
    """A finite number > 0 (seconds, megabytes): `nan` passes every `<= 0` check, `inf` overflows int()."""
    return _finite(text, minimum=0.0, inclusive=False)


def non_negative_number(text: str) -> float:
    """A finite number >= 0 (a delay that may be zero)."""
    return _finite(text, minimum=0.0, inclusive=True)


def positive_int(text: str) -> int:
    """A whole number >= 1 (a count of threads, a batch size)."""
    return _whole_number(text, minimum=1)


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (a count that may be zero: untimed warm-up calls)."""
    return _whole_number(text, minimum=0)


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text}")
    return value


THREADS_HELP = ("CPU threads torch splits one operation over (default: torch's, one per core, or OMP_NUM_THREADS); "
                "1 on a machine whose cores other jobs share (README: CPU threads)")


def _finite(text: str, minimum: float, inclusive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
        bound = ">=" if inclusive else ">"
        raise argparse.ArgumentTypeError(f"must be a finite number {bound} {minimum:g}, got {text}")
    return value
