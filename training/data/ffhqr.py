"""FFHQR (FFHQ-Retouch) pairs, in the layouts users actually have on disk.

FFHQR ships 70,000 retouched 1024² PNGs in seven tars; the originals are FFHQ's ``images1024x1024``, fetched
separately. Users therefore hold one of these layouts (ids are FFHQ's integer ids, written ``%05d``):

(a) the RetouchFormer-style prepared copy; the split is the folder (there is no ``val``)::

    face_retouching/              <- source_root; target_root stays None
      train/  source/00000.png ...   target/00000.png ...
      test/   source/63000.png ...   target/63000.png ...

(b) + (c) the retouched images and the FFHQ originals as two separate folders, each either flat or in
per-1000 sub-folders (``{id // 1000 * 1000:05d}/{id:05d}.png``)::

    images1024x1024/              <- source_root (originals, before retouching)
      00000.png 00001.png ...         or  00000/00000.png ... 01000/01000.png ...
    ffhqr/                        <- target_root (retouched, after)
      00000/00000.png ... 01000/01000.png ...   or flat

For (b)/(c) the split follows FFHQR's official id ranges (`SPLIT_IDS`). Files pair by integer id, so
``00042.png`` and ``42.png`` are the same face. Because the tars are large, partial copies are common: ids
present on only one side are left out with one warning; no pair at all is an error.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from langbrt.errors import LangBRTInputError

from .pair_discovery import ImagePair, PairIndex, format_offenders, is_image_file, plural

SPLIT_IDS: dict[str, range] = {
    "train": range(0, 56_000),
    "val": range(56_000, 63_000),
    "test": range(63_000, 70_000),
}
"""FFHQR's official split by FFHQ id (skylab-tech/ffhqr-dataset README)."""

FFHQR_NAMES_HINT = " (FFHQR pairs are named by 5-digit FFHQ id, 00000 to 69999)"
"""Added to an error about names in a prompts.json at the FFHQR root that match no pair."""


def ffhqr_names() -> frozenset[str]:
    """Every name an FFHQR pair can have (``%05d`` of an FFHQ id of any split): what a prompts.json at the FFHQR
    root may list, so that one file serves every split and a partial copy of the tars."""
    return frozenset(f"{i:05d}" for i in range(SPLIT_IDS["train"].start, SPLIT_IDS["test"].stop))


def find_ffhqr_pairs(
    source_root: str | Path, target_root: str | Path | None = None, split: str = "train"
) -> PairIndex:
    """Pair FFHQ originals with their FFHQR retouches for `split` ("train", "val" or "test").

    `source_root` is either the prepared ``face_retouching/`` folder (layout a; then `target_root` must be
    None) or the folder of originals (layouts b/c; then `target_root` is the folder of retouched images).
    Pairs are sorted by id and named ``%05d``. Raises `LangBRTInputError` naming what is missing.
    """
    if split not in SPLIT_IDS:
        raise LangBRTInputError(f"unknown FFHQR split {split!r}; use one of {', '.join(SPLIT_IDS)}")
    source_root = Path(source_root)
    if not source_root.is_dir():
        raise LangBRTInputError(
            f"{source_root}: no such folder; expected FFHQR originals or face_retouching/"
        )
    if _is_prepared_layout(source_root):
        if target_root is not None:
            raise LangBRTInputError(
                f"{source_root} holds train/ and test/ folders with source/ and target/ inside; "
                f"leave target_root unset for this layout"
            )
        return _prepared_pairs(source_root, split)
    if (source_root / "source").is_dir() and (source_root / "target").is_dir():
        raise LangBRTInputError(
            f"{source_root} looks like one split folder of face_retouching/; pass its parent (which holds "
            f"train/ and test/) or use the generic source/target loader"
        )
    if target_root is None:
        raise LangBRTInputError(
            f"{source_root} is not a face_retouching/ folder (no train/source/); for FFHQ originals also "
            f"pass the folder of FFHQR retouched images (--ffhqr-target-root; target_root in Python)"
        )
    target_root = Path(target_root)
    if not target_root.is_dir():
        raise LangBRTInputError(f"{target_root}: no such folder; expected the FFHQR retouched images")
    wanted = SPLIT_IDS[split]
    where = f"split {split!r} (ids {wanted.start}-{wanted.stop - 1})"
    sources = _split_ids(_descend_ffhq(source_root), wanted, where)
    targets = _split_ids(target_root, wanted, where)
    return _pair_ids(source_root, sources, targets, where)


