"""Reproducible training subsets: the paper's 1/5/10/20/100% regimes (Table 1).

The low-data results are only comparable if everyone trains on the same images, so the subset is a pure
function of (n_items, fraction, seed), and its fingerprint goes into the run's config. Subsets from one seed
are nested: the 1% images are among the 5% images, which are among the 10%, and so on.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np

from langbrt.errors import LangBRTInputError

PAPER_FRACTIONS = (0.01, 0.05, 0.1, 0.2, 1.0)
"""The training-data fractions of the paper's Table 1."""


def _check(n_items: int, fraction: float) -> None:
    if not isinstance(n_items, int) or n_items < 1:
        raise LangBRTInputError(f"cannot take a subset of {n_items!r} items; the data set is empty")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 < fraction <= 1.0:
        raise LangBRTInputError(f"fraction must be in (0, 1], e.g. 0.01 for 1% of the data; got {fraction!r}")


def subset_size(n_items: int, fraction: float) -> int:
    """ceil(fraction * n_items), at least 1; rounded first so that 0.07 * 100 gives 7, not 8."""
    _check(n_items, fraction)
    return max(1, math.ceil(round(fraction * n_items, 6)))


def select_fraction(n_items: int, fraction: float, seed: int) -> list[int]:
    """Sorted indices of a seeded random `fraction` of `n_items` items (a prefix of one permutation)."""
    count = subset_size(n_items, fraction)
    order = np.random.default_rng(seed).permutation(n_items)
    return sorted(int(i) for i in order[:count])


@dataclass(frozen=True)
class SubsetInfo:
    """What a run records about its training subset, enough to check two runs saw the same images."""

    fraction: float
    seed: int
    n_items: int
    count: int
    ids_hash: str  # first 12 hex digits of sha256 over the chosen indices

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def describe_subset(n_items: int, fraction: float, seed: int) -> SubsetInfo:
    """The `SubsetInfo` of `select_fraction(n_items, fraction, seed)`, for the run's config."""
    ids = select_fraction(n_items, fraction, seed)
    digest = hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:12]
    return SubsetInfo(fraction=float(fraction), seed=seed, n_items=n_items, count=len(ids), ids_hash=digest)
