"""The synthetic blemish benchmark: faces with known blemishes, prompts, and exact partial-removal targets.

No download and no annotation: each sample is a clean face (procedural, or a real clean photo with
hand-drawn region polygons), blemishes drawn on top as separate layers with exact masks, and 1..K prompts
that name some of them. The target is the clean face with exactly the blemishes the prompts did NOT name
still on it, so "remove only the acne on the right cheek" has a ground truth, and so does a prompt naming
a blemish the face does not have (an empty mask: the model must leave the image alone).

Sample i is a pure function of (seed, split, i) and the dataset's settings (image size, max_prompts,
bases): its generator is `np.random.default_rng([seed, split_id, i])`, so any number of DataLoader workers
gives the same data, and the test split draws from streams the training split never touches.

Scenes are drawn in `langbrt.training.data.blemish_scene` and real faces load in
`langbrt.training.data.real_face`; this module turns scenes into tensors and serves them as a dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
import torch

from langbrt.errors import LangBRTInputError
from langbrt.training.data.blemish_scene import BlemishScene, make_scene
from langbrt.training.data.blemish_types import (
    MIRRORED_REGION,
    PREDEFINED_REGIONS,
    REGION_INDEX,
    TYPE_INDEX,
    BlemishType,
    FaceRegion,
    PromptSpec,
    mirror_prompt,
)
from langbrt.training.data.real_face import RealFaceBase

SPLITS = {"train": 0, "test": 1}


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
