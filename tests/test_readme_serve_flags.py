"""README.md's `langbrt-serve` flag table lists every flag the command takes (it lacked --model, --device,
--precision, --host, --port and --log-level, which a reader of the table alone could not find)."""

from __future__ import annotations

import re
from pathlib import Path

from langbrt.runtime.cli_serve import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_langbrt_serve_flag_has_a_row_in_the_readme_table():
    rows = set(re.findall(r"^\| `(--[a-z0-9-]+)`", README.read_text(encoding="utf-8"), flags=re.MULTILINE))
    flags = {opt for action in build_parser()._actions for opt in action.option_strings if opt.startswith("--")}
    assert flags - {"--help"} <= rows, sorted(flags - {"--help"} - rows)


def test_every_langbrt_serve_flag_has_help():
    undocumented = [action.option_strings for action in build_parser()._actions if not action.help]
    assert not undocumented, undocumented
