"""Prompt normalisation: one canonical form per prompt.

The prompt bank, checkpoints and exported engines key embeddings by prompt text, so "Acne on the  cheek"
and "acne on the cheek" must map to the same key; otherwise a user's casing or spacing would decide
whether an exported engine can answer without a text encoder.
"""

import re
import reprlib
import unicodedata
from collections.abc import Sequence

from langbrt.errors import LangBRTInputError

MAX_PROMPT_CHARS = 300
"""Longest accepted prompt (after normalisation). Both text encoders truncate far earlier (77 CLIP tokens,
256 MiniLM word pieces); a longer prompt is almost certainly a mistake such as a file pasted in."""

_RAW_PROMPT_CHARS = 8 * MAX_PROMPT_CHARS
"""Longest text normalised at all. Why: NFKC grows some characters 18-fold (U+FDFA), so a megabyte prompt
sent to the server held its event loop for ~0.4 s before the length check refused it; a prompt this long
cannot come back under MAX_PROMPT_CHARS unless it is mostly whitespace runs, which no one types."""

_WHITESPACE = re.compile(r"\s+")


def normalize_prompt(text: str, *, strict: bool = False) -> str:
    """Canonical form of a prompt: NFKC, stripped, whitespace runs collapsed to one space, casefolded.

    NFKC folds compatibility forms (full-width letters, ligatures, non-breaking spaces) so that prompts typed
    on different keyboards share one key. Invisible format characters (Unicode category Cf: a byte-order mark
    from a file, zero-width spaces and joiners, soft hyphens, direction marks) are dropped, as MiniLM's
    tokenizer drops them: a prompt that reads and embeds as a pre-defined one must get its key, not run as
    another prompt; a prompt of nothing else is empty. Raises `LangBRTInputError` for empty or over-long prompts and for
    control characters, U+FFFD (bytes that were not UTF-8 before someone decoded them with replacement) and
    lone surrogates (the same bytes as Python decodes a command line: U+DCFF for 0xFF).

    Tab, newline, carriage return and the other control characters that are whitespace are folded into a
    space like any whitespace, so a prompt wrapped over lines on a command line or in a file means its words.
    `strict=True` refuses them instead, as every other control character: the HTTP API's contract (README,
    "Status codes"), where a newline in a prompt is a client's bug (a pasted file or header block) to report.
    """
    if not isinstance(text, str):
        raise LangBRTInputError(f"prompt must be a string, got {type(text).__name__}: {text!r}")
    if len(text) > _RAW_PROMPT_CHARS:
        raise _too_long(text)
    canonical = _WHITESPACE.sub(" ", _visible(unicodedata.normalize("NFKC", text))).strip().casefold()
    checked = text if strict else canonical  # NFKC makes no control character and removes none
    bad = next((c for c in checked if c == "\ufffd" or unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        what = f"a control character ({bad!r})" if unicodedata.category(bad) == "Cc" else "undecodable bytes"
        raise LangBRTInputError(f"prompt contains {what}: {_quoted(text)}; send plain UTF-8 text")
    if not canonical:
        raise LangBRTInputError(
            f"prompt is empty: {text!r}; describe the blemish, e.g. 'acne on the left cheek'"
        )
    if len(canonical) > MAX_PROMPT_CHARS:
        raise _too_long(canonical)
    return canonical


def _visible(text: str) -> str:
    """`text` without its format characters (category Cf); ASCII has none, so most prompts skip the scan."""
    if text.isascii():
        return text
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def _too_long(text: str) -> LangBRTInputError:
    return LangBRTInputError(
        f"prompt is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS} (it starts {text[:40]!r})"
    )


def _quoted(text: str) -> str:
    """`text` for an error line, cut to MAX_PROMPT_CHARS: a refused prompt can be _RAW_PROMPT_CHARS long."""
    return repr(text) if len(text) <= MAX_PROMPT_CHARS else f"{text[:MAX_PROMPT_CHARS]!r}... ({len(text)} characters)"


def normalize_prompt_lists(prompts: Sequence[Sequence[str]], batch_size: int) -> list[list[str]]:
    """Normalise and de-duplicate each image's prompts, keeping the user's order; one clear error if bad."""
    if isinstance(prompts, str):  # its len() is no count of images: "got 4 prompt lists for 1 images"
        raise LangBRTInputError(f"prompts must be one list of strings per image, got a bare string: [[{prompts!r}]]")
    if not isinstance(prompts, Sequence):  # None, a number, a set: not len()'s TypeError from inside a backend
        raise LangBRTInputError(f"prompts must be one list of strings per image, got {type(prompts).__name__}: "
                                f"{reprlib.repr(prompts)}")
    if len(prompts) != batch_size:
        raise LangBRTInputError(f"got {len(prompts)} prompt lists for {batch_size} images")
    out: list[list[str]] = []
    for image_prompts in prompts:
        if isinstance(image_prompts, str):
            raise LangBRTInputError("prompts must be one list of strings per image, got a bare string")
        if isinstance(image_prompts, bytes | bytearray):  # a Sequence too, of ints: "prompt must be a string, got 97"
            raise LangBRTInputError(f"prompts must be strings, got bytes {bytes(image_prompts)!r}; decode them first")
        if not isinstance(image_prompts, Sequence):  # None, a number: not len()'s TypeError
            raise LangBRTInputError(f"prompts must be one list of strings per image, got "
                                    f"{type(image_prompts).__name__}: {image_prompts!r}")
        if len(image_prompts) == 0:
            raise LangBRTInputError("every image needs at least one prompt")
        out.append(list(dict.fromkeys(normalize_prompt(p) for p in image_prompts)))
    return out
