"""Finding before/after pairs on disk: the generic ``source/`` + ``target/`` layout, checked in one pass.

Real retouching data comes as two folders of the same faces, before (``source``) and after (``target``)
retouching. Everything that can be wrong with such a folder is found by `find_pairs` before training starts
and reported in one error, because a run that dies after an hour on a missing file wastes the hour.

Accepted generic layout (any mix of the suffixes `langbrt-infer` reads, `langbrt.io.READ_SUFFIXES`: .png/.apng,
.jpg/.jpeg/.jpe/.jfif, .webp, .tif/.tiff, .bmp, .gif, .ppm, in any case; files pair by stem)::

    root/
      source/  001.jpg  002.png  ...
      target/  001.png  002.png  ...

Files without an image suffix (notes, ``.DS_Store``), hidden files (``._001.png``) and sub-folders are
ignored. The FFHQR layouts live in `langbrt.training.data.ffhqr`; whether the files decode is checked by
`langbrt.training.data.pair_validation`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from langbrt.errors import LangBRTInputError
from langbrt.io import READ_SUFFIXES

MAX_LISTED = 5
"""How many offending files an error message names before it says "..."."""


@dataclass(frozen=True)
class ImagePair:
    """One before/after pair; `name` identifies it in logs and saved samples (the file stem or FFHQ id)."""

    source: Path
    target: Path
    name: str


@dataclass(frozen=True)
class PairIndex(Sequence[ImagePair]):
    """The pairs found under `root`, sorted by name; a sequence, so it can be indexed, sliced and subset."""

    root: Path
    pairs: tuple[ImagePair, ...]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index):  # type: ignore[override]
        return self.pairs[index]

    def __iter__(self) -> Iterator[ImagePair]:
        return iter(self.pairs)

    def select(self, indices: Iterable[int]) -> PairIndex:
        """The pairs at `indices` (e.g. from `select_fraction`), as a new index over the same root."""
        return PairIndex(self.root, tuple(self.pairs[i] for i in indices))


def format_offenders(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    """`(a.png, b.png, c.png, ...)`: the first `limit` offenders, so one error line stays one line."""
    shown = ", ".join(items[:limit])
    return f"({shown}, ...)" if len(items) > limit else f"({shown})"


def plural(n: int, singular: str, plural_form: str) -> str:
    """`1 source image has` / `3 source images have`."""
    return f"{n} {singular if n == 1 else plural_form}"


def is_image_file(path: Path) -> bool:
    """Whether `path` is a visible file with an image suffix; everything else in a data folder is ignored."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in READ_SUFFIXES


def _images_by_stem(folder: Path) -> tuple[dict[str, Path], list[str], list[str]]:
    """Image files directly in `folder` keyed by stem, the names of files whose stem occurs twice, and the names
    of image links that point nowhere (skipped without a word before: QA, 2026-11-26)."""
    by_stem: dict[str, list[Path]] = {}
    dangling = []
    for path in sorted(folder.iterdir()):
        if is_image_file(path):
            by_stem.setdefault(path.stem, []).append(path)
        elif path.is_symlink() and not path.exists() and path.suffix.lower() in READ_SUFFIXES:
            dangling.append(path.name)
    duplicates = [" = ".join(p.name for p in paths) for paths in by_stem.values() if len(paths) > 1]
    return {stem: paths[0] for stem, paths in by_stem.items()}, duplicates, dangling


def find_pairs(root: str | Path) -> PairIndex:
    """Pair ``root/source/X.*`` with ``root/target/X.*`` for every stem X.

    All problems (missing folder, empty folder, unpaired files, one stem twice in a folder) are collected and
    raised once, as a `LangBRTInputError` with a one-line summary naming the first few offenders, so a user
    fixes the data set in one pass instead of one error per run.
    """
    root = Path(root)
    if not root.is_dir():
        raise LangBRTInputError(f"{root}: no such folder; expected a folder holding source/ and target/")
    missing = [name for name in ("source", "target") if not (root / name).is_dir()]
    if missing:
        raise LangBRTInputError(
            f"{root}: missing {' and '.join(m + '/' for m in missing)}; expected {root}/source/ (before "
            f"retouching) and {root}/target/ (after), with the same file names"
        )
    sources, source_dups, source_dangling = _images_by_stem(root / "source")
    targets, target_dups, target_dangling = _images_by_stem(root / "target")

    problems = []
    suffixes = "/".join(sorted(READ_SUFFIXES))
    for side, dangling in (("source", source_dangling), ("target", target_dangling)):
        if dangling:
            problems.append(f"{plural(len(dangling), f'link in {side}/ points', f'links in {side}/ point')} "
                            f"nowhere {format_offenders(dangling)}")
    for side, found in (("source", sources), ("target", targets)):
        if not found:
            problems.append(f"{side}/ holds no images ({suffixes})")
    for side, dups in (("source", source_dups), ("target", target_dups)):
        if dups:
            problems.append(
                f"{plural(len(dups), 'name is', 'names are')} used twice in {side}/ {format_offenders(dups)}"
            )
    if sources and targets:
        lonely_sources = [sources[s].name for s in sorted(sources.keys() - targets.keys())]
        lonely_targets = [targets[s].name for s in sorted(targets.keys() - sources.keys())]
        if lonely_sources:
            problems.append(
                f"{plural(len(lonely_sources), 'source image has', 'source images have')} no "
                f"target {format_offenders(lonely_sources)}"
            )
        if lonely_targets:
            problems.append(
                f"{plural(len(lonely_targets), 'target has', 'targets have')} no source "
                f"{format_offenders(lonely_targets)}"
            )
    if problems:
        raise LangBRTInputError(
            f"{root}: {'; '.join(problems)}; every source/NAME.ext needs exactly one target/NAME.ext"
        )
    pairs = tuple(ImagePair(sources[stem], targets[stem], stem) for stem in sorted(sources))
    return PairIndex(root, pairs)
