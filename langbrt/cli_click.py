"""What the click-based CLIs (`langbrt-train`, `langbrt-eval`) share: the project's one-line output.

Every LangBRT command reports a bad input as ONE `Error: ...` line with exit code 2, and a warning as one
`Warning: ...` line. Click's own usage errors print four lines (Usage / Try / blank / Error) and Python's
warnings print `file:line` plus the source line; the two helpers here bring both to the convention.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from langbrt.exit_codes import EXIT_INTERRUPTED


class OneLineUsageError(click.ClickException):
    """A click usage error shown as `Error: <message>` alone (exit 2, like click's UsageError)."""

    exit_code = 2


class OneLineCommand(click.Command):
    """`click.Command` whose usage errors (unknown option, value out of range, a callback's BadParameter) are
    one `Error: ...` line. Use as `@click.command(cls=OneLineCommand)`; `--help` is unchanged."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        with _one_line_usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; Ctrl-C it did not handle itself is one `Interrupted` line and exit 130 (the shell's
        128 + SIGINT), where click would print `Aborted!` and exit 1."""
        try:
            with _one_line_usage_errors():
                return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("Interrupted (Ctrl-C)", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


@contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # prints the help, as asked
    except click.UsageError as err:
        raise OneLineUsageError(" ".join(err.format_message().split())) from None


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
