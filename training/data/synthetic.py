"""The synthetic blemish benchmark: faces with known blemishes, prompts, and exact partial-removal targets.

No download and no annotation: each sample is a clean face (procedural, or a real clean photo with
hand-drawn region polygons), blemishes drawn on top as separate layers with exact masks, and 1..K prompts
that name some of them. The target is the clean face with exactly the blemishes the prompts did NOT name
still on it, so "remove only the acne on the right cheek" has a ground truth, and so does a prompt naming
a blemish the face does not have (an empty mask: the model must leave the image alone).

Sample i is a pure function of (seed, split, i) and the dataset's settings (image size, max_prompts,
bases): its generator is `np.random.default_rng([seed, split_id, i])`, so any number of DataLoader workers
gives the same data, and the test split draws from streams the training split never touches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from PIL import Image, ImageDraw

from langbrt.errors import LangBRTInputError
from langbrt.io import read_image
from langbrt.json_dataclass import parse_json
from langbrt.training.data.blemish_render import Blemish, composite, render_blemish
from langbrt.training.data.blemish_types import (
    ALLOWED_REGIONS,
    MIRRORED_REGION,
    PREDEFINED_PROMPTS,
    PREDEFINED_REGIONS,
    PREDEFINED_SPECS,
    REGION_INDEX,
    TYPE_INDEX,
    BlemishType,
    FaceRegion,
    PromptSpec,
    mirror_prompt,
    prompt_for,
    valid_specs,
)
from langbrt.training.data.paired import fit_square
from langbrt.training.data.procedural_face import EyeFrame, FaceBase, render_procedural_face

SPLITS = {"train": 0, "test": 1}
PREDEFINED_PROB = 0.45
"""Chance that a prompt slot uses a pre-defined prompt's exact text when one applies (~30% of prompts)."""
ABSENT_PROB = 0.2
"""Chance that a prompt slot after the first names a blemish the face lacks (~10% of all prompts)."""
_TYPE_WEIGHTS = {BlemishType.ACNE: 1.4, BlemishType.DARK_CIRCLES: 1.3, BlemishType.FOREHEAD_WRINKLES: 1.2}
_MIN_REGION_PIXELS = 4


class SyntheticSample(TypedDict):
    """One training/evaluation sample; images (3, S, S) float32 in [0, 1], masks float32 in [0, 1]."""

    source: torch.Tensor  # (3, S, S) every blemish present
    target: torch.Tensor  # (3, S, S) the blemishes the prompts name removed, the others kept
    clean: torch.Tensor  # (3, S, S) every blemish removed
    prompts: list[str]  # 1..max_prompts prompts
    prompt_specs: list[PromptSpec]  # what each prompt names
    prompt_masks: torch.Tensor  # (K, S, S) union of the blemishes prompt k names (zeros if none present)
    removed_mask: torch.Tensor  # (1, S, S) union of the named blemishes
    kept_mask: torch.Tensor  # (1, S, S) union of the blemishes no prompt names
    region_masks: torch.Tensor  # (R, S, S) FaceRegion order
    type_masks: torch.Tensor  # (T, S, S) union per BlemishType, for per-type IoU
    predefined_region_masks: torch.Tensor  # (P, S, S) the regions of each pre-defined prompt (eq. 6)
    name: str


@dataclass(frozen=True)
class BlemishScene:
    """A sample before it becomes tensors: the face, its blemishes in compositing order, the prompts."""

    base: FaceBase
    blemishes: tuple[Blemish, ...]
    prompts: tuple[str, ...]
    specs: tuple[PromptSpec, ...]

    def named(self) -> np.ndarray:
        """(K, N) bool: whether prompt k names blemish n."""
        return np.array([[s.names(b.kind, b.region) for b in self.blemishes] for s in self.specs], dtype=bool)

    def render(self, keep: Sequence[bool]) -> np.ndarray:
        """The face (3, H, W) with only the blemishes where `keep` is True, in the fixed compositing order."""
        return composite(self.base.image, [b for b, k in zip(self.blemishes, keep, strict=True) if k])

    def flipped(self) -> BlemishScene:
        """The mirrored scene: pixels flip; left and right swap in regions and in the prompt text."""
        return BlemishScene(
            self.base.flipped(),
            tuple(b.flipped() for b in self.blemishes),
            tuple(mirror_prompt(p) for p in self.prompts),
            tuple(s.mirrored() for s in self.specs),
        )


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
        return cls.from_files(path.parent / image, path)

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


