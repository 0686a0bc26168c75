"""Paired before/after images: finding the pairs on disk and serving them to the training loop.

Real retouching data comes as two folders of the same faces, before (``source``) and after (``target``)
retouching. Everything that can be wrong with such a folder is found by `find_pairs` before training starts
and reported in one error, because a run that dies after an hour on a missing file wastes the hour.

Accepted generic layout (any mix of .png/.jpg/.jpeg/.webp, suffixes in any case; files pair by stem)::

    root/
      source/  001.jpg  002.png  ...
      target/  001.png  002.png  ...

Files without an image suffix (notes, ``.DS_Store``), hidden files (``._001.png``) and sub-folders are
ignored. The FFHQR layouts live in `langbrt.training.data.ffhqr`.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from langbrt.errors import LangBRTInputError
from langbrt.io import DEFAULT_MAX_PIXELS, READ_FORMATS, read_image
from langbrt.text.prompts import normalize_prompt

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
"""Suffixes (lower case) read as images; anything else in a data folder is ignored."""

DEFAULT_REAL_PROMPTS = ("dark circles under the eyes", "forehead wrinkles", "acne on the cheeks")
"""The paper's pre-defined prompts (sec. 3), given for every real pair: real pairs carry no per-blemish
annotation, so the whole retouch is the answer to all of them together."""

MAX_LISTED = 5
"""How many offending files an error message names before it says "..."."""

_ASPECT_TOLERANCE = 0.01
"""Largest relative aspect-ratio difference between a source and its target that is still one framing."""

_EXIF_ORIENTATION = 0x0112
_EXIF_TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height

# What PIL raises for files that are not images, truncated, or corrupt (UnidentifiedImageError is an OSError).
_PIL_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


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
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _images_by_stem(folder: Path) -> tuple[dict[str, Path], list[str], list[str]]:
    """Image files directly in `folder` keyed by stem, the names of files whose stem occurs twice, and the names
    of image links that point nowhere (skipped without a word before: QA, 2026-11-26)."""
    by_stem: dict[str, list[Path]] = {}
    dangling = []
    for path in sorted(folder.iterdir()):
        if is_image_file(path):
            by_stem.setdefault(path.stem, []).append(path)
        elif path.is_symlink() and not path.exists() and path.suffix.lower() in IMAGE_SUFFIXES:
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
    suffixes = "/".join(sorted(IMAGE_SUFFIXES))
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


@dataclass(frozen=True)
class SkippedImage:
    """A file (or pair) left out of training, and why."""

    path: Path
    reason: str


class PairedSample(TypedDict):
    source: torch.Tensor  # (3, S, S) float32 in [0, 1], before retouching
    target: torch.Tensor  # (3, S, S) float32 in [0, 1], after retouching
    name: str
    prompts: list[str]
    region_masks: None  # real pairs carry no per-blemish masks; the synthetic set fills this


def swap_left_right(prompt: str) -> str:
    """Mirror a prompt's sides ("acne on the left cheek" -> "... right cheek") to match a flipped image."""
    words = prompt.split(" ")
    return " ".join({"left": "right", "right": "left"}.get(w, w) for w in words)


