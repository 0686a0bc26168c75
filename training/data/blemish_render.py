"""Blemishes drawn on top of a clean face, each as its own layer with an exact mask.

A `Blemish` is a layer `pixel += pixel * mul + add` confined to a window of the image, plus its mask. The
fields `mul` and `add` are zero wherever the mask is zero (enforced once, in `_finish`), so a pixel
outside every blemish's mask is bit-identical to the clean face. `composite` applies layers in the order
given; applying any subset in that same order renders the face with the other blemishes removed, which
is how the dataset builds exact partial-removal targets ("remove only the acne on the right cheek").

Layers are multiplicative where skin physics is (redness, pigment, shadowed grooves), so the same
blemish reads right on very light and very dark skin; shine is a screen toward white. Sizes scale with
the face half-width so a 64 px and a 512 px face get the same look.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from langbrt.training.data.blemish_types import MIRRORED_REGION, BlemishType, FaceRegion
from langbrt.training.data.face_base import FaceBase
from langbrt.training.data.soft_shapes import bump, clamp, smooth_noise

MASK_FLOOR = 0.04
"""Mask values below this are cut to 0 (and the layer with them), so masks stay compact."""


@dataclass(frozen=True)
class Blemish:
    """One blemish: its type, region, mask and the layer that draws it."""

    kind: BlemishType
    region: FaceRegion
    mask: np.ndarray  # (H, W) float32 in [0, 1]; 0 => this layer leaves the pixel untouched
    box: tuple[int, int, int, int]  # (y0, y1, x0, x1): the window `mul` and `add` cover
    mul: np.ndarray  # (3, h, w) float32, relative change: pixel += pixel * mul + add
    add: np.ndarray  # (3, h, w) float32

    def apply(self, image: np.ndarray) -> None:
        """Draw this blemish onto `image` (3, H, W) in place."""
        y0, y1, x0, x1 = self.box
        window = image[:, y0:y1, x0:x1]  # (3, h, w) view
        window += window * self.mul + self.add

    def flipped(self) -> Blemish:
        """The same blemish on the mirrored face: pixels flip and the person's left/right region swaps."""
        width = self.mask.shape[1]
        y0, y1, x0, x1 = self.box
        return replace(
            self,
            region=MIRRORED_REGION[self.region],
            mask=np.ascontiguousarray(self.mask[:, ::-1]),
            box=(y0, y1, width - x1, width - x0),
            mul=np.ascontiguousarray(self.mul[:, :, ::-1]),
            add=np.ascontiguousarray(self.add[:, :, ::-1]),
        )


def composite(clean: np.ndarray, blemishes: Sequence[Blemish]) -> np.ndarray:
    """The clean face (3, H, W) with `blemishes` drawn in the given order, clipped to [0, 1]."""
    image = clean.copy()
    for blemish in blemishes:
        blemish.apply(image)
    return np.clip(image, 0.0, 1.0, out=image)


def render_blemish(
    kind: BlemishType, region: FaceRegion, base: FaceBase, rng: np.random.Generator
) -> Blemish | None:
    """Draw one random blemish of `kind` in `region` of `base`; None if the region is (nearly) empty."""
    window = _region_window(base.region(region), margin=0.08 * base.face_width)
    if window is None:
        return None
    return _RENDERERS[kind](_Ctx(base, region, window, rng))


