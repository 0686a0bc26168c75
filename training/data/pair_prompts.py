"""Per-pair prompts: an optional ``prompts.json`` in the data root saying which prompts each real pair answers.

Real pairs carry no annotation of what was retouched, so by default every pair answers the same prompts
(`--prompt`, else `DEFAULT_REAL_PROMPTS`). A user whose retouches differ from pair to pair (acne on some,
wrinkles on others) says so in one file beside ``source/`` and ``target/``, keyed by the pair's name (its
file stem, `ImagePair.name`)::

    {"001": ["acne on the cheeks"], "002": ["forehead wrinkles", "dark circles under the eyes"]}

Pairs it does not list answer the common prompts. Everything wrong with the file is found before training
starts and reported in one error, as `find_pairs` does for the folder.
"""

from __future__ import annotations

import os
from collections.abc import Container
from pathlib import Path

from langbrt.errors import LangBRTInputError
from langbrt.json_dataclass import parse_json
from langbrt.text.prompts import normalize_prompt
from langbrt.training.data.pair_discovery import format_offenders, plural

PROMPTS_FILE = "prompts.json"
"""The per-pair prompts file's name in a data root (a ``--data`` folder, or FFHQR's ``--ffhqr-root``)."""

_EXAMPLE = '{"001": ["acne on the cheeks"], "002": ["forehead wrinkles"]}'
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


def find_prompts_file(root: str | Path) -> Path | None:
    """``root/prompts.json`` if there is anything by that name (a broken link too: reading it says why)."""
    path = Path(root) / PROMPTS_FILE
    return path if os.path.lexists(path) else None


def canonical_prompts(prompts: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Normalised (`normalize_prompt`) and de-duplicated in their order, as the model sees them: a batch's
    prompt lists must match the model's per-image lists slot for slot (the semantic loss indexes both)."""
    return tuple(dict.fromkeys(normalize_prompt(p) for p in prompts))


def read_pair_prompts(path: Path, names: Container[str], hint: str = "") -> dict[str, tuple[str, ...]]:
    """Pair name -> its prompts as written, from the prompts file at `path`; `names` are the pairs it may name.
    Each prompt is checked here; `PairedImageDataset` canonicalises them (`canonical_prompts`), as it does
    every prompt it is given.

    Raises one `LangBRTInputError` line for an unreadable file, invalid JSON or a value that is not an object,
    else one line listing every bad entry (a value that is not a non-empty list of strings, an empty or
    unusable prompt, a name that matches no pair; `hint` is added to the last, e.g. how FFHQR names pairs).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LangBRTInputError(f"{path}: unreadable prompts file ({err})") from None
    data = parse_json(text, f"{path}: not valid JSON", LangBRTInputError)
    if not isinstance(data, dict):
        raise LangBRTInputError(f"{path}: must be a JSON object mapping pair names to lists of prompts, got "
                                f"{_JSON_KINDS[type(data)]}; e.g. {_EXAMPLE}")
    not_lists, bad_prompts, unknown = [], [], []
    for name, prompts in data.items():
        shown = name if name.isprintable() and name.strip() else repr(name)  # one line, and "" or " " visible
        if name not in names:
            unknown.append(shown)
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            not_lists.append(shown)
            continue
        bad_prompts += [f"{shown}: {problem}" for problem in map(_prompt_problem, prompts) if problem]
    problems = []
    if not_lists:
        problems.append(f"{plural(len(not_lists), 'value is', 'values are')} not a non-empty list of prompt "
                        f"strings {format_offenders(not_lists)}")
    if bad_prompts:
        problems.append(f"{plural(len(bad_prompts), 'prompt is', 'prompts are')} unusable "
                        f"{format_offenders(bad_prompts)}")
    if unknown:
        problems.append(f"{plural(len(unknown), 'name matches', 'names match')} no pair "
                        f"{format_offenders(unknown)}{hint}")
    if problems:
        raise LangBRTInputError(f"{path}: {'; '.join(problems)}; map each pair's name (its file stem) to a "
                                f"list of prompts, e.g. {_EXAMPLE}")
    return {name: tuple(prompts) for name, prompts in data.items()}


def _prompt_problem(prompt: str) -> str | None:
    """Why `prompt` cannot be asked ("empty prompt", or `normalize_prompt`'s reason), or None."""
    try:
        normalize_prompt(prompt)
    except LangBRTInputError as err:
        return "empty prompt" if not prompt.strip() else str(err)
    return None
