"""The exceptions users see.

Every error a user can cause (a bad file, a bad prompt, a checkpoint that does not fit) is one of these,
with a message that is one clear line saying what is wrong and what to do. CLIs catch `LangBRTError`
and print `str(err)`; anything else escaping is a bug.
"""


class LangBRTError(Exception):
    """Base class for errors caused by user input or user-supplied files."""


class LangBRTInputError(LangBRTError, ValueError):
    """An input (image file, prompt, argument) cannot be used; the message names it and the reason."""


class TooManyPixelsError(LangBRTInputError):
    """An image announces more pixels than the caller allows: refused from its header, before decoding.

    Its own class because a server answers it differently (413, the request is too large) from an image
    that cannot be decoded (422).
    """


class CheckpointError(LangBRTError):
    """A checkpoint or exported model is missing, corrupt, or does not match what is asked of it."""