def _is_prepared_layout(root: Path) -> bool:
    return any((root / split / "source").is_dir() for split in SPLIT_IDS)


def _prepared_pairs(root: Path, split: str) -> PairIndex:
    """Layout (a): the folder is the split; pairs by id inside ``root/split/{source,target}``."""
    split_dir = root / split
    if not split_dir.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "source").is_dir())
        hint = (
            " (this layout has no val split; hold out part of train or use the id layout)"
            if split == "val"
            else ""
        )
        raise LangBRTInputError(
            f"{root}: no {split}/ folder{hint}; found {', '.join(d + '/' for d in present) or 'none'}"
        )
    missing = [name for name in ("source", "target") if not (split_dir / name).is_dir()]
    if missing:
        raise LangBRTInputError(f"{split_dir}: missing {' and '.join(m + '/' for m in missing)}")
    sources = _split_ids(split_dir / "source", None, f"{split}/")
    targets = _split_ids(split_dir / "target", None, f"{split}/")
    return _pair_ids(root, sources, targets, f"{split}/")


def _descend_ffhq(root: Path) -> Path:
    """Accept the FFHQ download folder as well as its ``images1024x1024`` child."""
    child = root / "images1024x1024"
    return child if child.is_dir() and not _has_id_files(root) else root


def _has_id_files(folder: Path) -> bool:
    return any(is_image_file(p) and _is_id(p.stem) for p in folder.iterdir())


def _is_id(name: str) -> bool:
    """ASCII digits only: ``str.isdigit`` alone would accept '²', which `int` rejects."""
    return name.isascii() and name.isdigit()


def _ids_in(folder: Path, nested: bool) -> dict[int, Path]:
    """Image files named by integer id directly in `folder` (and, if `nested`, in its all-digit sub-folders).

    Other files are ignored. An id found twice (``00042.png`` and ``00042.jpg``, or flat and nested) is an
    error, since either could be the one the user meant.
    """
    folders = [folder]
    if nested:
        folders += sorted(p for p in folder.iterdir() if p.is_dir() and _is_id(p.name))
    by_id: dict[int, list[Path]] = {}
    for sub in folders:
        for path in sorted(sub.iterdir()):
            if is_image_file(path) and _is_id(path.stem):
                by_id.setdefault(int(path.stem), []).append(path)
    duplicates = [
        " = ".join(str(p.relative_to(folder)) for p in paths) for paths in by_id.values() if len(paths) > 1
    ]
    if duplicates:
        raise LangBRTInputError(
            f"{folder}: {plural(len(duplicates), 'id occurs', 'ids occur')} more than once "
            f"{format_offenders(duplicates)}; keep one file per id"
        )
    return {i: paths[0] for i, paths in by_id.items()}


def _split_ids(folder: Path, wanted: range | None, where: str) -> dict[int, Path]:
    """Id-named images in `folder` (and per-1000 sub-folders when `wanted` is set) whose id is in `wanted`."""
    found = _ids_in(folder, nested=wanted is not None)
    if not found:
        raise LangBRTInputError(f"{folder}: no images named by FFHQ id (like 00000.png) for {where}")
    in_split = {i: p for i, p in found.items() if wanted is None or i in wanted}
    if not in_split:
        raise LangBRTInputError(
            f"{folder}: no image of {where}; the ids found are {min(found)}-{max(found)}; pick another split"
        )
    return in_split


def _pair_ids(root: Path, sources: dict[int, Path], targets: dict[int, Path], where: str) -> PairIndex:
    """Pair two id maps; warn once about ids on one side only; raise if nothing pairs."""
    common = sorted(sources.keys() & targets.keys())
    if not common:
        raise LangBRTInputError(
            f"{root}: no id of {where} has both an original and a retouched image "
            f"(originals {min(sources)}-{max(sources)}, retouched {min(targets)}-{max(targets)})"
        )
    lonely = [f"{i:05d}" for i in sorted(sources.keys() ^ targets.keys())]
    if lonely:
        warnings.warn(
            f"{root}: {where}: leaving out {plural(len(lonely), 'id', 'ids')} present on one side only "
            f"({len(sources) - len(common)} without a retouched image, {len(targets) - len(common)} without "
            f"an original) {format_offenders(lonely)}",
            stacklevel=3,
        )
    return PairIndex(root, tuple(ImagePair(sources[i], targets[i], f"{i:05d}") for i in common))
