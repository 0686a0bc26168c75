"""Whether a before/after pair's files can be used: cheap header checks up front, full decodes on load.

`check_pair` runs before training (PIL's structural ``verify``, no pixel decode) so a bad file is dropped with
a warning instead of ending a long run; `read_pair` decodes a pair when a sample is built and blames the file
that fails (`UnusableImageError.path`), so the dataset can record the skip against it. Both refuse a pair
whose source and target differ in aspect ratio: they cannot show the same framing.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from langbrt.errors import LangBRTInputError
from langbrt.image_read import DECODE_ERRORS, exif_orientation
from langbrt.io import DEFAULT_MAX_PIXELS, READ_FORMATS, read_image
from langbrt.training.data.pair_discovery import ImagePair

_ASPECT_TOLERANCE = 0.01
"""Largest relative aspect-ratio difference between a source and its target that is still one framing."""

_EXIF_TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height

# What Pillow raises for files that are not images, truncated or corrupt (UnidentifiedImageError is an
# OSError): the reader's list, and the bomb error that `_probe`'s open raises before our own limit is checked.
_PIL_DECODE_ERRORS = (*DECODE_ERRORS, Image.DecompressionBombError)


@dataclass(frozen=True)
class SkippedImage:
    """A file (or pair) left out of training, and why."""

    path: Path
    reason: str


class UnusableImageError(LangBRTInputError):
    """A file of a pair failed to decode (or the pair does not fit together); `path` is the file to blame."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


def read_pair(pair: ImagePair) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode both files of `pair` at full size: (3, H, W) and (3, H', W'), the same aspect ratio.

    Raises `UnusableImageError` naming the file that failed to decode, or the source when the two differ in
    aspect ratio.
    """
    source = _read(pair.source)  # (3, H, W)
    target = _read(pair.target)  # (3, H', W')
    if source.shape != target.shape and _aspects_differ(source.shape[1:], target.shape[1:]):
        raise UnusableImageError(
            pair.source,
            f"{pair.source} is {source.shape[2]}x{source.shape[1]} but its target {pair.target} is "
            f"{target.shape[2]}x{target.shape[1]}; a pair must show the same framing",
        )
    return source, target


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
    damaged in a way only a full decode finds is still caught by `read_pair` when its sample is built.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
            with Image.open(path, formats=READ_FORMATS) as image:
                width, height = image.size
                image.verify()  # must come straight after open; it leaves the image unusable
            with Image.open(path, formats=READ_FORMATS) as image:
                if exif_orientation(image) in _EXIF_TRANSPOSED:  # None: a damaged block, read as stored
                    width, height = height, width  # read_image turns it upright
    except FileNotFoundError:
        return None, "file not found"
    except _PIL_DECODE_ERRORS as err:
        return None, f"not a readable image ({type(err).__name__}: {' '.join(str(err).split())})"
    if width * height > DEFAULT_MAX_PIXELS:
        return None, f"image is {width}x{height}, over the {DEFAULT_MAX_PIXELS / 1e6:g} MP limit"
    return (height, width), ""


def check_pair(pair: ImagePair) -> SkippedImage | None:
    """Why `pair` cannot be used, or None if both files look fine (headers and structure only, no decode)."""
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
