"""Blemish types, face regions and the prompts that name them.

A prompt is a blemish type plus a place: one region ("acne on the right cheek"), a group of regions
("acne on the cheeks", "dark circles under the eyes") or everywhere the type can occur ("acne"). Each
prompt resolves to a `PromptSpec`, and a spec names an exact set of (type, region) blemishes, which is
what makes partial-removal targets exact in the synthetic benchmark.

LEFT and RIGHT are always the PERSON's left and right, as a retoucher says them: the person's left cheek
appears on the image's RIGHT side (the camera faces the person). A horizontal flip therefore swaps
left<->right in regions and in prompt text.

Prompt texts come from templates. `canonical_prompts()` is the deterministic list with one text per spec
(a prompt bank / user-prompt set U); `prompt_for()` draws a paraphrase; `parse_prompt()` maps any text
the templates can produce back to its spec.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import Enum

import numpy as np

from langbrt.config import PAPER_PREDEFINED_PROMPTS
from langbrt.errors import LangBRTInputError
from langbrt.text.prompts import normalize_prompt


class BlemishType(str, Enum):
    """What the blemish is; the order is the channel order of `type_masks` and the compositing order."""

    ACNE = "acne"
    DARK_CIRCLES = "dark_circles"
    FOREHEAD_WRINKLES = "forehead_wrinkles"
    EYE_WRINKLES = "eye_wrinkles"  # crow's feet at the outer corners of the eyes
    FRECKLES = "freckles"  # freckles and small brown spots
    REDNESS = "redness"
    SHINE = "shine"  # oily specular shine


class FaceRegion(str, Enum):
    """Where on the face; the order is the channel order of `region_masks`. LEFT/RIGHT are the person's.

    UNDER_*_EYE is the periocular skin below the eye AND beside its outer corner, so that both dark circles
    (below) and crow's feet (beside) live in it.
    """

    FOREHEAD = "forehead"
    LEFT_CHEEK = "left_cheek"
    RIGHT_CHEEK = "right_cheek"
    UNDER_LEFT_EYE = "under_left_eye"
    UNDER_RIGHT_EYE = "under_right_eye"
    NOSE = "nose"
    CHIN = "chin"


class RegionGroup(str, Enum):
    """Places a prompt can name that cover several regions."""

    CHEEKS = "cheeks"
    UNDER_EYES = "under_eyes"
    EVERYWHERE = "everywhere"


Where = FaceRegion | RegionGroup

GROUP_REGIONS: dict[RegionGroup, tuple[FaceRegion, ...]] = {
    RegionGroup.CHEEKS: (FaceRegion.LEFT_CHEEK, FaceRegion.RIGHT_CHEEK),
    RegionGroup.UNDER_EYES: (FaceRegion.UNDER_LEFT_EYE, FaceRegion.UNDER_RIGHT_EYE),
    RegionGroup.EVERYWHERE: tuple(FaceRegion),
}

_R = FaceRegion
ALLOWED_REGIONS: dict[BlemishType, tuple[FaceRegion, ...]] = {
    BlemishType.ACNE: (_R.FOREHEAD, _R.LEFT_CHEEK, _R.RIGHT_CHEEK, _R.NOSE, _R.CHIN),
    BlemishType.DARK_CIRCLES: (_R.UNDER_LEFT_EYE, _R.UNDER_RIGHT_EYE),
    BlemishType.FOREHEAD_WRINKLES: (_R.FOREHEAD,),
    BlemishType.EYE_WRINKLES: (_R.UNDER_LEFT_EYE, _R.UNDER_RIGHT_EYE),
    BlemishType.FRECKLES: (_R.LEFT_CHEEK, _R.RIGHT_CHEEK, _R.NOSE),
    BlemishType.REDNESS: (_R.LEFT_CHEEK, _R.RIGHT_CHEEK, _R.NOSE, _R.CHIN),
    BlemishType.SHINE: (_R.FOREHEAD, _R.LEFT_CHEEK, _R.RIGHT_CHEEK, _R.NOSE),
}
"""Which blemish types the benchmark places in which regions (and so which prompts are meaningful)."""

REGION_INDEX: dict[FaceRegion, int] = {r: i for i, r in enumerate(FaceRegion)}
"""Channel of each region in `region_masks` (a dict: `list(Enum).index` is slow in per-sample code)."""
TYPE_INDEX: dict[BlemishType, int] = {k: i for i, k in enumerate(BlemishType)}

MIRRORED_REGION: dict[FaceRegion, FaceRegion] = {r: r for r in FaceRegion} | {
    _R.LEFT_CHEEK: _R.RIGHT_CHEEK,
    _R.RIGHT_CHEEK: _R.LEFT_CHEEK,
    _R.UNDER_LEFT_EYE: _R.UNDER_RIGHT_EYE,
    _R.UNDER_RIGHT_EYE: _R.UNDER_LEFT_EYE,
}


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt names: one blemish type in a place. Build it with `make_spec` (which canonicalises)."""

    kind: BlemishType
    where: Where

    @property
    def regions(self) -> frozenset[FaceRegion]:
        """The regions this prompt names: its place, restricted to where the type occurs."""
        return _named_regions(self.kind, self.where)

    def names(self, kind: BlemishType, region: FaceRegion) -> bool:
        """Whether this prompt asks to remove the blemish of `kind` in `region`."""
        return kind == self.kind and region in self.regions

    def mirrored(self) -> PromptSpec:
        where = MIRRORED_REGION[self.where] if isinstance(self.where, FaceRegion) else self.where
        return PromptSpec(self.kind, where)


