"""`dataclass_from_json`: JSON a person edited becomes the dataclass, or one line naming where and which field."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from langbrt.errors import CheckpointError, ConfigValueError
from langbrt.json_dataclass import check_format_version, dataclass_from_json, parse_json


@dataclass
class Inner:
    rate: float = 1.0


@dataclass
class Outer:
    name: str
    size: int | None = None
    sizes: tuple[int, ...] = ()
    pair: tuple[float, float] = (0.0, 1.0)
    tags: dict[str, int] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)


def load(data, **kwargs) -> Outer:
    return dataclass_from_json(Outer, data, "f.json", CheckpointError, **kwargs)


def test_json_values_become_the_dataclass_with_tuples_and_nested_dataclasses():
    got = load({"name": "a", "size": 3, "sizes": [1, 2], "pair": [1, 2.5], "tags": {"x": 1}, "inner": {"rate": 2}})
    assert got == Outer("a", 3, (1, 2), (1, 2.5), {"x": 1}, Inner(2))


@pytest.mark.parametrize("data", [[["name"]], "name", None, 3])
def test_anything_but_an_object_is_refused(data):
    with pytest.raises(CheckpointError, match=r"^f\.json must be a JSON object, got "):
        load(data)


def test_an_unknown_field_is_refused_unless_told_to_ignore_it():
    with pytest.raises(CheckpointError, match=r"^f\.json has unknown fields \['colour'\]"):
        load({"name": "a", "colour": "red"})
    assert load({"name": "a", "colour": "red"}, ignore_unknown=True) == Outer("a")


def test_a_missing_required_field_is_named():
    with pytest.raises(CheckpointError, match=r"^f\.json lacks the fields \['name'\]"):
        load({"size": 3})


@pytest.mark.parametrize(("edit", "message"), [
    ({"name": 3}, "name must be str, got 3"),
    ({"size": True}, "size must be int | None, got True"),
    ({"size": 1.5}, "size must be int | None, got 1.5"),
    ({"sizes": "12"}, "sizes must be a list of int, got '12'"),
    ({"sizes": [1, "2"]}, "sizes must be a list of int"),
    ({"pair": [1]}, r"pair must be a list \[float, float\], got \[1\]"),
    ({"tags": {"x": "1"}}, "tags must be an object"),
    ({"inner": "x"}, "inner must be an object, got 'x'"),
    ({"inner": {"rate": "fast"}}, "inner: rate must be float, got 'fast'"),
    ({"inner": {"speed": 1}}, r"inner has unknown fields \['speed'\]"),
])
def test_a_value_of_the_wrong_type_is_one_line_naming_the_field(edit, message):
    with pytest.raises(CheckpointError, match=rf"^f\.json: {message}") as err:
        load({"name": "a", **edit})
    assert "\n" not in str(err.value)


def test_a_long_bad_value_is_shortened_in_the_message():
    with pytest.raises(CheckpointError) as err:
        load({"name": ["x" * 100] * 10_000})
    assert len(str(err.value)) < 400


@pytest.mark.parametrize(("version", "message"), [
    ("1", "format_version must be int, got '1'"), (True, "format_version must be int"),
    (None, "format_version must be int, got None"),
    (2, "written by a newer LangBRT"),
])
def test_a_format_version_that_is_not_an_int_or_is_newer_is_refused(version, message):
    with pytest.raises(CheckpointError, match=rf"^f\.json: {message}"):
        check_format_version({"format_version": version}, 1, "f.json", CheckpointError)


@pytest.mark.parametrize("data", [{}, {"format_version": 0}, {"format_version": 1}])
def test_a_missing_or_current_format_version_is_accepted(data):
    check_format_version(data, 1, "f.json", CheckpointError)


@pytest.mark.parametrize(("text", "why"), [
    ('{"a": ', "Expecting value: line 1 column 7"),
    ('{"a": ' + "1" * 5000 + "}", "a number of more than 4300 digits"),  # a plain ValueError from json.loads
    ("[" * 100_000, "nested too deeply"),  # RecursionError
    ('{"a": 1, "b": {"c": 2, "c": 3}}', "key 'c' appears twice in one object"),  # json.loads would keep 3
])
def test_json_that_cannot_be_parsed_is_one_line_of_the_callers_error(text, why):
    with pytest.raises(CheckpointError) as err:
        parse_json(text, "f.json: unreadable config", CheckpointError)
    assert str(err.value).startswith(f"f.json: unreadable config ({why}") and "\n" not in str(err.value)


@dataclass
class Checked:
    rate: float = 1.0

    def __post_init__(self):
        if self.rate < 0:
            raise ConfigValueError("rate", f"must be >= 0, got {self.rate}", "--rate-weight must be >= 0")


@dataclass
class HoldsChecked:
    inner: Checked = field(default_factory=Checked)


def test_the_same_key_in_two_objects_is_no_repeat():
    assert parse_json('{"a": {"k": 1}, "b": {"k": 2}}', "f.json", CheckpointError) == {"a": {"k": 1}, "b": {"k": 2}}


def test_a_range_check_of_the_dataclass_is_worded_for_the_file_and_field_not_the_flag():
    with pytest.raises(CheckpointError) as err:
        dataclass_from_json(HoldsChecked, {"inner": {"rate": -1}}, "f.json", CheckpointError)
    assert str(err.value) == "f.json: inner: rate must be >= 0, got -1"
