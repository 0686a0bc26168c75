"""The exceptions users see.

Every error a user can cause (a bad file, a bad prompt, a checkpoint that does not fit) is one of these,
with a message that is one clear line saying what is wrong and what to do. CLIs catch `LangBRTError`
and print `str(err)`; anything else escaping is a bug.
"""

import errno as _errno


class LangBRTError(Exception):
    """Base class for errors caused by user input or user-supplied files."""


class LangBRTInputError(LangBRTError, ValueError):
    """An input (image file, prompt, argument) cannot be used; the message names it and the reason."""


def input_error(name: str, reason: object, kind: type[LangBRTInputError] = LangBRTInputError) -> LangBRTInputError:
    """One line, '<name>: <reason>', whatever Pillow put in its message."""
    return kind(f"{name}: {' '.join(str(reason).split())}")


class TooManyPixelsError(LangBRTInputError):
    """An image announces more pixels than the caller allows: refused from its header, before decoding.

    Its own class because a server answers it differently (413, the request is too large) from an image
    that cannot be decoded (422).
    """


class ConfigValueError(LangBRTInputError):
    """A setting outside its range, said about the setting so that whoever read it can say where it came from.

    `str()` is the command-line form (`--l1-weight must be ...`); a loader of a file words it as
    `FILE: field problem` from `field` and `problem` (`run/train_config.json: weights: l1 must be ...`).
    """

    def __init__(self, field: str, problem: str, message: str | None = None) -> None:
        self.field, self.problem = field, problem
        super().__init__(message or f"--{field.replace('_', '-')} {problem}")


class CheckpointError(LangBRTError):
    """A checkpoint or exported model is missing, corrupt, or does not match what is asked of it."""


class OutputWriteError(LangBRTError):
    """Writing an output failed while it was being written (a full disk or quota, an I/O error, a file system
    that turned read-only); the message names the output and the reason, and nothing half written is left.

    Its own class, not a LangBRTInputError, because the command was right: checks of the output path run before
    any work, so a failure here is the machine's, and the same command succeeds once there is room. Commands
    exit with `EXIT_OUTPUT_NOT_WRITTEN` for it, so a script can tell it from a bad flag (exit 2).

    `errno` is the OSError's, where one caused it: `every_write_fails` tells a full disk or a read-only file
    system, which fails every later write too, from a failure of this one path (a folder where the file goes,
    a name too long), after which a command writing many files can go on with the next.
    """

    errno: int | None = None  # also on one rebuilt without __init__ (`distributed.fail_together` on other ranks)

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    @property
    def every_write_fails(self) -> bool:
        return self.errno is None or self.errno in _DEVICE_ERRNOS


_DEVICE_ERRNOS = frozenset({_errno.ENOSPC, _errno.EDQUOT, _errno.EROFS, _errno.EIO})