def fit_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop `image` (3, H, W) to a square and resize it to (3, size, size) with antialiased bicubic.

    Cropping rather than stretching keeps faces undistorted; antialiasing matters because FFHQ's 1024² images
    are usually trained at 512² and plain bicubic downsampling aliases skin texture, the very thing retouched.
    """
    _, h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[:, top : top + side, left : left + side]  # (3, side, side)
    if side == size:
        return image.contiguous()
    resized = F.interpolate(
        image[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False
    )
    return resized[0].clamp_(0.0, 1.0)  # (3, size, size); bicubic overshoots at edges


class PairedImageDataset(torch.utils.data.Dataset):
    """Real before/after pairs as training samples (see `PairedSample`), with every prompt in `prompts`.

    A corrupt file must not end a long run, so with ``strict=False`` a pair that fails to decode is skipped:
    `validate()` checks every file up front (call it before building the DataLoader; it may shrink the set),
    and `__getitem__` falls back to the next decodable pair if a file breaks later. Each skip is warned about
    once and recorded in `skipped`. With ``strict=True`` the first bad file raises `LangBRTInputError`.
    Skips that happen inside DataLoader worker processes are recorded in that worker's copy only; their
    warnings still reach stderr.

    ``flip=True`` mirrors source and target together (and swaps "left"/"right" in the prompts) for half the
    samples; the choice depends only on (seed, epoch, index), so it is reproducible with any number of
    workers. Call `set_epoch` each epoch to draw new flips.
    """

    def __init__(
        self,
        pairs: Sequence[ImagePair],
        image_size: int = 512,
        strict: bool = False,
        flip: bool = False,
        seed: int = 0,
        prompts: Sequence[str] = DEFAULT_REAL_PROMPTS,
        substitute: bool = True,
    ) -> None:
        if not isinstance(image_size, int) or image_size < 1:
            raise LangBRTInputError(f"image_size must be a positive integer, got {image_size!r}")
        if len(pairs) == 0:
            raise LangBRTInputError("the paired data set is empty; check the data folder")
        if isinstance(prompts, str) or len(prompts) == 0:
            raise LangBRTInputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        self.pairs: list[ImagePair] = list(pairs)
        self.image_size = image_size
        self.strict = strict
        self.flip = flip
        self.seed = seed
        self.epoch = 0
        self.prompts = [normalize_prompt(p) for p in prompts]
        self.skipped: list[SkippedImage] = []
        self._bad: set[int] = set()  # indices into self.pairs known not to decode
        # A pair that fails to decode: replaced by the next usable one (training: every batch stays full), or
        # None, which collate_pairs drops (evaluation: every pair scored once or not at all; QA, 2026-11-26:
        # eval scored the neighbour of a corrupt pair twice and counted it in num_samples).
        self.substitute = substitute

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of flips for `epoch` (like DistributedSampler.set_epoch)."""
        self.epoch = epoch

    def validate(self) -> int:
        """Check every file's header and structure (PIL ``verify``, no full decode) and drop bad pairs.

        Returns the number of pairs dropped; warns once, naming them. Also rejects a pair whose source and
        target differ in aspect ratio, since they cannot show the same framing. Raises `LangBRTInputError`
        on the first bad file when strict, or when no pair is left.
        """
        kept: list[ImagePair] = []
        dropped: list[SkippedImage] = []
        for index, pair in enumerate(self.pairs):
            if index in self._bad:  # already skipped, warned about and recorded by __getitem__
                continue
            problem = _check_pair(pair)
            if problem is None:
                kept.append(pair)
            elif self.strict:
                raise LangBRTInputError(f"{problem.path}: {problem.reason}; fix or remove this pair")
            else:
                dropped.append(problem)
        self.pairs, self._bad = kept, set()
        self.skipped.extend(dropped)
        if dropped:
            names = [f"{d.path} ({d.reason})" for d in dropped]
            warnings.warn(
                f"skipping {plural(len(dropped), 'image pair', 'image pairs')} that cannot be used "
                f"{format_offenders(names)}",
                stacklevel=2,
            )
        if not kept:
            raise LangBRTInputError("no usable image pair is left after validation; check the data folder")
        return len(dropped)

    def __getitem__(self, index: int) -> PairedSample | None:
        n = len(self.pairs)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} pairs")
        for offset in range(n if self.substitute else 1):
            i = (index + offset) % n
            if i in self._bad:
                continue
            try:
                source, target = self._load(self.pairs[i])
            except UnusableImageError as err:
                if self.strict:
                    raise
                self._record_skip(i, err)
                continue
            return self._sample(i, source, target)
        if not self.substitute:
            return None
        raise LangBRTInputError(
            "none of the image pairs in the data set can be decoded; check the data files"
        )

    def _load(self, pair: ImagePair) -> tuple[torch.Tensor, torch.Tensor]:
        source = _read(pair.source)  # (3, H, W)
        target = _read(pair.target)  # (3, H', W')
        if source.shape != target.shape and _aspects_differ(source.shape[1:], target.shape[1:]):
            raise UnusableImageError(
                pair.source,
                f"{pair.source} is {source.shape[2]}x{source.shape[1]} but its target {pair.target} is "
                f"{target.shape[2]}x{target.shape[1]}; a pair must show the same framing",
            )
        return fit_square(source, self.image_size), fit_square(target, self.image_size)  # (3, S, S) each

    def _sample(self, index: int, source: torch.Tensor, target: torch.Tensor) -> PairedSample:
        prompts = list(self.prompts)
        if self.flip and np.random.default_rng((self.seed, self.epoch, index)).random() < 0.5:
            source, target = source.flip(-1), target.flip(-1)  # (3, S, S), mirrored left-right
            prompts = [swap_left_right(p) for p in prompts]
        name = self.pairs[index].name
        return PairedSample(source=source, target=target, name=name, prompts=prompts, region_masks=None)

    def _record_skip(self, index: int, err: UnusableImageError) -> None:
        self._bad.add(index)
        self.skipped.append(SkippedImage(err.path, str(err)))
        warnings.warn(f"skipping image pair {self.pairs[index].name!r}: {err}", stacklevel=3)