def make_scene(
    rng: np.random.Generator,
    image_size: int,
    max_prompts: int = 3,
    bases: Sequence[RealFaceBase] = (),
    real_fraction: float = 0.0,
) -> BlemishScene:
    """Draw one scene: a clean face, at least one blemish, and 1..max_prompts prompts about it."""
    use_real = rng.random() < real_fraction and len(bases) > 0
    if use_real:
        base = bases[int(rng.integers(len(bases)))].face_base(image_size)
        base = base.flipped() if rng.random() < 0.5 else base
    else:
        base = render_procedural_face(rng, image_size)
    usable = [r for r in FaceRegion if (base.region(r) > 0.5).sum() >= _MIN_REGION_PIXELS]
    for _ in range(20):
        plan = _plan_blemishes(rng, usable)
        blemishes = tuple(b for b in (render_blemish(k, r, base, rng) for k, r in plan) if b is not None)
        if blemishes:
            break
    else:
        raise LangBRTInputError(
            f"no blemish fits on this face base (usable regions: {usable}); check its regions"
        )
    specs, prompts = _choose_prompts(rng, blemishes, usable, max_prompts)
    return BlemishScene(base, blemishes, prompts, specs)


def _plan_blemishes(
    rng: np.random.Generator, usable: list[FaceRegion]
) -> list[tuple[BlemishType, FaceRegion]]:
    """Which (type, region) blemishes to draw, sorted into the fixed compositing order."""
    kinds = [k for k in BlemishType if set(ALLOWED_REGIONS[k]) & set(usable)]
    if not kinds:
        raise LangBRTInputError("the face base has no region any blemish type can use; draw more regions")
    weights = np.array([_TYPE_WEIGHTS.get(k, 1.0) for k in kinds])
    n_types = min(int(rng.choice([1, 2, 3, 4], p=[0.25, 0.35, 0.28, 0.12])), len(kinds))
    plan = []
    for i in rng.choice(len(kinds), size=n_types, replace=False, p=weights / weights.sum()):
        kind = kinds[i]
        regions = [r for r in ALLOWED_REGIONS[kind] if r in usable]
        n = 1 + int(rng.binomial(len(regions) - 1, 0.7 if len(regions) == 2 else 0.3))
        prefer = np.array(
            [2.0 if r in (FaceRegion.LEFT_CHEEK, FaceRegion.RIGHT_CHEEK) else 1.0 for r in regions]
        )
        chosen = rng.choice(len(regions), size=n, replace=False, p=prefer / prefer.sum())
        plan += [(kind, regions[j]) for j in chosen]
    return sorted(plan, key=lambda kr: (TYPE_INDEX[kr[0]], REGION_INDEX[kr[1]]))


def _choose_prompts(
    rng: np.random.Generator, blemishes: Sequence[Blemish], usable: list[FaceRegion], max_prompts: int
) -> tuple[tuple[PromptSpec, ...], tuple[str, ...]]:
    """1..max_prompts distinct prompts; the first always names a present blemish."""
    present = [(b.kind, b.region) for b in blemishes]
    names_any = {s: any(s.names(k, r) for k, r in present) for s in valid_specs()}
    present_pool = [s for s, hit in names_any.items() if hit]
    absent_pool = [s for s, hit in names_any.items() if not hit and s.regions & set(usable)]
    specs: list[PromptSpec] = []
    texts: list[str] = []
    for slot in range(int(rng.integers(1, max_prompts + 1))):
        pool = absent_pool if slot > 0 and rng.random() < ABSENT_PROB else present_pool
        pool = [s for s in pool if s not in specs]
        if not pool:
            continue
        predefined = [i for i, s in enumerate(PREDEFINED_SPECS) if s in pool]
        if predefined and rng.random() < PREDEFINED_PROB:
            i = predefined[int(rng.integers(len(predefined)))]
            spec, text = PREDEFINED_SPECS[i], PREDEFINED_PROMPTS[i]
        else:
            spec = pool[int(rng.integers(len(pool)))]
            text = prompt_for(spec.kind, spec.where, rng)
        specs.append(spec)
        texts.append(text)
    return tuple(specs), tuple(texts)


def scene_to_sample(scene: BlemishScene, name: str = "") -> SyntheticSample:
    """Render a scene's source, target and clean images and all its masks as tensors."""
    base, blemishes = scene.base, scene.blemishes
    named = scene.named()  # (K, N)
    removed = named.any(axis=0)  # (N,)
    masks = np.stack([b.mask for b in blemishes])  # (N, H, W)
    zeros = np.zeros(masks.shape[1:], dtype=np.float32)  # (H, W)

    def union(select: np.ndarray) -> np.ndarray:
        return masks[select].max(axis=0) if select.any() else zeros  # (H, W)

    kinds = np.array([TYPE_INDEX[b.kind] for b in blemishes])  # (N,)
    region_index = [[REGION_INDEX[r] for r in group] for group in PREDEFINED_REGIONS]
    arrays = {
        "source": scene.render([True] * len(blemishes)),
        "target": scene.render(~removed),
        "clean": base.image.copy(),  # real bases are cached: samples must not alias them
        "prompt_masks": np.stack([union(row) for row in named]),
        "removed_mask": union(removed)[None],
        "kept_mask": union(~removed)[None],
        "region_masks": base.region_masks.copy(),
        "type_masks": np.stack([union(kinds == t) for t in range(len(BlemishType))]),
        "predefined_region_masks": np.stack([base.region_masks[idx].max(axis=0) for idx in region_index]),
    }
    sample = {
        key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)) for key, value in arrays.items()
    }
    return SyntheticSample(**sample, prompts=list(scene.prompts), prompt_specs=list(scene.specs), name=name)


