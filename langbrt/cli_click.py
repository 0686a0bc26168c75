"""What the click-based CLIs (`langbrt-train`, `langbrt-eval`) share: the project's one-line output.

Every LangBRT command reports a bad input as ONE `PROG: error: ...` line (`cli_errors`) with exit code 2, and
a warning as one `Warning: ...` line. Click's own usage errors print four lines (Usage / Try / blank / Error)
and Python's warnings print `file:line` plus the source line; the two helpers here bring both to the
convention. The command's name, which the error line starts with, is the name given to `@click.command`.
Under `torchrun`, where every rank runs the command, `stop` says an error once per node.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, NoReturn

import click

from langbrt.cli_args import EMPTY_NAME
from langbrt.cli_errors import usage_error_line
from langbrt.exit_codes import EXIT_INTERRUPTED, EXIT_USAGE

# How long a torchrun rank other than the node's first waits, when it stops on an error, for torchrun to end it
# once that first rank has said the error and exited (see `stop`).
SPEAKING_RANK_GRACE_S = 10.0


def speaks() -> bool:
    """Whether this process says the command's errors: the only one, or local rank 0 of a torchrun node (each
    node's torchrun has its own console). Without LOCAL_RANK a launcher's RANK decides."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return True
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))) == 0


def stop(line: str, status: int) -> NoReturn:
    """End the command: `line` on stderr and exit `status`, said once on each torchrun node.

    Under torchrun every rank stops with the same error (the trainer's `fail_together` sees to that for a check
    that one rank makes), and torchrun ends all of a node's workers, with SIGTERM, as soon as one of them exits
    non-zero. So the node's first rank says the line and exits at once; the others wait for that end in silence,
    as exiting first would cut the first rank off before its line. One still running after `SPEAKING_RANK_GRACE_S`
    failed alone (a file missing on its node only) and says the line itself.

    Ctrl-C is different: torchrun passes SIGINT to every worker and then waits for them all, ending none, so
    the other ranks leave at once and in silence (waiting, each said the line after the grace, 10 s later).
    """
    if status == EXIT_INTERRUPTED and not speaks():
        sys.exit(status)
    _wait_for_the_speaking_rank()
    click.echo(line, err=True)
    sys.exit(status)


def _wait_for_the_speaking_rank() -> None:
    if not speaks():
        time.sleep(SPEAKING_RANK_GRACE_S)


class OneLineUsageError(click.ClickException):
    """A click usage error shown as `PROG: error: <message> (see PROG --help)` alone, exit 2 like click's
    UsageError: the line argparse's commands print for a bad flag."""

    exit_code = EXIT_USAGE

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog

    def show(self, file: IO[Any] | None = None) -> None:
        """Said once per torchrun node, where every rank parses the same flags: see `stop`."""
        _wait_for_the_speaking_rank()
        click.echo(usage_error_line(self.prog, self.format_message()), file=file, err=True)


class OneLineCommand(click.Command):
    """`click.Command` whose usage errors (unknown option, value out of range, a callback's BadParameter) are
    one `PROG: error: ...` line. Use as `@click.command("langbrt-NAME", cls=OneLineCommand)`, the name being the
    console script's (what the error line starts with, however the command was started); `--help` is
    unchanged."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        with _one_line_usage_errors(self.name):
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; Ctrl-C it did not handle itself is one `Interrupted` line and exit 130 (the shell's
        128 + SIGINT), where click would print `Aborted!` and exit 1."""
        try:
            with _one_line_usage_errors(self.name):
                return super().invoke(ctx)
        except KeyboardInterrupt:
            stop("Interrupted (Ctrl-C)", EXIT_INTERRUPTED)  # said once per torchrun node, as every stop


@contextmanager
def _one_line_usage_errors(prog: str | None) -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # prints the help, as asked
    except click.UsageError as err:
        raise OneLineUsageError(prog or "langbrt", " ".join(err.format_message().split())) from None


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Within the block, a Python warning (a skipped corrupt image, ...) prints as one `Warning: ...` line on
    stderr; the previous `showwarning` comes back afterwards (which matters when a CLI is called in process)."""
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        yield


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: object = None, line: str | None = None) -> None:
    click.echo(f"Warning: {' '.join(str(message).split())}", err=True)


class NonEmptyPath(click.Path):
    """A file or folder name that may not be empty (`cli_args.non_empty` says why: `--output "$OUT"` with the
    variable unset trained into the current folder)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "":
            self.fail(EMPTY_NAME, param, ctx)
        return super().convert(value, param, ctx)
