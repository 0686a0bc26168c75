"""The names of the hidden temporary files and staging folders our atomic writes put beside a target.

One module for both sides of the contract: `atomic.py` makes these names, `orphan_cleanup.py` recognises
them to remove what a killed process left behind. Kept together so the two can never disagree about the form.
"""

from __future__ import annotations

import os
import re

NAME_MAX_BYTES = 255  # the longest file name Linux, macOS and Windows file systems take
RANDOM_PART = 8  # the characters tempfile adds between prefix and suffix


def hidden_prefix(name: str, suffix: str) -> str:
    """'.<name>.' for a temporary file beside `name`, the name cut (at a character) so that prefix, random
    part and `suffix` stay within NAME_MAX_BYTES: a 249-byte output name is legal, and its temporary must
    be too (QA: '.<name>.XXXXXXXX.tmp' is 14 bytes longer, and writing it failed 'File name too long')."""
    room = NAME_MAX_BYTES - len(f"..{suffix}".encode()) - RANDOM_PART
    encoded = os.fsencode(name)
    if len(encoded) > room:
        name = os.fsdecode(encoded[:room].decode("utf-8", "ignore").encode())
    return f".{name}."


def temporary_files(stems: str) -> re.Pattern[str]:
    """The names of our temporary files beside a name matching the regular expression `stems`:
    '.<name>.XXXXXXXX.tmp', and '..<name>.XXXXXXXX.tmp.XXXXXXXX.tmp' (an image written into a staged file)."""
    return re.compile(rf"\.\.?(?:{stems})\.\w{{{RANDOM_PART}}}\.tmp(?:\.\w{{{RANDOM_PART}}}\.tmp)?")


def staging_folders(stems: str) -> re.Pattern[str]:
    """The names of our staging folders beside a name matching the regular expression `stems`:
    '.<name>.XXXXXXXX.partial'."""
    return re.compile(rf"\.(?:{stems})\.\w{{{RANDOM_PART}}}\.partial")
