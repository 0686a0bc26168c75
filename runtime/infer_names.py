"""The names `langbrt-infer` gives a photo's outputs: folder, the name they start with, suffix, map names.

In one place because three things must agree on them: the writer, the check for existing outputs before the
model runs, and which of a folder's files are a photo's outputs at all.
"""

from __future__ import annotations

import re
from pathlib import Path

from langbrt.errors import LangBRTInputError
from langbrt.io import WRITE_SUFFIXES, LoadedImage

OUTPUT_DIR = "retouched"
SUFFIX = "_retouched"


def output_folder(source: Path, output: Path | None) -> Path:
    return output if output is not None else source.parent / OUTPUT_DIR


def output_stems(files: list[Path], output: Path | None) -> dict[Path, str]:
    """The name every input's outputs start with: its stem, or '<stem>_<ext>' when inputs share a stem.

    Why: `s.bmp`, `s.gif` and `s.tif` all become PNGs and their maps are named by stem, so they would
    overwrite each other's outputs. Two inputs with one name from different folders into one `-o` folder
    cannot be told apart that way: that is an error, before any work.
    """
    by_stem: dict[tuple[Path, str], list[Path]] = {}
    for source in files:
        by_stem.setdefault((output_folder(source, output).resolve(), source.stem), []).append(source)
    stems: dict[Path, str] = {}
    taken: dict[tuple[Path, str], Path] = {}
    for (folder, stem), sources in by_stem.items():
        for source in sources:
            name = stem if len(sources) == 1 else f"{stem}_{source.suffix.lstrip('.').lower()}"
            if (folder, name) in taken:
                raise LangBRTInputError(f"{taken[folder, name]} and {source} would write the same outputs in "
                                        f"{folder}; retouch them into different folders")
            taken[folder, name] = source
            stems[source] = name
    return stems


def output_format(image: LoadedImage) -> str:
    """Keep the input's format where we can write it; RGBA or unwritable formats become PNG."""
    fmt = image.format.upper()
    if fmt == "MPO":
        fmt = "JPEG"
    if fmt not in WRITE_SUFFIXES.values() or (image.alpha is not None and fmt == "JPEG"):
        return "PNG"
    return fmt


def output_suffix(image: LoadedImage, source: Path) -> str:
    """The retouched image's suffix: the input's own when it names the output's format ('.jpeg' stays), else
    the format's first in WRITE_SUFFIXES (JPEG data named 'x.webp', or a file with no suffix, gets '.jpg':
    QA, 2026-11-26)."""
    fmt = output_format(image)
    if WRITE_SUFFIXES.get(source.suffix.lower()) == fmt:
        return source.suffix
    return next(suffix for suffix, written in WRITE_SUFFIXES.items() if written == fmt)


def slug(text: str, limit: int = 40) -> str:
    """A prompt as a file-name fragment: 'Acne on the cheeks!' -> 'acne-on-the-cheeks'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "prompt"
