"""Whether a before/after pair shows one framing: misaligned pairs found before training starts.

Why: a retouch changes the blemishes and leaves every other pixel alone, and that is what LangBRT learns. A
pair whose "after" image is shifted, rescaled, rotated, mirrored or another photo altogether teaches it to
move or repaint the whole face, and nothing else notices: both files decode and have one aspect ratio.
`check_alignment` measures the pairs and `misaligned_message` words the offenders as one line: a warning, or
with `--strict-pairs` the error that stops the run.

Both images are compared as the model sees them (`fit_square`'s centre crop), at `CHECK_SIZE` and in luma:

- `shift`: the target moved by every whole-pixel offset up to `MAX_SHIFT`, the mean absolute difference at
  each; where it is least, refined to a fraction of a pixel by an equiangular (V) line through its two
  neighbours, is where the target's content sits. A retouch adds about the same cost at every offset, so it
  barely moves that minimum, while a misalignment of a quarter pixel moves it by a quarter pixel.
- `warp`: the same in each quarter of the image; a rescale or rotation moves the quarters apart. A quarter
  whose cost hardly rises away from its minimum (a plain backdrop) has too little texture and says nothing.
- `changed`: the fraction of pixels whose luma differs by more than `CHANGE_LEVEL` at the best whole-pixel
  offset: a few percent for a blemish retouch, most of them for another photo. When too many differ, the
  target is also tried mirrored left-right.

The thresholds come from 300 synthetic pairs (`SyntheticBlemishDataset`, 30 % of them on the real example
face) at 256 px and 150 at 512 px. Retouched in place (the named blemishes or all of them removed, also saved
as JPEG q75) they measure at most 0.06 px of `shift`, 0.17 px of `warp` and 2.1 % `changed`; with the target
shifted by 1 px at 512 (0.25 px here) at least 0.21 px of `shift`, rescaled by 1 % at least 0.39 px of `warp`,
and with another pair's target at least 38 % `changed`. Measuring takes about 5 ms a pair on a 2-core CPU,
beside 5 to 110 ms to decode its files (256 px PNG to 1024 px PNG).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from langbrt.training.data.pair_discovery import ImagePair, format_offenders, plural
from langbrt.training.data.pair_validation import UnusableImageError, read_pair
from langbrt.training.data.paired import fit_square

CHECK_SIZE = 128
"""Side of the square the two images are compared at: enough for a whole-image verdict, and cheap."""

MAX_SHIFT = 4
"""Largest offset tried, in pixels at `CHECK_SIZE` (3 % of the width: 16 px of a 512 px image)."""

MAX_DISPLACEMENT = 0.15
"""Most `shift` (px at `CHECK_SIZE`: 0.6 px at 512) of a pair that counts as aligned; retouches measure 0.06 at
most, a 1 px shift at 512 px 0.21 or more."""

MAX_WARP = 0.3
"""Most `warp` (px at `CHECK_SIZE`) of a pair that counts as aligned; a 1 % rescale measures 0.39 or more."""

CHANGE_LEVEL = 0.05
"""Luma difference (in [0, 1]) above which a pixel counts as changed; JPEG noise stays below it at 128 px."""

MAX_CHANGED = 0.25
"""Most `changed` of a pair that counts as a retouch: a retouch changes a few percent, another photo most."""

MIN_RISE = 0.1
"""Least rise of the cost one pixel away from its minimum, relative to the cost there, for that minimum to
mean anything."""

MIN_TEXTURE = 1e-3
"""Least rise of the cost one pixel away from its minimum in luma (a quarter of an 8-bit level): below it an
image is plain, and its cost curve only rounding noise."""

MAX_CHECKED = 500
"""Pairs checked at most; a larger set is checked on this many spread evenly over it, since decoding every
pair of FFHQR's 56,000 would take hours, and a set misaligned as a whole shows in any sample of it."""

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B


@dataclass(frozen=True)
class PairAlignment:
    """How a pair's target sits on its source; `problem` says why it looks misaligned (None: it does not).

    Lengths are in pixels at `CHECK_SIZE`; `scale` turns them into pixels of the source file for messages.
    """

    name: str
    shift: tuple[float, float]  # (dx, dy): where the target's content sits relative to the source's
    warp: float  # farthest a quarter of the image moves beyond `shift` (a rescale or rotation)
    changed: float  # fraction of pixels whose luma differs by more than CHANGE_LEVEL, at the best offset
    mirrored: bool  # too many pixels differ, and few once the target is flipped left-right
    scale: float  # source pixels per pixel at CHECK_SIZE

    @property
    def problem(self) -> str | None:
        """Why the pair looks misaligned, as words for a log line, or None if it looks like a retouch."""
        if self.mirrored:
            return "mirrored left-right"
        if self.changed > MAX_CHANGED:
            return f"{self.changed:.0%} of pixels differ"
        distance = math.hypot(*self.shift)
        if self.warp > MAX_WARP and (distance <= MAX_DISPLACEMENT or self.warp > 2 * distance):
            return f"rescaled or rotated (parts move by ~{_pixels(self.warp * self.scale)} px)"
        if distance > MAX_DISPLACEMENT:
            dx, dy = (_pixels(v * self.scale) for v in self.shift)
            return f"shifted by ~({dx}, {dy}) px"
        return None


def _pixels(value: float) -> str:
    """A length for a message: `2`, `0.8`, `-1.5` (never `-0`)."""
    return f"{round(value, 1) + 0.0:g}"


