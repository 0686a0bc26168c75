"""`FaceBase`: a clean face and what blemish rendering needs to know about it, whatever drew the face.

Both face sources produce one: the procedural renderer (`procedural_face`), which knows its regions because it
drew them, and real photos with hand-drawn polygons (`real_face`). Blemish rendering (`blemish_render`) reads
only this, so blemishes land on either alike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from langbrt.training.data.blemish_types import MIRRORED_REGION, REGION_INDEX, FaceRegion


@dataclass(frozen=True)
class EyeFrame:
    """An eye, for blemishes placed relative to it: dark circles below it, crow's feet at its outer corner."""

    x: float  # centre, pixels
    y: float
    half_width: float  # pixels, centre to corner
    half_height: float  # pixels, centre to lower lid
    outward: float  # +1: the outer corner lies toward the image's right (the person's left eye), else -1

    def flipped(self, width: int) -> EyeFrame:
        return EyeFrame(width - self.x, self.y, self.half_width, self.half_height, -self.outward)


@dataclass(frozen=True)
class FaceBase:
    """A clean face and what blemish rendering needs to know about it.

    `region_masks` are soft (anti-aliased) and disjoint; a region whose mask is (nearly) empty, e.g. a
    forehead hidden by hair in a real photo, simply gets no blemishes.
    """

    image: np.ndarray  # (3, H, W) float32 in [0, 1]
    region_masks: np.ndarray  # (R, H, W) float32 in [0, 1], FaceRegion order
    skin_mask: np.ndarray  # (H, W) float32, visible face skin (for statistics)
    eyes: dict[FaceRegion, EyeFrame]  # keyed by UNDER_LEFT_EYE / UNDER_RIGHT_EYE
    angle: float  # in-plane tilt, radians; wrinkles follow the face's axes
    face_width: float  # face half-width in pixels; sets the scale of blemishes

    def region(self, region: FaceRegion) -> np.ndarray:
        return self.region_masks[REGION_INDEX[region]]  # (H, W)

    def flipped(self) -> FaceBase:
        """The mirror image: pixels flip, and the person's left and right regions swap."""
        order = [REGION_INDEX[MIRRORED_REGION[r]] for r in FaceRegion]
        width = self.image.shape[-1]
        return replace(
            self,
            image=np.ascontiguousarray(self.image[:, :, ::-1]),
            region_masks=np.ascontiguousarray(self.region_masks[order][:, :, ::-1]),
            skin_mask=np.ascontiguousarray(self.skin_mask[:, ::-1]),
            eyes={MIRRORED_REGION[r]: e.flipped(width) for r, e in self.eyes.items()},
            angle=-self.angle,
        )