@dataclass(frozen=True)
class _Ctx:
    """What a renderer works with: the face, the region, and a window around the region."""

    base: FaceBase
    region: FaceRegion
    box: tuple[int, int, int, int]
    rng: np.random.Generator

    @property
    def shape(self) -> tuple[int, int]:
        y0, y1, x0, x1 = self.box
        return y1 - y0, x1 - x0

    @property
    def scale(self) -> float:
        return self.base.face_width

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Image pixel coordinates (y, x) of the window's pixel centres: (h, 1) and (1, w)."""
        y0, y1, x0, x1 = self.box
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5  # (h, 1)
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5  # (1, w)
        return ys, xs

    def face_coords(self, x0: float, y0: float) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates along the face's horizontal and vertical axes relative to (x0, y0): (h, w) each."""
        ys, xs = self.coords()
        ca, sa = float(np.cos(self.base.angle)), float(np.sin(self.base.angle))
        return (xs - x0) * ca + (ys - y0) * sa, -(xs - x0) * sa + (ys - y0) * ca

    def region_mask(self, blur: float = 0.0) -> np.ndarray:
        """The region inside the window (h, w), optionally softened by a blur of `blur` pixels."""
        y0, y1, x0, x1 = self.box
        mask = self.base.region(self.region)[y0:y1, x0:x1]
        return _box_blur(_box_blur(mask, blur / 2), blur / 2) if blur >= 1 else mask

    def sample_points(self, n: int, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """n image positions (y, x) drawn with probability proportional to `weight` (h, w)."""
        flat = weight.ravel().astype(np.float64)
        idx = self.rng.choice(flat.size, size=n, p=flat / flat.sum())
        iy, ix = np.divmod(idx, self.shape[1])
        jitter = self.rng.uniform(-0.4, 0.4, (2, n))
        return iy + self.box[0] + 0.5 + jitter[0], ix + self.box[2] + 0.5 + jitter[1]


def _region_window(mask: np.ndarray, margin: float) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.max(axis=1) > 0.5), np.flatnonzero(mask.max(axis=0) > 0.5)
    if rows.size == 0 or (mask > 0.5).sum() < 4:
        return None
    m = int(np.ceil(margin)) + 1
    h, w = mask.shape
    return max(rows[0] - m, 0), min(rows[-1] + 1 + m, h), max(cols[0] - m, 0), min(cols[-1] + 1 + m, w)


def _box_blur(mask: np.ndarray, radius: float) -> np.ndarray:
    """Separable box blur of (h, w) with a (2r+1)-wide kernel, zero outside; cumulative sums, no loops."""
    r = int(round(radius))
    if r < 1:
        return mask

    def down_columns(m: np.ndarray) -> np.ndarray:
        pad = np.zeros((r + 1, m.shape[1]), dtype=m.dtype)
        csum = np.cumsum(np.concatenate([pad, m, pad[:r]]), axis=0)  # (h + 2r + 1, w)
        return (csum[2 * r + 1 :] - csum[: -2 * r - 1]) / (2 * r + 1)  # (h, w)

    return down_columns(down_columns(mask).T).T


def _finish(
    ctx: _Ctx, kind: BlemishType, alpha: np.ndarray, mul: np.ndarray, add: np.ndarray
) -> Blemish | None:
    """Cut the mask at MASK_FLOOR and zero the layer wherever the mask is zero (the exactness contract)."""
    keep = alpha >= MASK_FLOOR  # (h, w)
    if not keep.any():
        return None
    y0, y1, x0, x1 = ctx.box
    mask = np.zeros(ctx.base.region_masks.shape[1:], dtype=np.float32)  # (H, W)
    mask[y0:y1, x0:x1] = np.where(keep, np.minimum(alpha, 1.0), 0.0)
    mul = np.where(keep[None], np.broadcast_to(mul, (3, *keep.shape)), 0.0).astype(np.float32)  # (3, h, w)
    add = np.where(keep[None], np.broadcast_to(add, (3, *keep.shape)), 0.0).astype(np.float32)  # (3, h, w)
    return Blemish(kind, ctx.region, mask, ctx.box, mul, add)


