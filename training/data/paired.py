"""Paired before/after images as training samples: the dataset the training loop reads real pairs from.

The pairs come from `find_pairs` (`langbrt.training.data.pair_discovery`) or `find_ffhqr_pairs`
(`langbrt.training.data.ffhqr`); whether their files decode is checked by
`langbrt.training.data.pair_validation`. This module turns them into square tensors with the prompts that
go with them, skipping the pairs that turn out to be unusable.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TypedDict

import numpy as np
import torch
import torch.nn.functional as F

from langbrt.config import PAPER_PREDEFINED_PROMPTS
from langbrt.errors import LangBRTInputError
from langbrt.training.data.blemish_types import mirror_prompt
from langbrt.training.data.pair_cache import DEFAULT_CACHE_BYTES, pair_cache_for, pair_stamp
from langbrt.training.data.pair_discovery import ImagePair, format_offenders, plural
from langbrt.training.data.pair_prompts import canonical_prompts
from langbrt.training.data.pair_validation import SkippedImage, UnusableImageError, check_pair, read_pair

DEFAULT_REAL_PROMPTS = PAPER_PREDEFINED_PROMPTS
"""The paper's pre-defined prompts (sec. 3), given for every real pair: real pairs carry no per-blemish
annotation, so the whole retouch is the answer to all of them together."""

class PairedSample(TypedDict):
    source: torch.Tensor  # (3, S, S) float32 in [0, 1], before retouching
    target: torch.Tensor  # (3, S, S) float32 in [0, 1], after retouching
    name: str
    prompts: list[str]
    region_masks: None  # real pairs carry no per-blemish masks; the synthetic set fills this


def fit_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop `image` (3, H, W) to a square and resize it to (3, size, size) with antialiased bicubic.

    Cropping rather than stretching keeps faces undistorted; antialiasing matters because FFHQ's 1024² images
    are usually trained at 512² and plain bicubic downsampling aliases skin texture, the very thing retouched.
    """
    _, h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[:, top : top + side, left : left + side]  # (3, side, side)
    if side == size:
        return image.contiguous()
    resized = F.interpolate(
        image[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False
    )
    return resized[0].clamp_(0.0, 1.0)  # (3, size, size); bicubic overshoots at edges


class PairedImageDataset(torch.utils.data.Dataset):
    """Real before/after pairs as training samples (see `PairedSample`): each pair answers its own prompts in
    `pair_prompts` (by pair name, from a data root's prompts.json) or, if not listed there, every prompt in
    `prompts`. Prompts are normalised and de-duplicated, as the model does.

    A corrupt file must not end a long run, so with ``strict=False`` a pair that fails to decode is skipped:
    `validate()` checks every file up front (call it before building the DataLoader; it may shrink the set),
    and `__getitem__` falls back to the next decodable pair if a file breaks later. Each skip is warned about
    once and recorded in `skipped`. With ``strict=True`` the first bad file raises `LangBRTInputError`.
    Skips that happen inside DataLoader worker processes are recorded in that worker's copy only; their
    warnings still reach stderr.

    ``flip=True`` mirrors source and target together (and swaps "left"/"right" in the prompts) for half the
    samples; the choice depends only on (seed, epoch, index), so it is reproducible with any number of
    workers. Call `set_epoch` each epoch to draw new flips.

    Each pair is decoded once and kept at `image_size` (`pair_cache`: when all of them fit in `cache_bytes`;
    a pair whose file changes is read again); `read_full` decodes a pair at full size for a caller that needs
    it (the alignment check) and caches it on the way.
    """

    def __init__(
        self,
        pairs: Sequence[ImagePair],
        image_size: int = 512,
        strict: bool = False,
        flip: bool = False,
        seed: int = 0,
        prompts: Sequence[str] = DEFAULT_REAL_PROMPTS,
        substitute: bool = True,
        pair_prompts: Mapping[str, Sequence[str]] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if not isinstance(image_size, int) or image_size < 1:
            raise LangBRTInputError(f"image_size must be a positive integer, got {image_size!r}")
        if len(pairs) == 0:
            raise LangBRTInputError("the paired data set is empty; check the data folder")
        if isinstance(prompts, str) or len(prompts) == 0:
            raise LangBRTInputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        self.pairs: list[ImagePair] = list(pairs)
        self.image_size = image_size
        self.strict = strict
        self.flip = flip
        self.seed = seed
        self.epoch = 0
        self.prompts = canonical_prompts(prompts)
        self.pair_prompts = {name: canonical_prompts(p) for name, p in (pair_prompts or {}).items()}
        self.skipped: list[SkippedImage] = []
        self._bad: set[int] = set()  # indices into self.pairs known not to decode
        # A pair that fails to decode: replaced by the next usable one (training: every batch stays full), or
        # None, which collate_pairs drops (evaluation: every pair scored once or not at all; QA, 2026-11-26:
        # eval scored the neighbour of a corrupt pair twice and counted it in num_samples).
        self.substitute = substitute
        self.cache = pair_cache_for(len(self.pairs), image_size, cache_bytes)

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of flips for `epoch` (like DistributedSampler.set_epoch)."""
        self.epoch = epoch

    def validate(self) -> int:
        """Check every file's header and structure (PIL ``verify``, no full decode) and drop bad pairs.

        Returns the number of pairs dropped; warns once, naming them. Also rejects a pair whose source and
        target differ in aspect ratio, since they cannot show the same framing. Raises `LangBRTInputError`
        on the first bad file when strict, or when no pair is left.
        """
        kept: list[ImagePair] = []
        dropped: list[SkippedImage] = []
        for index, pair in enumerate(self.pairs):
            if index in self._bad:  # already skipped, warned about and recorded by __getitem__
                continue
            problem = check_pair(pair)
            if problem is None:
                kept.append(pair)
            elif self.strict:
                raise LangBRTInputError(f"{problem.path}: {problem.reason}; fix or remove this pair")
            else:
                dropped.append(problem)
        self.pairs, self._bad = kept, set()
        self.skipped.extend(dropped)
        if dropped:
            names = [f"{d.path} ({d.reason})" for d in dropped]
            warnings.warn(
                f"skipping {plural(len(dropped), 'image pair', 'image pairs')} that cannot be used "
                f"{format_offenders(names)}",
                stacklevel=2,
            )
        if not kept:
            raise LangBRTInputError("no usable image pair is left after validation; check the data folder")
        return len(dropped)

    def __getitem__(self, index: int) -> PairedSample | None:
        n = len(self.pairs)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} pairs")
        for offset in range(n if self.substitute else 1):
            i = (index + offset) % n
            if i in self._bad:
                continue
            try:
                source, target = self._load(self.pairs[i])
            except UnusableImageError as err:
                if self.strict:
                    raise
                self._record_skip(i, err)
                continue
            return self._sample(i, source, target)
        if not self.substitute:
            return None
        raise LangBRTInputError(
            "none of the image pairs in the data set can be decoded; check the data files"
        )

    def _load(self, pair: ImagePair) -> tuple[torch.Tensor, torch.Tensor]:
        """(3, S, S) source and target of `pair`, from the cache or decoded (and cached)."""
        cached = self.cache.get(pair)
        return cached if cached is not None else self._decode(pair)[1]

    def read_full(self, pair: ImagePair) -> tuple[torch.Tensor, torch.Tensor]:
        """`read_pair(pair)`: both files at full size, (3, H, W) and (3, H', W'); their model-size copies are
        cached, so the samples of a pair read here are not decoded again."""
        return self._decode(pair)[0]

    def _decode(self, pair: ImagePair) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """((full source, full target), (source, target) at `image_size`) of `pair`, decoded; the second cached."""
        stamp = pair_stamp(pair)  # before decoding: a file rewritten meanwhile is read again next time
        source, target = read_pair(pair)  # (3, H, W), (3, H', W')
        fitted = fit_square(source, self.image_size), fit_square(target, self.image_size)  # (3, S, S) each
        self.cache.put(pair, stamp, *fitted)
        return (source, target), fitted

    def prompts_of(self, name: str) -> tuple[str, ...]:
        """The prompts pair `name` answers, before any flip."""
        return self.pair_prompts.get(name, self.prompts)

    def prompt_texts(self) -> set[str]:
        """Every prompt a sample of this set can carry, mirrored ones included when it flips."""
        texts = {p for pair in self.pairs for p in self.prompts_of(pair.name)}
        return texts | {mirror_prompt(p) for p in texts} if self.flip else texts

    def _sample(self, index: int, source: torch.Tensor, target: torch.Tensor) -> PairedSample:
        name = self.pairs[index].name
        prompts = list(self.prompts_of(name))
        if self.flip and np.random.default_rng((self.seed, self.epoch, index)).random() < 0.5:
            source, target = source.flip(-1), target.flip(-1)  # (3, S, S), mirrored left-right
            prompts = [mirror_prompt(p) for p in prompts]
        return PairedSample(source=source, target=target, name=name, prompts=prompts, region_masks=None)

    def _record_skip(self, index: int, err: UnusableImageError) -> None:
        self._bad.add(index)
        self.skipped.append(SkippedImage(err.path, str(err)))
        warnings.warn(f"skipping image pair {self.pairs[index].name!r}: {err}", stacklevel=3)


def collate_pairs(batch: Sequence[PairedSample | None]) -> dict[str, object] | None:
    """DataLoader ``collate_fn``: stacks images to (B, 3, S, S) and keeps names/prompts as per-sample lists;
    None for a batch whose every pair failed to decode (a dataset built with ``substitute=False``).

    torch's default collate would transpose the prompt lists and fail on ``region_masks=None``.
    """
    batch = [s for s in batch if s is not None]  # pairs that failed to decode, when not substituted
    if not batch:
        return None
    return {
        "source": torch.stack([s["source"] for s in batch]),  # (B, 3, S, S)
        "target": torch.stack([s["target"] for s in batch]),  # (B, 3, S, S)
        "name": [s["name"] for s in batch],
        "prompts": [s["prompts"] for s in batch],
        "region_masks": None,
    }
