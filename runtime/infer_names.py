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
    """The name every input's outputs start with, one per input in each output folder.

    Its stem, where no other input into that folder has it. Inputs that share a stem get '<stem>_<ext>' (`s.bmp`
    and `s.gif` all become PNGs, and their maps are named by stem: they would overwrite each other's outputs),
    and where that name is taken as well, by another input's stem (`s_bmp.png` beside `s.bmp`) or by the same
    extension in another case (`s.BMP` beside `s.bmp`), '<stem>_<ext>_<n>' with the smallest free n from 2.
    Own stems are given out first, then the others in sorted order, so the names do not depend on the order
    the inputs were named in. QA, 2026-11-26: `s.bmp` and `s_bmp.png` in one folder were refused as writing
    the same outputs.

    Two inputs with one file name from different folders into one `-o` folder are an error, before any work:
    nothing in their names tells their outputs apart, so which is which would be a guess.
    """
    by_stem: dict[tuple[Path, str], list[Path]] = {}
    for source in files:
        by_stem.setdefault((output_folder(source, output).resolve(), source.stem), []).append(source)
    names = {sources[0]: stem for (_, stem), sources in by_stem.items() if len(sources) == 1}
    taken = {(folder, stem) for (folder, stem), sources in by_stem.items() if len(sources) == 1}
    for (folder, stem), sources in sorted(by_stem.items()):
        if len(sources) == 1:
            continue
        by_name: dict[str, Path] = {}
        for source in sorted(sources):
            if source.name in by_name:
                raise LangBRTInputError(f"{by_name[source.name]} and {source} would write the same outputs in "
                                        f"{folder}; retouch them into different folders")
            by_name[source.name] = source
            base = name = f"{stem}_{source.suffix.lstrip('.').lower()}"
            number = 2
            while (folder, name) in taken:
                name, number = f"{base}_{number}", number + 1
            taken.add((folder, name))
            names[source] = name
    return {source: names[source] for source in files}


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


SLUG_LIMIT = 40
_SLUG = r"[a-z0-9]+(?:-[a-z0-9]+)*"  # what `slug` gives: no '_', no '-' at either end or twice in a row
# How each kind of a photo's outputs is named; `name` is what they start with (`output_stems`)
_OUTPUT_NAMES = {
    "image": re.compile(rf"(?P<name>.+){SUFFIX}(?:{'|'.join(map(re.escape, WRITE_SUFFIXES))})",
                        re.IGNORECASE | re.DOTALL),
    "map": re.compile(rf"(?P<name>.+)_map_(?:0|[1-9][0-9]*)_(?P<slug>{_SLUG})\.png", re.DOTALL),
    "mask": re.compile(r"(?P<name>.+)_mask\.png", re.DOTALL),
}


def slug(text: str, limit: int = SLUG_LIMIT) -> str:
    """A prompt as a file-name fragment: 'Acne on the cheeks!' -> 'acne-on-the-cheeks'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "prompt"


def map_name(name: str, k: int, prompt: str) -> str:
    """The file name of the k-th prompt's map of the photo whose outputs start with `name`."""
    return f"{name}_map_{k}_{slug(prompt)}.png"


def mask_name(name: str) -> str:
    """The file name of the mask of the photo whose outputs start with `name`."""
    return f"{name}_mask.png"


def is_only_map_or_mask_of(file_name: str, name: str) -> bool:
    """Whether `file_name` is a map (for any k and prompt) or the mask of the photo whose outputs start with
    `name`, and could be no output of a photo with another name: what `--overwrite` may remove as an earlier
    run's.

    A map's name has one photo name before its `_map_<k>_` (a slug holds no '_'); but with the slug 'mask' or
    'retouched' it is also the mask or the image of the photo called `<name>_map_<k>` ('a_map_0_mask.png'), and
    such a file is left alone.
    """
    owners = set()
    for kind, pattern in _OUTPUT_NAMES.items():
        found = pattern.fullmatch(file_name)
        if found is not None and (kind != "map" or len(found["slug"]) <= SLUG_LIMIT):
            owners.add((found["name"], kind))
    return owners in ({(name, "map")}, {(name, "mask")})