@functools.cache
def _named_regions(kind: BlemishType, where: Where) -> frozenset[FaceRegion]:
    places = GROUP_REGIONS[where] if isinstance(where, RegionGroup) else (where,)
    return frozenset(places) & frozenset(ALLOWED_REGIONS[kind])


def make_spec(kind: BlemishType, where: Where) -> PromptSpec:
    """The canonical spec for (kind, where): a place covering all of the type's regions becomes EVERYWHERE.

    Canonical specs make "dark circles" and "dark circles under the eyes" the same prompt, as they name the
    same blemishes. Raises `LangBRTInputError` when the type never occurs there.
    """
    spec = PromptSpec(BlemishType(kind), where)
    if not spec.regions:
        raise LangBRTInputError(f"{spec.kind.value} does not occur on {where.value}; see ALLOWED_REGIONS")
    if spec.regions == frozenset(ALLOWED_REGIONS[spec.kind]):
        return PromptSpec(spec.kind, RegionGroup.EVERYWHERE)
    return spec


PREDEFINED_PROMPTS: tuple[str, ...] = PAPER_PREDEFINED_PROMPTS
"""The model's P=3 pre-defined prompts (paper Sec. 3.2), each with its own mapping layer."""

PREDEFINED_SPECS: tuple[PromptSpec, ...] = (
    PromptSpec(BlemishType.DARK_CIRCLES, RegionGroup.EVERYWHERE),
    PromptSpec(BlemishType.FOREHEAD_WRINKLES, RegionGroup.EVERYWHERE),
    PromptSpec(BlemishType.ACNE, RegionGroup.CHEEKS),
)

PREDEFINED_REGIONS: tuple[tuple[FaceRegion, ...], ...] = (
    (_R.UNDER_LEFT_EYE, _R.UNDER_RIGHT_EYE),
    (_R.FOREHEAD,),
    (_R.LEFT_CHEEK, _R.RIGHT_CHEEK),
)
"""The face regions of each pre-defined prompt (the masks of the component-aware loss, paper eq. 6)."""