class UnusableImageError(LangBRTInputError):
    """A file of a pair failed to decode (or the pair does not fit together); `path` is the file to blame."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


def _read(path: Path) -> torch.Tensor:
    """`read_image`, with the failing file attached to the error so a skip can be recorded against it."""
    try:
        return read_image(path)  # (3, H, W)
    except LangBRTInputError as err:
        message = str(err) if str(path) in str(err) else f"{path}: {err}"
        raise UnusableImageError(path, message) from err


def _aspects_differ(a: Sequence[int], b: Sequence[int]) -> bool:
    """Whether (H, W) sizes `a` and `b` differ in aspect ratio by more than the tolerance."""
    ratio_a, ratio_b = a[1] / a[0], b[1] / b[0]
    return abs(ratio_a - ratio_b) > _ASPECT_TOLERANCE * max(ratio_a, ratio_b)


def _probe(path: Path) -> tuple[tuple[int, int] | None, str]:
    """(H, W) of the upright image at `path` after PIL's structural ``verify``, or (None, reason) if unusable.

    Reads headers and chunk checksums only, no pixel decode, so checking a 70,000-pair set stays cheap; a file
    damaged in a way only a full decode finds is still caught by `__getitem__`'s fallback.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
            with Image.open(path, formats=READ_FORMATS) as image:
                width, height = image.size
                image.verify()  # must come straight after open; it leaves the image unusable
            with Image.open(path, formats=READ_FORMATS) as image:
                if image.getexif().get(_EXIF_ORIENTATION, 1) in _EXIF_TRANSPOSED:
                    width, height = height, width  # read_image turns it upright
    except FileNotFoundError:
        return None, "file not found"
    except _PIL_DECODE_ERRORS as err:
        return None, f"not a readable image ({type(err).__name__}: {' '.join(str(err).split())})"
    if width * height > DEFAULT_MAX_PIXELS:
        return None, f"image is {width}x{height}, over the {DEFAULT_MAX_PIXELS / 1e6:g} MP limit"
    return (height, width), ""


def _check_pair(pair: ImagePair) -> SkippedImage | None:
    """Why `pair` cannot be used, or None if both files look fine."""
    sizes = []
    for path in (pair.source, pair.target):
        size, reason = _probe(path)
        if size is None:
            return SkippedImage(path, reason)
        sizes.append(size)
    if _aspects_differ(sizes[0], sizes[1]):
        return SkippedImage(
            pair.source,
            f"is {sizes[0][1]}x{sizes[0][0]} but its target {pair.target} is {sizes[1][1]}x{sizes[1][0]}",
        )
    return None


def collate_pairs(batch: Sequence[PairedSample | None]) -> dict[str, object] | None:
    """DataLoader ``collate_fn``: stacks images to (B, 3, S, S) and keeps names/prompts as per-sample lists;
    None for a batch whose every pair failed to decode (a dataset built with ``substitute=False``).

    torch's default collate would transpose the prompt lists and fail on ``region_masks=None``.
    """
    batch = [s for s in batch if s is not None]  # pairs that failed to decode, when not substituted
    if not batch:
        return None
    return {
        "source": torch.stack([s["source"] for s in batch]),  # (B, 3, S, S)
        "target": torch.stack([s["target"] for s in batch]),  # (B, 3, S, S)
        "name": [s["name"] for s in batch],
        "prompts": [s["prompts"] for s in batch],
        "region_masks": None,
    }
