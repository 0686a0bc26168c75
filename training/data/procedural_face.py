"""Procedural clean faces: a plausible frontal face at any square size, with its region masks.

Nothing here is photoreal; what matters for the benchmark is variety the model must not key on (skin tone
from very light to very dark, lighting direction and strength, face shape, position and tilt, hair,
background, eye and lip colour, pore texture) and exact geometry: every `FaceRegion` mask comes from the
same analytic face the pixels were drawn from. Blemishes are added on top by `blemish_render`.

Images are channel-first (3, H, W) float32 throughout: numpy broadcasts a (H, W) alpha over a leading
channel axis several times faster than over a trailing one, and torch wants CHW anyway. Small features
(eyes, nose, mouth) are drawn inside windows around them, with compact-support bumps instead of
Gaussians, so a 512x512 face costs a few dozen full-frame array operations.

Coordinates: the face frame is the image frame rotated by the face's tilt; `fx` runs along the face's
horizontal axis and `fy` down it, in pixels from the face centre (fx > 0 is the image's right = the
person's LEFT); `u = fx / a`, `v = fy / b` are the same in units of the face half-width/half-height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from langbrt.training.data.blemish_types import REGION_INDEX, FaceRegion
from langbrt.training.data.face_base import EyeFrame, FaceBase
from langbrt.training.data.soft_shapes import bump, clamp, ellipse, fill, smooth_noise

_SKIN_PALETTE = np.array(
    [[0.97, 0.87, 0.80], [0.93, 0.78, 0.67], [0.85, 0.66, 0.52], [0.73, 0.52, 0.38],
     [0.56, 0.37, 0.25], [0.39, 0.25, 0.17], [0.25, 0.16, 0.11]], dtype=np.float32,
)  # fmt: skip  # (7, 3) very light -> very dark, sRGB
_HAIR_COLORS = np.array(
    [[0.05, 0.04, 0.04], [0.16, 0.10, 0.07], [0.33, 0.21, 0.12], [0.72, 0.57, 0.36],
     [0.50, 0.22, 0.10], [0.58, 0.57, 0.55]], dtype=np.float32,
)  # fmt: skip  # black, dark brown, brown, blonde, auburn, grey
_IRIS_COLORS = np.array(
    [[0.20, 0.12, 0.07], [0.36, 0.22, 0.11], [0.42, 0.36, 0.18], [0.28, 0.42, 0.28],
     [0.30, 0.45, 0.64], [0.42, 0.47, 0.52]], dtype=np.float32,
)  # fmt: skip
_EYE_U, _EYE_V = 0.38, -0.12  # eye centres, face units
_EYE_W, _EYE_H = 0.17, 0.065  # eye half-width and opening half-height, in units of a
_BROW_V = -0.31


def _rgb(values: np.ndarray | list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(3, 1, 1)


def _over(dst: np.ndarray, color: np.ndarray, alpha: np.ndarray) -> None:
    """Alpha-composite `color` ((3, h, w) or (3, 1, 1)) over `dst` (3, h, w) in place."""
    dst += alpha[None] * (color - dst)


@dataclass(frozen=True)
class _Frame:
    """The face frame of one render: per-pixel face coordinates and windows around face points."""

    fx: np.ndarray  # (H, W)
    fy: np.ndarray  # (H, W)
    cx: float
    cy: float
    ca: float
    sa: float

    def to_image(self, px: float, py: float) -> tuple[float, float]:
        return self.cx + px * self.ca - py * self.sa, self.cy + px * self.sa + py * self.ca

    def window(self, px: float, py: float, rx: float, ry: float) -> tuple[slice, slice]:
        """Image slices covering the face-frame box centred at (px, py) with half-sizes (rx, ry)."""
        x, y = self.to_image(px, py)
        hx = abs(self.ca) * rx + abs(self.sa) * ry + 2
        hy = abs(self.sa) * rx + abs(self.ca) * ry + 2
        size = self.fx.shape[0]
        y0, y1 = min(max(int(y - hy), 0), size), min(max(int(np.ceil(y + hy)), 0), size)
        x0, x1 = min(max(int(x - hx), 0), size), min(max(int(np.ceil(x + hx)), 0), size)
        return slice(y0, y1), slice(x0, x1)


def render_procedural_face(rng: np.random.Generator, size: int) -> FaceBase:
    """Draw one random clean face of `size` x `size` pixels; deterministic given the generator state."""
    s = float(size)
    a = s * rng.uniform(0.23, 0.29)  # face half-width, px
    b = a * rng.uniform(1.22, 1.40)  # face half-height, px
    cx, cy = s * (0.5 + rng.uniform(-0.05, 0.05)), s * (0.5 + rng.uniform(-0.02, 0.05))
    angle = float(rng.uniform(-0.14, 0.14))
    ca, sa = float(np.cos(angle)), float(np.sin(angle))
    ys = np.arange(size, dtype=np.float32)[:, None] + 0.5  # (H, 1)
    xs = np.arange(size, dtype=np.float32)[None, :] + 0.5  # (1, W)
    frame = _Frame((xs - cx) * ca + (ys - cy) * sa, -(xs - cx) * sa + (ys - cy) * ca, cx, cy, ca, sa)
    fx, fy = frame.fx, frame.fy  # (H, W) face-frame pixels
    u, v = fx / a, fy / b

    t = rng.uniform(0.0, 1.0) * (len(_SKIN_PALETTE) - 1)
    lo = int(min(t, len(_SKIN_PALETTE) - 2))
    tone = _SKIN_PALETTE[lo] * (lo + 1 - t) + _SKIN_PALETTE[lo + 1] * (t - lo)  # (3,)
    warm = rng.uniform(-0.03, 0.03)
    tone = _rgb(clamp(tone * (1 + rng.normal(0, 0.025, 3)) + [warm, 0, -warm], 0.02, 1))  # (3, 1, 1)
    hair = _rgb(
        _HAIR_COLORS[rng.integers(len(_HAIR_COLORS))] * rng.uniform(0.75, 1.25) * rng.uniform(0.95, 1.05, 3)
    )
    light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.7, 0.3), 1.0], dtype=np.float32)
    light /= np.linalg.norm(light)
    ambient, exposure = rng.uniform(0.35, 0.6), rng.uniform(0.85, 1.12)

    # Background: a gradient along the light with soft blotches.
    bg0, bg1 = _rgb(rng.uniform(0.05, 0.95, 3)), _rgb(rng.uniform(0.05, 0.95, 3))
    ramp = clamp(0.5 + (xs / s - 0.5) * float(light[0]) + (ys / s - 0.5) * 0.6, 0, 1)  # (H, W)
    ramp *= 1 + 0.06 * smooth_noise(rng, size, 4)
    image = bg0 + (bg1 - bg0) * ramp[None]  # (3, H, W)

    # Pseudo-3D shading of an ellipsoid head: Lambert plus ambient; shadows a little warmer.
    nz = np.sqrt(np.maximum(1.15 - u * u - v * v, 0.05))  # (H, W)
    normal_dot = (u * light[0] + v * light[1] + nz * light[2]) / np.sqrt(u * u + v * v + nz * nz)
    shade = exposure * (ambient + (1 - ambient) * clamp(normal_dot, 0, 1))  # (H, W)
    shade_rgb = shade[None] * (1 + _rgb([0.12, 0.0, -0.08]) * (1 - shade[None]))  # (3, H, W)

    hair_style = rng.choice(["short", "long", "bald"], p=[0.45, 0.47, 0.08])
    strands = 0.75 + 0.25 * smooth_noise(rng, size, 5, max(8, size // 6))  # (H, W)
    hair_rgb = hair * (strands * (0.55 + 0.6 * shade))[None]  # (3, H, W)
    if hair_style != "bald":
        back = ellipse(fx, fy, 0, -0.15 * b, 1.12 * a, 1.02 * b)
        if hair_style == "long":
            drop = b * rng.uniform(0.9, 1.6)
            long_hair = ellipse(fx, fy, 0, 0.2 * b, 1.25 * a, drop) * (fy < 0.2 * b + drop * 0.98)
            back = np.maximum(back, long_hair)
        _over(image, hair_rgb, back)

    # Neck, clothes, ears.
    _over(image, tone * shade_rgb * 0.7, fill(np.abs(fx) - 0.5 * a) * fill(0.5 * b - fy))
    clothes = ellipse(fx, fy, 0, 2.15 * b, 2.4 * a, 0.95 * b)
    _over(image, _rgb(rng.uniform(0.05, 0.9, 3)) * (0.6 + 0.4 * shade[None]), clothes)
    for side in (-1, 1):
        win = frame.window(side * 0.98 * a, -0.04 * b, 0.15 * a, 0.24 * b)
        ear = ellipse(fx[win], fy[win], side * 0.98 * a, -0.04 * b, 0.13 * a, 0.22 * b)
        _over(image[:, win[0], win[1]], tone * shade_rgb[:, win[0], win[1]] * 0.85, ear)

    # Face skin: tone x shading x texture (mottling, pores, a natural flush on the cheeks).
    taper = 1 + 0.22 * clamp(v, 0, 1) ** 2  # narrower jaw
    face = ellipse(fx * taper, fy, 0, 0, a, b)  # (H, W)
    pores = rng.standard_normal((size, size), dtype=np.float32)
    pores = 0.5 * (pores + np.roll(pores, 1, axis=1)) + 0.5 * smooth_noise(rng, size, max(4, size // 5))
    texture = 1 + rng.uniform(0.015, 0.03) * smooth_noise(rng, size, 10) + rng.uniform(0.01, 0.025) * pores
    skin = tone * shade_rgb * texture[None]  # (3, H, W)
    flush = rng.uniform(0.0, 0.1)
    for side in (-1, 1):
        win = frame.window(side * 0.5 * a, 0.3 * b, 0.4 * a, 0.3 * b)
        blush = flush * bump(fx[win], fy[win], side * 0.5 * a, 0.3 * b, 0.4 * a, 0.3 * b)  # (h, w)
        skin[:, win[0], win[1]] *= 1 - blush[None] * _rgb([0.0, 0.6, 0.5])
    _features(skin, frame, a, b, tone, hair, shade, light, rng)
    _over(image, skin, face)

    # Region masks (before the front hair and the eyes hide parts of them).
    hair_top, hair_curve = rng.uniform(-0.80, -0.58), rng.uniform(0.2, 0.45)  # hairline v = top + curve u^2
    fringe = np.zeros_like(face) if hair_style == "bald" else fill((v - hair_top - hair_curve * u * u) * b)
    visible = face * (1 - fringe)  # (H, W)
    for side in (-1, 1):
        win = frame.window(side * _EYE_U * a, _EYE_V * b, _EYE_W * a + 2, _EYE_W * a)
        visible[win] *= 1 - _eye_mask(fx[win], fy[win], side * _EYE_U * a, _EYE_V * b, a, dilate=1.0)
    regions = _regions(frame, a, b, hair_top, hair_curve, visible)
    if hair_style != "bald":
        _over(image, hair_rgb, fringe * np.maximum(face, back))

    image *= 1 + 0.01 * rng.standard_normal((1, size, size), dtype=np.float32)  # sensor noise
    np.clip(image, 0.0, 1.0, out=image)
    eyes = {}
    for region, side in ((FaceRegion.UNDER_LEFT_EYE, 1), (FaceRegion.UNDER_RIGHT_EYE, -1)):
        x, y = frame.to_image(side * _EYE_U * a, _EYE_V * b)
        eyes[region] = EyeFrame(x, y, _EYE_W * a, _EYE_H * a, float(side))
    return FaceBase(image.astype(np.float32, copy=False), regions, visible, eyes, angle, a)


def _eye_mask(
    fx: np.ndarray, fy: np.ndarray, ex: float, ey: float, a: float, dilate: float = 0.0
) -> np.ndarray:
    """Coverage of the eye opening, an almond with parabolic lids centred at (ex, ey) (face-frame px)."""
    ew, eh = _EYE_W * a, _EYE_H * a
    p = (fx - ex) / ew
    lid = np.maximum(1 - p * p, 0)  # (h, w)
    upper, lower = -eh * 1.1 * np.sqrt(lid), eh * 0.8 * lid
    inside = np.maximum(np.maximum(upper - (fy - ey), (fy - ey) - lower), (np.abs(p) - 1) * ew)
    return fill(inside - dilate)


def _features(
    skin: np.ndarray,
    frame: _Frame,
    a: float,
    b: float,
    tone: np.ndarray,
    hair: np.ndarray,
    shade: np.ndarray,
    light: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Paint eyes, brows, nose and mouth onto the skin layer (3, H, W) in place, each inside its window."""
    iris = _rgb(_IRIS_COLORS[rng.integers(len(_IRIS_COLORS))])
    gaze = rng.uniform(-0.12, 0.12) * a
    lip = tone * _rgb([0.88, 0.58, 0.58]) * rng.uniform(0.8, 1.0)
    if rng.random() < 0.15:  # lipstick
        lip = _rgb([[0.65, 0.1, 0.15], [0.75, 0.35, 0.4], [0.45, 0.15, 0.2]][rng.integers(3)])
    brow_scale = rng.uniform(0.7, 1.3)
    for side in (-1, 1):
        ex, ey, ew = side * _EYE_U * a, _EYE_V * b, _EYE_W * a
        win = frame.window(ex, (ey + _BROW_V * b) / 2, 0.42 * a, 0.42 * a)
        x, y, sk, sh = frame.fx[win], frame.fy[win], skin[:, win[0], win[1]], shade[win][None]
        socket = bump(x, y, ex, ey - 0.02 * b, 0.42 * a, 0.16 * b)  # (h, w)
        crease = bump(x, y, ex, ey - 0.1 * a, 0.2 * a, 0.02 * a + 0.8)
        sk *= (1 - 0.12 * socket - 0.15 * crease)[None]
        eye = _eye_mask(x, y, ex, ey, a)
        _over(sk, _rgb([0.88, 0.86, 0.84]) * sh * (1 - 0.2 * socket)[None], eye)
        ir = 0.075 * a
        _over(sk, iris * sh, eye * ellipse(x, y, ex + gaze, ey + 0.005 * a, ir, ir))
        _over(sk, _rgb([0.02, 0.02, 0.02]), eye * ellipse(x, y, ex + gaze, ey, 0.4 * ir, 0.4 * ir))
        glint = ellipse(x, y, ex + gaze - 0.3 * ir, ey - 0.3 * ir, 0.18 * ir + 0.3, 0.18 * ir + 0.3)
        _over(sk, _rgb([1.0, 1.0, 1.0]), eye * glint * 0.8)
        p = (x - ex) / ew
        lid_y = ey - _EYE_H * a * 1.1 * np.sqrt(np.maximum(1 - p * p, 0))
        lash = fill(np.abs(y - lid_y) - 0.012 * a - 0.4) * fill((np.abs(p) - 1.08) * ew)
        _over(sk, hair * 0.35, lash * 0.9)
        # Brow: an arch, thick at the inner end, tapering outward.
        bx, by, bl = side * 0.37 * a, _BROW_V * b, 0.25 * a
        q = (x - bx) / bl  # (h, w)
        arch = by - 0.05 * b * (1 - q * q)
        thick = 0.035 * a * (1.2 - 0.25 * (q * side + 1)) * brow_scale
        brow = fill(np.abs(y - arch) - thick) * fill((np.abs(q) - 1) * bl)
        _over(sk, hair * 0.8 * sh, brow * 0.85)
    # Nose: side walls (deeper away from the light), tip highlight, nostrils, shadow beneath.
    win = frame.window(0, 0.08 * b, 0.2 * a, 0.32 * b)
    x, y, sk = frame.fx[win], frame.fy[win], skin[:, win[0], win[1]]
    ridge = (0.06 + 0.06 * clamp((y + 0.14 * b) / (0.44 * b), 0, 1)) * a  # (h, w)
    for side in (-1, 1):
        depth = 0.10 + 0.08 * clamp(-side * float(light[0]) * 2, 0, 1)
        wall = bump(np.abs(x - side * ridge), y, 0, 0.06 * b, 0.06 * a, 0.3 * b)
        sk *= (1 - depth * wall)[None]
        _over(sk, sk * 0.45, ellipse(x, y, side * 0.075 * a, 0.255 * b, 0.045 * a, 0.02 * b) * 0.9)
    tip = 0.07 * bump(x, y, 0, 0.17 * b, 0.1 * a, 0.08 * b) - 0.12 * bump(
        x, y, 0, 0.3 * b, 0.18 * a, 0.02 * b
    )
    sk *= (1 + tip)[None]
    # Mouth: two lips with a cupid's bow and a dark line between them, corners slightly up.
    my, mw = rng.uniform(0.47, 0.53) * b, rng.uniform(0.22, 0.3) * a
    win = frame.window(0, my, mw + 2, 0.12 * b)
    x, y, sk, sh = frame.fx[win], frame.fy[win], skin[:, win[0], win[1]], shade[win][None]
    q = np.maximum(1 - (x / mw) ** 2, 0)  # (h, w)
    line = my - rng.uniform(-0.01, 0.03) * b * (x / mw) ** 2
    upper = line - 0.055 * b * np.sqrt(q) * (1 - 0.25 * bump(x, 0, 0, 0, 0.35 * mw, 1))
    lower = line + 0.075 * b * np.sqrt(q)
    lips = fill(np.maximum(np.maximum(upper - y, y - lower), np.abs(x) - mw))
    shine = 1 + 0.12 * bump(x, y, 0, my + 0.04 * b, 0.6 * mw, 0.03 * b)
    _over(sk, lip * sh * shine[None], lips)
    _over(sk, lip * sh * 0.3, fill(np.abs(y - line) - 0.006 * b) * fill(np.abs(x) - mw * 1.02))