# ---- templates -------------------------------------------------------------------------------------------
# A template names the type; {on}/{under}/{beside} become a location phrase, {part} the region's noun.
_PART = {
    _R.FOREHEAD: "forehead", _R.LEFT_CHEEK: "left cheek", _R.RIGHT_CHEEK: "right cheek", _R.NOSE: "nose",
    _R.CHIN: "chin", _R.UNDER_LEFT_EYE: "left eye", _R.UNDER_RIGHT_EYE: "right eye",
    RegionGroup.CHEEKS: "cheeks", RegionGroup.UNDER_EYES: "eyes",
}  # fmt: skip
_LOCATIONS = {
    "on": ("on the {part}", "on my {part}"),
    "under": ("under the {part}", "under my {part}", "below the {part}"),
    "beside": ("beside the {part}", "next to my {part}", "around the {part}"),
}


@dataclass(frozen=True)
class _Phrases:
    placed: tuple[str, ...]  # for one region or a group
    everywhere: tuple[str, ...]  # the first is the canonical text of the EVERYWHERE spec
    descriptive: tuple[str, ...] = ()  # "shiny {part}": describes skin, so takes no "remove the" prefix


_PHRASES = {
    BlemishType.ACNE: _Phrases(
        ("acne {on}", "pimples {on}", "spots of acne {on}", "acne spots {on}", "breakouts {on}", "zits {on}"),
        ("acne", "pimples", "spots of acne", "acne spots", "breakouts", "zits", "acne on my face"),
    ),
    BlemishType.DARK_CIRCLES: _Phrases(
        ("dark circles {under}", "dark shadows {under}", "dark rings {under}", "darkness {under}"),
        (
            "dark circles under the eyes",
            "dark circles",
            "dark circle",
            "under-eye circles",
            "dark under-eye circles",
            "dark circles under my eyes",
            "dark shadows under the eyes",
        ),
    ),  # fmt: skip
    BlemishType.FOREHEAD_WRINKLES: _Phrases(
        (),
        (
            "forehead wrinkles",
            "wrinkles on the forehead",
            "wrinkles on my forehead",
            "forehead lines",
            "lines on my forehead",
            "fine lines on the forehead",
            "creases on the forehead",
            "worry lines",
        ),
    ),  # fmt: skip
    BlemishType.EYE_WRINKLES: _Phrases(
        ("crow's feet {beside}", "wrinkles {beside}", "fine lines {beside}"),
        (
            "crow's feet",
            "eye wrinkles",
            "wrinkles around the eyes",
            "crow's feet around my eyes",
            "fine lines around the eyes",
            "wrinkles at the corners of the eyes",
        ),
    ),  # fmt: skip
    BlemishType.FRECKLES: _Phrases(
        ("freckles {on}", "brown spots {on}", "dark spots {on}", "sun spots {on}", "pigment spots {on}"),
        ("freckles", "brown spots", "dark spots", "sun spots", "pigment spots", "freckles on my face"),
    ),
    BlemishType.REDNESS: _Phrases(
        ("redness {on}", "red patches {on}", "red skin {on}", "blotchy redness {on}", "flushing {on}"),
        ("redness", "red patches", "facial redness", "blotchy red skin", "red skin", "flushed skin"),
        ("red {part}",),
    ),
    BlemishType.SHINE: _Phrases(
        ("oily shine {on}", "shine {on}", "oily skin {on}", "greasy shine {on}"),
        ("oily shine", "shine", "oily skin", "shiny skin", "greasy skin", "skin shine"),
        ("shiny {part}", "oily {part}"),
    ),
}
_LOCATION_KIND = {BlemishType.DARK_CIRCLES: "under", BlemishType.EYE_WRINKLES: "beside"}
_PREFIXES = ("remove the ", "remove ", "get rid of the ", "please remove the ", "reduce the ", "fix the ")
_DESCRIPTIVE_PREFIXES = ("fix the ",)
_NO_PREFIX_PROB = 0.6
_SIDE_WORD = re.compile(r"\b(left|right)\b")


