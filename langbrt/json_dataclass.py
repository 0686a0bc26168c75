"""Dataclasses rebuilt from JSON that a person can edit: a checkpoint's config.json, a run's train_config.json,
an exported model's metadata.

Why one helper: each loader used to check the parsed JSON its own way and each missed something (a string
`format_version`, a missing field, a list where an object belongs), which surfaced as a TypeError deep inside
the code instead of one line naming the file and the field. Here every field is checked against its own
annotation, so a field added later is checked without anyone remembering to.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import reprlib
import sys
import types
import typing
from typing import Any, TypeVar

from .errors import ConfigValueError, LangBRTError

T = TypeVar("T")


def dataclass_from_json(cls: type[T], data: Any, what: str, error: type[LangBRTError], *,
                        ignore_unknown: bool = False) -> T:
    """`cls(**data)` for parsed JSON `data`, or one `error` line that starts with `what` (the file, or the part
    of it) and names the bad field.

    Refused: `data` not an object, a field `cls` does not have (unless `ignore_unknown`, for readers that must
    accept fields added later), a required field missing, a value not of its field's type (see `fits`). A list
    becomes a tuple where the field is a tuple, and an object the nested dataclass of its field (checked the
    same way). The checks of `cls.__post_init__` still run; a `ConfigValueError` of theirs becomes an `error`
    line naming `what` and the field, any other error is theirs.
    """
    if not isinstance(data, dict):
        raise error(f"{what} must be a JSON object, got {type(data).__name__}")
    hints = field_types(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown and not ignore_unknown:
        raise error(f"{what} has unknown fields {unknown}: written by a newer LangBRT?")
    missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
               if f.name not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise error(f"{what} lacks the fields {missing}")
    values = {}
    for name, hint in hints.items():
        if name not in data:
            continue
        value = data[name]
        if not fits(hint, value):
            raise error(f"{what}: {name} must be {describe(hint)}, got {reprlib.repr(value)}")
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = dataclass_from_json(hint, value, f"{what}: {name}", error)
        elif typing.get_origin(hint) is tuple:
            value = tuple(value)
        values[name] = value
    try:
        return cls(**values)
    except ConfigValueError as err:  # a range check of `cls` (its __post_init__), worded for a file
        raise error(f"{what}: {err.field} {err.problem}") from None


class _RepeatedKey(Exception):
    """A JSON object names `key` twice (raised out of json.loads, turned into the caller's error)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object_pairs_hook: the object as a dict, or `_RepeatedKey` for its first repeated key."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _RepeatedKey(key)
        seen.add(key)
    return dict(pairs)


def parse_json(text: str, what: str, error: type[LangBRTError]) -> Any:
    """`json.loads(text)` for JSON a person can edit, or one `error` line "`what` (why)", e.g. what =
    "run/train_config.json: unreadable train config".

    Why not `except json.JSONDecodeError`: json.loads also raises a plain ValueError (an integer of more than
    `sys.get_int_max_str_digits()` digits) and RecursionError (arrays nested some thousands deep). A key given
    twice in one object is an error too: json.loads keeps the last one silently, and in a file a person edits
    the other one was meant as well.
    """
    try:
        return json.loads(text, object_pairs_hook=_object_without_repeated_keys)
    except _RepeatedKey as err:
        raise error(f"{what} (key {reprlib.repr(err.key)} appears twice in one object)") from None
    except json.JSONDecodeError as err:
        raise error(f"{what} ({err})") from None
    except ValueError:  # the int-from-string limit; its message suggests sys.set_int_max_str_digits()
        raise error(f"{what} (a number of more than {sys.get_int_max_str_digits()} digits)") from None
    except RecursionError:
        raise error(f"{what} (nested too deeply)") from None


def check_format_version(data: dict[str, Any], current: int, what: str, error: type[LangBRTError]) -> None:
    """Refuse a `format_version` (0 when absent) that is not an int, is negative or is newer than `current`.

    Runs before the other fields are checked: a newer format may lay them out differently, and "upgrade
    LangBRT" is then the one useful thing to say.
    """
    version = data.get("format_version", 0)
    if not fits(int, version):
        raise error(f"{what}: format_version must be int, got {reprlib.repr(version)}")
    if version < 0:
        raise error(f"{what}: format_version must be >= 0, got {version}")
    if version > current:
        raise error(f"{what}: written by a newer LangBRT (format version {version}, this one reads up to "
                    f"{current}); upgrade LangBRT")


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of each field of dataclass `cls` (with postponed annotations they are strings)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]


def fits(hint: Any, value: Any) -> bool:
    """Whether `value` is of type `hint` as JSON spells it: an int is not a bool, a float field takes an int,
    a list or tuple field takes a list or tuple of fitting items, a nested dataclass an object (or itself)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(fits(arg, value) for arg in args)
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args[-1:] != (Ellipsis,):
            return len(value) == len(args) and all(fits(a, v) for a, v in zip(args, value, strict=True))
        return all(fits(args[0], v) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(fits(args[0], k) and fits(args[1], v) for k, v in value.items())
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict | hint)
    return isinstance(value, hint)


def describe(hint: Any) -> str:
    """`hint` in words for an error line: "int", "str | None", "a list of str", "a list [float, float]",
    "an object"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe(arg) for arg in args)
    if hint is type(None):
        return "None"
    if origin in (list, tuple):
        if origin is tuple and args[-1:] != (Ellipsis,):
            return f"a list [{', '.join(describe(a) for a in args)}]"
        return f"a list of {describe(args[0])}"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "an object"
    return getattr(hint, "__name__", str(hint))