def _regions(
    frame: _Frame, a: float, b: float, hair_top: float, hair_curve: float, visible: np.ndarray
) -> np.ndarray:
    """The seven FaceRegion masks (R, H, W), each drawn in a window, kept disjoint by subtraction."""
    out = np.zeros((len(FaceRegion), *visible.shape), dtype=np.float32)  # (R, H, W)

    def nose(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        widen = clamp((y / b + 0.16) / 0.46, 0, 1)
        return fill(np.abs(x) - (0.07 + 0.08 * widen) * a) * fill(np.abs(y - 0.07 * b) - 0.23 * b)

    win = frame.window(0, -0.59 * b, 0.82 * a, 0.2 * b)
    x, y = frame.fx[win], frame.fy[win]
    hairline = (hair_top + 0.04 + hair_curve * (x / a) ** 2) * b
    forehead = fill(hairline - y) * fill(y - (_BROW_V - 0.11) * b) * fill(np.abs(x) - 0.8 * a)
    out[REGION_INDEX[FaceRegion.FOREHEAD]][win] = forehead
    for eye_region, cheek_region, side in (
        (FaceRegion.UNDER_LEFT_EYE, FaceRegion.LEFT_CHEEK, 1),
        (FaceRegion.UNDER_RIGHT_EYE, FaceRegion.RIGHT_CHEEK, -1),
    ):
        ex, ey = side * _EYE_U * a, _EYE_V * b
        win = frame.window(ex + side * 0.08 * a, ey + 0.03 * b, 0.31 * a, 0.14 * b)
        x, y = frame.fx[win], frame.fy[win]
        below = ellipse(x, y, ex + side * 0.04 * a, ey + 0.05 * b, 0.26 * a, 0.11 * b) * fill(ey - y)
        beside = ellipse(x, y, ex + side * 0.27 * a, ey, 0.1 * a, 0.1 * b)
        eye_zone = out[REGION_INDEX[eye_region]]  # (H, W) view
        eye_zone[win] = np.maximum(below, beside) * (1 - nose(x, y))
        win = frame.window(side * 0.52 * a, 0.29 * b, 0.3 * a, 0.23 * b)
        x, y = frame.fx[win], frame.fy[win]
        oval = ellipse(x, y, side * 0.52 * a, 0.29 * b, 0.29 * a, 0.22 * b)
        mouth_zone = ellipse(x, y, 0, 0.5 * b, 0.45 * a, 0.16 * b)
        out[REGION_INDEX[cheek_region]][win] = (
            oval * (1 - eye_zone[win]) * (1 - nose(x, y)) * (1 - mouth_zone)
        )
    win = frame.window(0, 0.07 * b, 0.16 * a, 0.24 * b)
    out[REGION_INDEX[FaceRegion.NOSE]][win] = nose(frame.fx[win], frame.fy[win])
    win = frame.window(0, 0.8 * b, 0.31 * a, 0.15 * b)
    x, y = frame.fx[win], frame.fy[win]
    out[REGION_INDEX[FaceRegion.CHIN]][win] = ellipse(x, y, 0, 0.8 * b, 0.3 * a, 0.14 * b) * fill(
        0.66 * b - y
    )
    out *= visible[None]
    return out
