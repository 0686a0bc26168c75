"""Anti-aliased shapes and value noise on pixel grids: the drawing primitives of faces and blemishes.

Shapes return soft coverage in [0, 1] (about one pixel of edge), so masks drawn with them are exact at any
size; `bump` has compact support, so a feature drawn in a window around it leaves the rest of the frame at 0.
"""

from __future__ import annotations

import numpy as np


def smooth_noise(rng: np.random.Generator, size: int, cells_y: int, cells_x: int | None = None) -> np.ndarray:
    """Value noise, roughly N(0, 1), with about `cells` features per side: (size, size) float32.

    A coarse random grid upsampled with smoothstep interpolation; vectorised, so cheap at 512x512.
    """
    cells_x = cells_y if cells_x is None else cells_x
    grid = rng.standard_normal((cells_y + 1, cells_x + 1)).astype(np.float32)  # (cy+1, cx+1)

    def axis(cells: int) -> tuple[np.ndarray, np.ndarray]:
        t = (np.arange(size, dtype=np.float32) + 0.5) * (cells / size)  # (size,)
        i = np.minimum(t.astype(np.int64), cells - 1)
        f = t - i.astype(np.float32)
        return i, f * f * (3 - 2 * f)

    iy, fy = axis(cells_y)
    ix, fx = axis(cells_x)
    rows = grid[iy] * (1 - fy)[:, None] + grid[iy + 1] * fy[:, None]  # (size, cx+1)
    return rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx  # (size, size)


def clamp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """`np.clip` without its Python-level dispatch, which dominates on the small arrays of a 64 px face."""
    return np.minimum(np.maximum(x, lo), hi)


def fill(signed_distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance in pixels (negative inside)."""
    return clamp(0.5 - signed_distance, 0.0, 1.0)


def ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Anti-aliased coverage of an ellipse; coordinates and radii in pixels."""
    dx, dy = (x - cx) / rx, (y - cy) / ry
    k = np.sqrt(dx * dx + dy * dy) + 1e-6
    grad = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2) / k + 1e-6  # |d k / d pixel|
    return fill((k - 1) / grad)


def bump(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """A smooth bump, 1 at the centre and exactly 0 outside the ellipse: (1 - r^2)^2 (compact support)."""
    r2 = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
    q = np.maximum(1 - r2, 0)
    return q * q