_REGION_MIRROR = [REGION_INDEX[MIRRORED_REGION[r]] for r in FaceRegion]
_SPATIAL = ("source", "target", "clean", "prompt_masks", "removed_mask", "kept_mask", "type_masks",
            "predefined_region_masks")  # fmt: skip


def flip_sample(sample: SyntheticSample) -> SyntheticSample:
    """Mirror a sample: every image and mask flips left-right, and left/right swap in regions and prompts.

    The pre-defined prompts' regions are symmetric (both eyes, both cheeks, the forehead), so their masks
    only flip. Flipping twice gives the sample back exactly.
    """
    flipped = dict(sample)
    for key in _SPATIAL:
        flipped[key] = sample[key].flip(-1)
    mirror = torch.tensor(_REGION_MIRROR)  # index_select: indexing with a Python list is ~50x slower
    flipped["region_masks"] = sample["region_masks"].index_select(0, mirror).flip(-1)
    flipped["prompts"] = [mirror_prompt(p) for p in sample["prompts"]]
    flipped["prompt_specs"] = [s.mirrored() for s in sample["prompt_specs"]]
    return SyntheticSample(**flipped)


@dataclass
class SyntheticBlemishDataset(torch.utils.data.Dataset):
    """`length` synthetic samples (see `SyntheticSample`), reproducible from (seed, split, index).

    ``flip`` mirrors half of the training samples (never test samples, whose prompts are fixed for
    evaluation). ``bases`` are real clean faces (`RealFaceBase`); a fraction ``real_fraction`` of samples
    uses one of them instead of a procedural face.
    """

    length: int
    image_size: int = 64
    seed: int = 0
    split: str = "train"
    max_prompts: int = 3
    flip: bool = True
    bases: Sequence[RealFaceBase] = field(default_factory=tuple)
    real_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.length, int) or self.length < 1:
            raise LangBRTInputError(f"length must be a positive integer, got {self.length!r}")
        if not isinstance(self.image_size, int) or self.image_size < 32:
            raise LangBRTInputError(f"image_size must be an integer >= 32, got {self.image_size!r}")
        if self.split not in SPLITS:
            raise LangBRTInputError(f"split must be one of {sorted(SPLITS)}, got {self.split!r}")
        if not isinstance(self.max_prompts, int) or self.max_prompts < 1:
            raise LangBRTInputError(f"max_prompts must be a positive integer, got {self.max_prompts!r}")
        if not 0.0 <= self.real_fraction <= 1.0:
            raise LangBRTInputError(f"real_fraction must be in [0, 1], got {self.real_fraction!r}")
        if self.real_fraction > 0 and not self.bases:
            raise LangBRTInputError("real_fraction > 0 needs real faces: pass bases=[RealFaceBase, ...]")
        self.bases = tuple(self.bases)

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        """The generator sample `index` is drawn from."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        return np.random.default_rng([self.seed, SPLITS[self.split], index])

    def scene(self, index: int) -> tuple[BlemishScene, bool]:
        """Sample `index` as a scene, and whether `__getitem__` mirrors it."""
        rng = self.rng(index)
        mirror = bool(rng.random() < 0.5) and self.flip and self.split == "train"
        scene = make_scene(rng, self.image_size, self.max_prompts, self.bases, self.real_fraction)
        return scene, mirror

    def __getitem__(self, index: int) -> SyntheticSample:
        scene, mirror = self.scene(index)
        # Mirroring the numpy scene equals flip_sample() on the tensors (tested) and is much cheaper.
        return scene_to_sample(scene.flipped() if mirror else scene, name=f"synthetic-{self.split}-{index}")


def collate_synthetic(batch: Sequence[SyntheticSample]) -> dict[str, object]:
    """DataLoader ``collate_fn``: stacks tensors, keeps prompts as list[list[str]], pads prompt masks.

    ``prompt_masks`` becomes (B, K, S, S) with K the most prompts in the batch, zero-padded, and
    ``prompt_valid`` (B, K) bool says which entries are real prompts.
    """
    k = max(len(s["prompts"]) for s in batch)
    size = batch[0]["source"].shape[-1]
    prompt_masks = torch.zeros(len(batch), k, size, size)  # (B, K, S, S)
    prompt_valid = torch.zeros(len(batch), k, dtype=torch.bool)  # (B, K)
    for i, sample in enumerate(batch):
        n = len(sample["prompts"])
        prompt_masks[i, :n] = sample["prompt_masks"]
        prompt_valid[i, :n] = True
    keys = [key for key in (*_SPATIAL, "region_masks") if key != "prompt_masks"]
    stacked = {key: torch.stack([s[key] for s in batch]) for key in keys}
    stacked["prompt_masks"] = prompt_masks
    return {
        **stacked,
        "prompt_valid": prompt_valid,
        "prompts": [s["prompts"] for s in batch],
        "prompt_specs": [s["prompt_specs"] for s in batch],
        "name": [s["name"] for s in batch],
    }
