"""Real clean face photos with hand-drawn region polygons, as bases for the synthetic blemish benchmark.

A procedural face (`langbrt.training.data.procedural_face`) knows its regions because it was drawn from
them; a photo does not, so its regions come from a JSON file of polygons, rasterised at the size a sample
needs. The result is the same `FaceBase` a procedural face gives, so blemishes render on either alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from langbrt.errors import LangBRTInputError
from langbrt.io import read_image
from langbrt.json_dataclass import parse_json
from langbrt.training.data.blemish_types import REGION_INDEX, FaceRegion
from langbrt.training.data.face_base import EyeFrame, FaceBase
from langbrt.training.data.paired import fit_square


class RealFaceBase:
    """A real clean face photo with hand-drawn region polygons, usable as a base for synthetic blemishes.

    The regions file is JSON, polygons in pixel coordinates of the (EXIF-upright) image::

        {"image": "astronaut.png", "regions": {"forehead": [[x, y], ...], "left_cheek": [...], ...}}

    Region names are `FaceRegion` values; left/right are the person's (their left cheek is on the image's
    right). Regions may be left out; blemishes only go where a region is drawn. The image is centre-cropped
    to a square and resized, the polygons with it.
    """

    def __init__(self, image: torch.Tensor, polygons: dict[FaceRegion, list[tuple[float, float]]], name: str):
        self.image = image  # (3, H, W) float32 in [0, 1]
        self.polygons = polygons
        self.name = name
        self._cache: dict[int, FaceBase] = {}

    @classmethod
    def from_files(cls, image_path: str | Path, regions_path: str | Path) -> RealFaceBase:
        """Load a photo and its regions file; any problem is a `LangBRTInputError` naming the file."""
        return cls(read_image(image_path), _read_polygons(Path(regions_path)), Path(image_path).name)

    @classmethod
    def from_regions_file(cls, regions_path: str | Path) -> RealFaceBase:
        """Load the regions file and the image its "image" entry names (relative to the file's folder)."""
        path = Path(regions_path)
        image = _read_json(path).get("image")
        if not isinstance(image, str):
            raise LangBRTInputError(
                f'{path}: no "image" entry naming the photo; use from_files(image, regions)'
            )
        image_path = path.parent / image
        if not image_path.exists():  # named here: "face.png: no such file" said neither this file nor the folder
            raise LangBRTInputError(f'{path}: its "image" entry {image!r} names no file ({image_path} does not exist; '
                                    "the entry is relative to the regions file's folder)")
        return cls.from_files(image_path, path)

    def face_base(self, image_size: int) -> FaceBase:
        """The photo at `image_size` with rasterised region masks (cached per size)."""
        if image_size not in self._cache:
            self._cache[image_size] = self._build(image_size)
        return self._cache[image_size]

    def _build(self, size: int) -> FaceBase:
        _, h, w = self.image.shape
        side = min(h, w)
        top, left, scale = (h - side) // 2, (w - side) // 2, size / side
        image = fit_square(self.image, size).numpy().astype(np.float32)  # (3, S, S)
        regions = np.zeros((len(FaceRegion), size, size), dtype=np.float32)  # (R, S, S)
        for i, region in enumerate(FaceRegion):
            if region in self.polygons:
                points = [((x - left) * scale, (y - top) * scale) for x, y in self.polygons[region]]
                regions[i] = _rasterise(points, size)
        union = regions.max(axis=0)  # (S, S)
        eyes = {r: e for r in (FaceRegion.UNDER_LEFT_EYE, FaceRegion.UNDER_RIGHT_EYE)
                if (e := _eye_from_region(regions[REGION_INDEX[r]], r)) is not None}  # fmt: skip
        angle = 0.0
        if len(eyes) == 2:
            left_eye, right_eye = eyes[FaceRegion.UNDER_LEFT_EYE], eyes[FaceRegion.UNDER_RIGHT_EYE]
            angle = float(np.arctan2(left_eye.y - right_eye.y, left_eye.x - right_eye.x))
        cols = np.flatnonzero(union.max(axis=0) > 0.5)
        face_width = 0.55 * (cols[-1] - cols[0] + 1) if cols.size else 0.25 * size
        return FaceBase(image, regions, union, eyes, angle, float(face_width))


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise LangBRTInputError(f"{path}: no such regions file") from err
    except (OSError, UnicodeDecodeError) as err:
        raise LangBRTInputError(f"{path}: not a readable JSON regions file ({err})") from err
    data = parse_json(text, f"{path}: not a readable JSON regions file", LangBRTInputError)
    if not isinstance(data, dict):
        raise LangBRTInputError(f'{path}: expected a JSON object with a "regions" entry')
    return data


def _read_polygons(path: Path) -> dict[FaceRegion, list[tuple[float, float]]]:
    regions = _read_json(path).get("regions")
    names = ", ".join(r.value for r in FaceRegion)
    if not isinstance(regions, dict) or not regions:
        raise LangBRTInputError(f'{path}: "regions" must map region names ({names}) to polygons')
    polygons = {}
    for key, points in regions.items():
        if key not in {r.value for r in FaceRegion}:
            raise LangBRTInputError(f"{path}: unknown region {key!r}; expected one of {names}")
        try:
            polygon = [(float(x), float(y)) for x, y in points]
        except (TypeError, ValueError) as err:
            raise LangBRTInputError(
                f"{path}: region {key!r} must be a list of [x, y] points ({err})"
            ) from err
        if len(polygon) < 3 or not np.isfinite(polygon).all():
            raise LangBRTInputError(f"{path}: region {key!r} needs at least 3 finite [x, y] points")
        polygons[FaceRegion(key)] = polygon
    return polygons


def _rasterise(points: list[tuple[float, float]], size: int, supersample: int = 4) -> np.ndarray:
    """A soft (anti-aliased) polygon mask (size, size) in [0, 1], drawn at 4x and box-downsampled."""
    big = Image.new("L", (size * supersample, size * supersample), 0)
    ImageDraw.Draw(big).polygon([(x * supersample, y * supersample) for x, y in points], fill=255)
    pixels = np.asarray(big, dtype=np.float32).reshape(size, supersample, size, supersample)
    return pixels.mean(axis=(1, 3)) / 255.0


def _eye_from_region(mask: np.ndarray, region: FaceRegion) -> EyeFrame | None:
    """Estimate the eye above an under-eye polygon: it sits on the polygon's top edge, its width inside."""
    rows, cols = np.flatnonzero(mask.max(axis=1) > 0.5), np.flatnonzero(mask.max(axis=0) > 0.5)
    if rows.size == 0:
        return None
    outward = 1.0 if region == FaceRegion.UNDER_LEFT_EYE else -1.0  # person's left eye: outer corner right
    span = float(cols[-1] - cols[0] + 1)
    x = (cols[0] + cols[-1] + 1) / 2 - outward * 0.1 * span
    return EyeFrame(float(x), float(rows[0]), 0.4 * span, 0.14 * span, outward)