def measure_alignment(source: torch.Tensor, target: torch.Tensor, name: str = "") -> PairAlignment:
    """Measure how `target` (3, H', W') sits on `source` (3, H, W), two images in [0, 1] of one aspect ratio."""
    before = _luma(fit_square(source, CHECK_SIZE))  # (S, S)
    after = _luma(fit_square(target, CHECK_SIZE))  # (S, S)
    costs, shift = _costs_and_shift(before, after)  # (K, K, n, n), (dx, dy)
    k, _, n, _ = costs.shape
    quarters = costs.view(k, k, 2, n // 2, 2, n // 2).mean((3, 5))  # (K, K, 2, 2)
    moves = [subpixel_minimum(quarters[:, :, i, j]) for i in range(2) for j in range(2)]
    warp = max((math.dist(move, shift) for move in moves if move is not None), default=0.0)
    changed = _changed(costs, shift)
    mirrored = changed > MAX_CHANGED and _changed(*_costs_and_shift(before, after.flip(-1))) <= MAX_CHANGED
    return PairAlignment(name, shift, warp, changed, mirrored, min(source.shape[1:]) / CHECK_SIZE)


def offset_costs(before: torch.Tensor, after: torch.Tensor, max_shift: int = MAX_SHIFT) -> torch.Tensor:
    """|before - after moved by (dx, dy)| on the inner (n, n) = (S - 2 * max_shift)² pixels of two (S, S)
    images, for every offset up to `max_shift`: (K, K, n, n), K = 2 * max_shift + 1, indexed [dy, dx] + max_shift.

    Offset (dx, dy) compares before[y, x] with after[y + dy, x + dx]: it is least at the displacement of the
    content of `after` relative to `before` (right and down positive).
    """
    m, size = max_shift, before.shape[-1]
    n = size - 2 * m
    inner = before[m : m + n, m : m + n]  # (n, n)
    rows = [
        torch.stack([(inner - after[m + dy : m + dy + n, m + dx : m + dx + n]).abs() for dx in range(-m, m + 1)])
        for dy in range(-m, m + 1)
    ]  # K of (K, n, n)
    return torch.stack(rows)  # (K, K, n, n)


def subpixel_minimum(cost: torch.Tensor) -> tuple[float, float] | None:
    """(dx, dy) where `cost` (K, K), indexed [dy, dx] + K // 2 and V-shaped around its minimum, is least, to a
    fraction of a pixel; None when it hardly rises away from its least entry (too little texture to say).

    Along each axis an equiangular line through the least entry and its two neighbours: for a V with slope a
    and its tip at d in [-1/2, 1/2], the three samples are a|1 + d|, a|d|, a|1 - d| plus a constant, so
    d = (left - right) / (2 (max(left, right) - centre)). At the edge of the grid the whole offset is kept.
    """
    k = cost.shape[0]
    grid = cost.tolist()
    row, col = divmod(int(cost.argmin()), k)
    position = []
    for line, i in ((grid[row], col), ([r[col] for r in grid], row)):
        left, centre, right = (line[i - 1] if i > 0 else None), line[i], (line[i + 1] if i < k - 1 else None)
        steep = max(v for v in (left, right) if v is not None)
        if steep - centre < max(MIN_RISE * steep, MIN_TEXTURE):
            return None
        tip = (left - right) / (2 * (steep - centre)) if left is not None and right is not None else 0.0
        position.append(i - k // 2 + tip)
    return position[0], position[1]


def _costs_and_shift(before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float]]:
    """`offset_costs` of two (S, S) images and where the target sits by their mean, (0, 0) if it cannot say."""
    costs = offset_costs(before, after)  # (K, K, n, n)
    return costs, subpixel_minimum(costs.mean((2, 3))) or (0.0, 0.0)


def _changed(costs: torch.Tensor, shift: tuple[float, float]) -> float:
    """Fraction of pixels that differ by more than CHANGE_LEVEL at the whole offset nearest `shift`."""
    m = costs.shape[0] // 2
    dx, dy = (min(max(round(v), -m), m) for v in shift)
    return (costs[dy + m, dx + m] > CHANGE_LEVEL).float().mean().item()


def _luma(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB -> (H, W) luma."""
    return torch.einsum("c,chw->hw", image.new_tensor(_LUMA), image)


def check_alignment(pairs: Sequence[ImagePair], limit: int = MAX_CHECKED,
                    read: Callable[[ImagePair], tuple[torch.Tensor, torch.Tensor]] = read_pair,
                    ) -> list[PairAlignment]:
    """Measure `pairs` (at most `limit` of them, spread evenly over the sequence); a pair that fails to decode
    is left out, since the dataset skips and reports it when it meets it. `read` decodes a pair at full size as
    `read_pair` does: the dataset's `read_full` keeps what the run trains on, so no photo is decoded twice."""
    step = max(len(pairs) / limit, 1.0)
    chosen = [pairs[int(i * step)] for i in range(min(len(pairs), limit))]
    results = []
    for pair in chosen:
        try:
            source, target = read(pair)  # (3, H, W), (3, H', W')
        except UnusableImageError:
            continue
        results.append(measure_alignment(source, target, pair.name))
    return results


def misaligned_message(results: Sequence[PairAlignment], total: int, where: str) -> str | None:
    """One line naming the pairs of `results` that look misaligned and why, or None if none does; `total` is
    the number of pairs `results` were drawn from (`check_alignment` samples more than `MAX_CHECKED`), `where`
    the data folder."""
    bad = [r for r in results if r.problem is not None]
    if not bad:
        return None
    checked = plural(len(results), "pair", "pairs")
    if total > MAX_CHECKED:
        checked += f" checked (spread evenly over {total})"
    offenders = format_offenders([f"{r.name}: {r.problem}" for r in bad])
    return (f"{where}: {len(bad)} of {checked} {'looks' if len(bad) == 1 else 'look'} misaligned {offenders}; a target "
            "must be its source retouched in place, or the model learns to move or repaint the whole face: fix or "
            "remove these pairs")
