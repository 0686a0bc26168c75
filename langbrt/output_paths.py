"""Checks on a CLI's output path, done before any work: never write over an input, fail in one line.

Why a shared check: `langbrt-export --output`, `langbrt-bench --out` and `langbrt-eval --out` each take a
model path and an output path. A slip (the output named like the checkpoint, or inside its folder) used to
replace the user's model with an ONNX file or a JSON report, and an output folder that did not exist was
found only after minutes of work, as a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from langbrt.errors import LangBRTInputError
from langbrt.temporary_names import NAME_MAX_BYTES


def check_output_file(output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]],
                      flag: str = "--output") -> Path:
    """`output` as a Path, after checking that writing a file there can work and destroys no input.

    Refuses (LangBRTInputError, one line naming `flag`): an output that is an input, or lies inside an input
    folder (a checkpoint directory); an existing folder; a parent that is missing, not a folder or not
    writable. Paths are compared resolved, so symlinks and `./` spellings do not slip through.
    """
    path = Path(output)
    check_name_lengths(path, flag)
    resolved = path.resolve()
    for given in inputs:
        where = overlap(resolved, given)
        if where:
            raise LangBRTInputError(f"{flag} {path} {where} the input {given}; choose another path")
    if path.is_dir():
        raise LangBRTInputError(f"{flag} {path} is a folder; give a file name")
    parent = resolved.parent
    if not parent.is_dir():
        what = "does not exist" if not parent.exists() else "is not a folder"
        raise LangBRTInputError(f"{flag} {path}: the folder {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LangBRTInputError(f"{flag} {path}: the folder {parent} is not writable")
    return path


def check_name_lengths(path: str | os.PathLike[str], flag: str) -> None:
    """Refuse (LangBRTInputError, one line naming `flag`) a path with a file or folder name longer than the
    NAME_MAX_BYTES file systems take. QA, 2026-11-26: the checks that follow (`Path.exists`, `Path.is_dir`)
    raised 'File name too long' for one, a traceback, in every command but langbrt-export."""
    for part in Path(path).parts:
        if len(os.fsencode(part)) > NAME_MAX_BYTES:
            raise LangBRTInputError(f"{flag} {path}: the name {part[:20]}... is {len(os.fsencode(part))} bytes long; "
                                    f"file systems take at most {NAME_MAX_BYTES}: choose a shorter one")


def refuse_dangling_link(path: str | os.PathLike[str], flag: str) -> None:
    """Refuse (one line naming `flag`) an output folder that is a symbolic link to nothing: creating it failed
    with a bare 'File exists' (QA, 2026-11-26), true of the link but no help to whoever typed the name."""
    link = Path(path)
    if link.is_symlink() and not link.exists():
        raise LangBRTInputError(f"{flag} {path} is a symbolic link to {os.readlink(link)}, which does not exist; "
                                "create that folder or give another one")


def overlap(resolved_output: Path, given: str | os.PathLike[str], *, contains: bool = False) -> str | None:
    """How an output (already resolved) meets the input `given`: "is" it, "is inside" it (an input folder),
    with `contains` also "contains" it (an output folder holding the input), else None. The one rule every
    CLI's output check applies, files and folders alike."""
    source = Path(given).resolve()
    if resolved_output == source:
        return "is"
    if source.is_dir() and source in resolved_output.parents:
        return "is inside"
    if contains and resolved_output in source.parents:
        return "contains"
    return None