def _bodies(spec: PromptSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(noun-phrase bodies, descriptive bodies) for a canonical spec, deterministic order."""
    phrases = _PHRASES[spec.kind]
    if spec.where == RegionGroup.EVERYWHERE:
        nouns = list(phrases.everywhere)
        # A place covering every allowed region (under the eyes for dark circles) also names EVERYWHERE.
        candidates = (RegionGroup.CHEEKS, RegionGroup.UNDER_EYES, *ALLOWED_REGIONS[spec.kind])
        places: list[Where] = [w for w in candidates if _covers_all(spec.kind, w)]
    else:
        nouns, places = [], [spec.where]
    location_kind = _LOCATION_KIND.get(spec.kind, "on")
    for place in places:
        for template in phrases.placed:
            for location in _LOCATIONS[location_kind]:
                nouns.append(template.format(**{location_kind: location.format(part=_PART[place])}))
    descriptive = [t.format(part=_PART[p]) for p in places for t in phrases.descriptive]
    return tuple(dict.fromkeys(nouns)), tuple(dict.fromkeys(descriptive))


def _covers_all(kind: BlemishType, where: Where) -> bool:
    regions = GROUP_REGIONS[where] if isinstance(where, RegionGroup) else (where,)
    return frozenset(regions) >= frozenset(ALLOWED_REGIONS[kind])


@functools.cache
def valid_specs() -> tuple[PromptSpec, ...]:
    """Every canonical spec, in a fixed order: by type, then everywhere, groups, single regions."""
    specs: list[PromptSpec] = []
    for kind in BlemishType:
        for where in (RegionGroup.EVERYWHERE, RegionGroup.CHEEKS, RegionGroup.UNDER_EYES, *FaceRegion):
            spec = PromptSpec(kind, where)
            if spec.regions and make_spec(kind, where) not in specs:
                specs.append(make_spec(kind, where))
    return tuple(specs)


def canonical_prompt(spec: PromptSpec) -> str:
    """The one text that stands for `spec` in prompt banks (the pre-defined prompts are canonical)."""
    return _bodies(spec)[0][0]


def canonical_prompts() -> tuple[str, ...]:
    """One canonical text per valid spec, in `valid_specs()` order: a deterministic prompt bank."""
    return tuple(canonical_prompt(spec) for spec in valid_specs())


@functools.cache
def paraphrases(spec: PromptSpec) -> tuple[str, ...]:
    """Every text the templates produce for `spec` (canonical first), with and without instruction prefix."""
    nouns, descriptive = _bodies(spec)
    texts = [*nouns, *descriptive]
    texts += [p + n for p in _PREFIXES for n in nouns]
    texts += [p + d for p in _DESCRIPTIVE_PREFIXES for d in descriptive]
    return tuple(dict.fromkeys(texts))


def prompt_for(kind: BlemishType, where: Where, rng: np.random.Generator) -> str:
    """A random paraphrase naming `kind` in `where` (a region, a group, or EVERYWHERE)."""
    spec = make_spec(kind, where)
    nouns, descriptive = _bodies(spec)
    pool = nouns + descriptive
    body = pool[int(rng.integers(len(pool)))]
    if rng.random() < _NO_PREFIX_PROB:
        return body
    prefixes = _DESCRIPTIVE_PREFIXES if body in descriptive else _PREFIXES
    return prefixes[int(rng.integers(len(prefixes)))] + body


@functools.cache
def _text_to_spec() -> dict[str, PromptSpec]:
    table: dict[str, PromptSpec] = {}
    for spec in valid_specs():
        for text in paraphrases(spec):
            other = table.setdefault(text, spec)
            assert other == spec, f"ambiguous template {text!r}: {other} vs {spec}"
    return table


def parse_prompt(text: str) -> PromptSpec:
    """The spec of a text the templates can produce (after `normalize_prompt`); free text is not parsed.

    Raises `LangBRTInputError` for any other text: the synthetic benchmark only speaks its own templates.
    """
    spec = _text_to_spec().get(normalize_prompt(text))
    if spec is None:
        raise LangBRTInputError(f"not a synthetic-benchmark prompt: {text!r}; see canonical_prompts()")
    return spec


def mirror_prompt(text: str) -> str:
    """The prompt for the horizontally flipped image: the words left and right swap."""
    return _SIDE_WORD.sub(lambda m: "right" if m.group(1) == "left" else "left", text)
