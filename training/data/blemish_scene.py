"""Drawing one synthetic scene: a clean face, the blemishes on it, and the prompts that name some of them.

A scene is the sample before it becomes tensors (`langbrt.training.data.synthetic.scene_to_sample`): all the
randomness of the benchmark is spent here, from one generator, so a sample is a pure function of that
generator's seed. The probabilities below set the mix of prompts the model trains on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from langbrt.errors import LangBRTInputError
from langbrt.training.data.blemish_render import Blemish, composite, render_blemish
from langbrt.training.data.blemish_types import (
    ALLOWED_REGIONS,
    PREDEFINED_PROMPTS,
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
from langbrt.training.data.face_base import FaceBase
from langbrt.training.data.procedural_face import render_procedural_face
from langbrt.training.data.real_face import RealFaceBase

PREDEFINED_PROB = 0.45
"""Chance that a prompt slot uses a pre-defined prompt's exact text when one applies (~30% of prompts)."""
ABSENT_PROB = 0.2
"""Chance that a prompt slot after the first names a blemish the face lacks (~10% of all prompts)."""
_TYPE_WEIGHTS = {BlemishType.ACNE: 1.4, BlemishType.DARK_CIRCLES: 1.3, BlemishType.FOREHEAD_WRINKLES: 1.2}
_MIN_REGION_PIXELS = 4


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