def _rgb(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(3, 1, 1)


def _spots(ctx: _Ctx, n: int, radius: tuple[float, float], weight: np.ndarray) -> list[tuple[float, ...]]:
    """n random spot centres inside the region, with radii (px, at least 0.7) and strengths."""
    ys, xs = ctx.sample_points(n, weight)
    radii = np.maximum(ctx.rng.uniform(*radius, n) * ctx.scale, 0.7)
    strengths = ctx.rng.uniform(0.5, 1.0, n)
    return list(zip(ys, xs, radii, strengths, strict=True))


def _acne(ctx: _Ctx) -> Blemish | None:
    """Red raised papules: an inflamed halo, a redder core, a specular highlight, sometimes a white head."""
    inner = ctx.region_mask(blur=0.1 * ctx.scale) ** 4  # keeps centres away from the region's edge
    ys, xs = ctx.coords()
    shape = ctx.shape
    halo, core, glint, head = (np.zeros(shape, np.float32) for _ in range(4))
    for y, x, r, s in _spots(ctx, int(ctx.rng.integers(1, 7)), (0.022, 0.045), inner):
        d2 = (ys - y) ** 2 + (xs - x) ** 2  # (h, w)
        halo = np.maximum(halo, s * np.exp(-d2 / (1.9 * r) ** 2))
        core = np.maximum(core, s * np.exp(-d2 / r**2))
        glint = np.maximum(
            glint, s * np.exp(-((ys - y + 0.35 * r) ** 2 + (xs - x + 0.3 * r) ** 2) / (0.3 * r) ** 2)
        )
        if ctx.rng.random() < 0.3:
            head = np.maximum(head, s * np.exp(-d2 / (0.35 * r) ** 2))
    mul = -halo * _rgb([0.02, 0.16, 0.14]) - core * _rgb([0.05, 0.32, 0.28])  # (3, h, w) red: G, B drop
    add = glint * _rgb([0.16, 0.15, 0.15]) + head * _rgb([0.3, 0.28, 0.2])
    return _finish(ctx, BlemishType.ACNE, np.maximum(halo, core), mul, add)


def _dark_circles(ctx: _Ctx) -> Blemish | None:
    """A darkened, bluish-to-brown crescent under the lower lid."""
    eye = ctx.base.eyes[ctx.region]
    p, q = ctx.face_coords(eye.x, eye.y)
    p, q = p * eye.outward / eye.half_width, q / eye.half_width  # (h, w), p > 0 toward the outer corner
    lid = eye.half_height / eye.half_width * np.maximum(1 - p * p, 0)
    depth = ctx.rng.uniform(0.3, 0.5)  # band centre below the lid, eye half-widths
    band = np.exp(-(((q - lid - depth) / (0.8 * depth)) ** 2)) * clamp((q - lid) / 0.12, 0, 1)
    span = np.maximum(1 - ((p + 0.15) / 1.2) ** 2, 0)  # darkest toward the inner corner
    alpha = clamp(1.3 * band * span, 0, 1) * ctx.region_mask(blur=0.05 * ctx.scale)
    tint = ctx.rng.uniform(0, 1)  # 0: blue-purple, 1: brown
    color = (1 - tint) * _rgb([0.3, 0.33, 0.2]) + tint * _rgb([0.26, 0.32, 0.36])
    return _finish(ctx, BlemishType.DARK_CIRCLES, alpha, -alpha * color * ctx.rng.uniform(0.75, 1.1), 0.0)


def _line(
    along: np.ndarray, across: np.ndarray, length: float, width: float
) -> tuple[np.ndarray, np.ndarray]:
    """(groove, ridge) of one wrinkle, each (h, w): a dark groove and the lit ridge beside it.

    `along` (in the units of `length`) and `across` (in the units of `width`) are per-pixel coordinates
    along and across the line, centred on it; the ends fade over the outer 40% of `length` so lines taper
    instead of stopping abruptly.
    """
    end = clamp(1 - (np.maximum(np.abs(along) - 0.6 * length, 0) / (0.4 * length)) ** 2, 0, 1)
    groove = np.exp(-((across / width) ** 2)) * end
    ridge = np.exp(-(((across + 1.7 * width) / (1.2 * width)) ** 2)) * end * 0.6
    return groove, ridge


def _forehead_wrinkles(ctx: _Ctx) -> Blemish | None:
    """Horizontal grooves across the forehead, slightly arched and wavy, with a lit edge above each."""
    region = ctx.region_mask()
    ys, xs = ctx.coords()
    total = float(region.sum())
    cy, cx = float((region * ys).sum() / total), float((region * xs).sum() / total)
    fx, fy = ctx.face_coords(cx, cy)  # (h, w)
    inside = region > 0.5
    half_w, top, bottom = float(np.abs(fx[inside]).max()), float(fy[inside].min()), float(fy[inside].max())
    n = int(ctx.rng.integers(2, 6))
    offsets = np.linspace(top + 0.25 * (bottom - top), bottom - 0.15 * (bottom - top), n)
    width = max(ctx.rng.uniform(0.008, 0.013) * ctx.scale, 0.6)
    groove, ridge = np.zeros(ctx.shape, np.float32), np.zeros(ctx.shape, np.float32)
    for offset in offsets + ctx.rng.normal(0, 0.05 * (bottom - top), n):
        x_rel = fx / half_w - ctx.rng.uniform(-0.15, 0.15)
        curve = ctx.rng.uniform(-0.06, 0.04) * (bottom - top) * x_rel**2
        wave = (
            ctx.rng.uniform(0, 0.5) * width * np.sin(ctx.rng.uniform(4, 9) * x_rel + ctx.rng.uniform(0, 6.3))
        )
        g, r = _line(x_rel, fy - offset - curve - wave, ctx.rng.uniform(0.5, 0.85), width)
        strength = ctx.rng.uniform(0.6, 1.0)
        groove, ridge = np.maximum(groove, strength * g), np.maximum(ridge, strength * r)
    soft = ctx.region_mask(blur=0.08 * ctx.scale)
    groove, ridge = groove * soft, ridge * soft
    depth = ctx.rng.uniform(0.22, 0.38)
    mul = -depth * groove * _rgb([1.0, 1.05, 1.1]) + 0.12 * ridge
    return _finish(ctx, BlemishType.FOREHEAD_WRINKLES, np.maximum(groove, ridge), mul, 0.0)


def _eye_wrinkles(ctx: _Ctx) -> Blemish | None:
    """Crow's feet: a fan of fine grooves radiating from the eye's outer corner."""
    eye = ctx.base.eyes[ctx.region]
    p, q = ctx.face_coords(eye.x, eye.y)
    p = p * eye.outward - 1.05 * eye.half_width  # (h, w) from the outer corner, outward positive
    width = max(ctx.rng.uniform(0.006, 0.01) * ctx.scale, 0.55)
    groove, ridge = np.zeros(ctx.shape, np.float32), np.zeros(ctx.shape, np.float32)
    n = int(ctx.rng.integers(3, 6))
    for angle in np.linspace(-0.6, 0.75, n) + ctx.rng.normal(0, 0.08, n):  # radians, + is downward
        along = p * np.cos(angle) + q * np.sin(angle)
        across = -p * np.sin(angle) + q * np.cos(angle)
        length = ctx.rng.uniform(0.6, 1.1) * eye.half_width
        start = ctx.rng.uniform(0.05, 0.25) * eye.half_width
        bend = ctx.rng.uniform(-0.3, 0.3) / eye.half_width
        g, r = _line(along - start - length / 2, across - bend * (along - start) ** 2, length, width)
        g, r = g * (along > 0), r * (along > 0)
        strength = ctx.rng.uniform(0.6, 1.0)
        groove, ridge = np.maximum(groove, strength * g), np.maximum(ridge, strength * r)
    soft = ctx.region_mask(blur=0.06 * ctx.scale)
    groove, ridge = groove * soft, ridge * soft
    mul = -ctx.rng.uniform(0.22, 0.35) * groove * _rgb([1.0, 1.05, 1.1]) + 0.1 * ridge
    return _finish(ctx, BlemishType.EYE_WRINKLES, np.maximum(groove, ridge), mul, 0.0)


def _freckles(ctx: _Ctx) -> Blemish | None:
    """Many small brown dots, denser around a random centre of the region."""
    region = ctx.region_mask(blur=0.04 * ctx.scale)
    ys, xs = ctx.coords()
    cy, cx = ctx.sample_points(1, region**4)
    cluster = region * (0.3 + bump(ys, xs, float(cy[0]), float(cx[0]), 0.5 * ctx.scale, 0.5 * ctx.scale))
    area = float((region > 0.5).sum()) / ctx.scale**2  # region area in face-width units
    n = int(min(max(ctx.rng.uniform(60, 140) * area, 4), 80))
    dots = np.zeros(ctx.shape, np.float32)
    pad = 3
    for y, x, r, s in _spots(ctx, n, (0.006, 0.014), cluster**2):
        y0, x0 = int(y - pad * r) - ctx.box[0], int(x - pad * r) - ctx.box[2]  # a patch around the dot
        y1, x1 = int(y + pad * r) + 2 - ctx.box[0], int(x + pad * r) + 2 - ctx.box[2]
        sy, sx = slice(max(y0, 0), max(y1, 0)), slice(max(x0, 0), max(x1, 0))
        aspect = ctx.rng.uniform(0.7, 1.3)
        dot = s * np.exp(-(((ys[sy] - y) * aspect) ** 2 + ((xs[:, sx] - x) / aspect) ** 2) / r**2)
        dots[sy, sx] = np.maximum(dots[sy, sx], dot)
    dots *= ctx.region_mask(blur=0.02 * ctx.scale)
    mul = -dots * _rgb([0.26, 0.36, 0.45]) * ctx.rng.uniform(0.7, 1.0)  # brown: blue drops most
    return _finish(ctx, BlemishType.FRECKLES, dots, mul, 0.0)


def _redness(ctx: _Ctx) -> Blemish | None:
    """A diffuse, blotchy red patch: overlapping soft blobs with low-frequency mottling."""
    region = ctx.region_mask(blur=0.15 * ctx.scale)
    ys, xs = ctx.coords()
    h, w = ctx.shape
    clear = np.ones(ctx.shape, np.float32)  # (h, w) product of (1 - blob): a soft union
    for y, x in zip(*ctx.sample_points(int(ctx.rng.integers(2, 5)), region**2), strict=True):
        ry, rx = ctx.rng.uniform(0.4, 0.8, 2) * np.array([h, w]) / 2 + 1
        clear *= 1 - 0.75 * bump(ys, xs, y, x, ry, rx)
    mottle = 1 + 0.4 * smooth_noise(ctx.rng, max(h, w), 5)[:h, :w]
    mottle += 0.15 * smooth_noise(ctx.rng, max(h, w), max(2, max(h, w) // 6))[:h, :w]
    alpha = clamp((1 - clear) * mottle, 0, 1) * region  # (h, w)
    strength = ctx.rng.uniform(0.45, 0.85)
    mul = -alpha * strength * _rgb([0.0, 0.24, 0.2])
    add = alpha * strength * _rgb([0.02, 0.0, 0.0])
    return _finish(ctx, BlemishType.REDNESS, alpha, mul, add)


def _shine(ctx: _Ctx) -> Blemish | None:
    """Oily specular shine: a peaked, pore-speckled highlight (a screen toward white) along the region."""
    region = ctx.region_mask()
    ys, xs = ctx.coords()
    h, w = ctx.shape
    total = float(region.sum())
    cy, cx = float((region * ys).sum() / total), float((region * xs).sum() / total)
    rows, cols = np.flatnonzero(region.max(axis=1) > 0.5), np.flatnonzero(region.max(axis=0) > 0.5)
    extent = np.array([rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1]) / 2  # (y, x) half extents
    centre = np.array([cy, cx]) + ctx.rng.uniform(-0.2, 0.2, 2) * extent
    radii = ctx.rng.uniform(0.4, 0.7, 2) * extent + 1
    patch = bump(ys, xs, *centre, *radii) ** 1.5  # (h, w)
    pores = smooth_noise(ctx.rng, max(h, w), max(2, max(h, w) // 2))[:h, :w]
    alpha = patch * clamp(0.7 + 0.3 * pores, 0, 1) * ctx.region_mask(blur=0.06 * ctx.scale)
    strength = ctx.rng.uniform(0.3, 0.55)
    screen = alpha * strength  # pixel += strength * alpha * (1 - pixel)
    return _finish(ctx, BlemishType.SHINE, alpha, -screen, screen * _rgb([1.0, 0.98, 0.95]))


_RENDERERS: dict[BlemishType, Callable[[_Ctx], Blemish | None]] = {
    BlemishType.ACNE: _acne,
    BlemishType.DARK_CIRCLES: _dark_circles,
    BlemishType.FOREHEAD_WRINKLES: _forehead_wrinkles,
    BlemishType.EYE_WRINKLES: _eye_wrinkles,
    BlemishType.FRECKLES: _freckles,
    BlemishType.REDNESS: _redness,
    BlemishType.SHINE: _shine,
}
