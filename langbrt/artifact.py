"""Metadata that every exported artifact (ONNX file, TensorRT engine sidecar) carries about itself.

Export writes it; the runtime configures itself from it (input size, the baked prompt table, which
text encoder could add prompts). It lives in `langbrt` because both `export` and `runtime` need it and
the runtime must not import export code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import MAX_IMAGE_SIZE, MAX_WIDTH
from .errors import CheckpointError, ConfigValueError, LangBRTInputError
from .json_dataclass import check_format_version, dataclass_from_json, parse_json

ARTIFACT_FORMAT = "langbrt-artifact"
# 2: maps for the prompts an image asks for (`prompt_index`), not one per baked prompt. Version 1 files
# computed and returned a full-size map for every prompt of the table, 2 079 for the bundled model: 9x the
# checkpoint's time and over 10 GB at batch 8 (QA, 2026-11-26).
ARTIFACT_VERSION = 2
METADATA_KEY = "langbrt"  # the ONNX metadata_props key; also the sidecar JSON's top-level content
PRECISIONS = ("fp32", "fp16")  # fp16: a TensorRT engine built with --fp16
# Every slot adds one (S, S) map per image to every call's `maps` output, used or not (1 MB per image at
# 512x512 fp32), and a batch needs one slot per distinct new prompt: 64 is far above any batch's need.
MAX_EXTRA_PROMPT_SLOTS = 64
# A TensorRT engine's optimisation profile for the prompts-per-image dimension (K of prompt_index): built for
# the pre-defined three, taking up to this many (langbrt-serve's --max-prompts defaults to 8).
OPT_ENGINE_PROMPTS = 3
MAX_ENGINE_PROMPTS = 16
# ArtifactMetadata.extras key, true for a --ablation no-prior model: it has no text encoder for new prompts.
LEARNED_PROMPTS_KEY = "learned_prompts"
# A TensorRT sidecar's extras key: the hex SHA-256 of the engine bytes the sidecar describes.
ENGINE_DIGEST_KEY = "engine_sha256"

INPUT_IMAGES = "images"  # (B, 3, S, S) float in [0, 1]
INPUT_PROMPT_INDEX = "prompt_index"  # (B, K) int32: the baked prompts each image asks for, rows padded with 0
INPUT_PROMPT_WEIGHTS = "prompt_weights"  # (B, K) weight of each of them (0 = off: the padding)
INPUT_EXTRA_EMBEDDINGS = "extra_embeddings"  # (E, D) embeddings of prompts not in the table
INPUT_EXTRA_WEIGHTS = "extra_weights"  # (B, E) weight of each extra prompt per image
OUTPUT_IMAGE = "image"  # (B, 3, S, S) retouched
OUTPUT_MASK = "mask"  # (B, 1, S, S) combined gated map
OUTPUT_MAPS = "maps"  # (B, K + E, S, S) per-prompt gated maps: prompt_index's order, then the extras


@dataclass
class ArtifactMetadata:
    """What an exported model says about itself; `prompts` is the baked table in order."""

    image_size: int
    prompts: list[str]
    predefined_index: list[int]
    text_encoder: str
    text_dim: int
    model_hash: str
    extra_prompt_slots: int
    precision: str = "fp32"
    opset: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    format: str = ARTIFACT_FORMAT
    format_version: int = ARTIFACT_VERSION

    def __post_init__(self) -> None:
        """Refuse values the runtime cannot run with (they surfaced as tracebacks there: a resize to 0x0, a
        zip of prompts with a shorter index list), as `ConfigValueError`; `from_json` names the source."""
        for name, least, most in (("image_size", 1, MAX_IMAGE_SIZE), ("text_dim", 1, MAX_WIDTH),
                                  ("extra_prompt_slots", 0, MAX_EXTRA_PROMPT_SLOTS)):
            if not least <= getattr(self, name) <= most:
                _refuse(name, f"must be in [{least}, {most}], got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            _refuse("precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _check_prompt_table(self.prompts, self.predefined_index)
        if not isinstance(self.extras.get(LEARNED_PROMPTS_KEY, False), bool):  # "false" would read as true
            _refuse(f"extras.{LEARNED_PROMPTS_KEY}", f"must be true or false, got {self.extras[LEARNED_PROMPTS_KEY]!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str, source: str) -> ArtifactMetadata:
        """Parse metadata read from `source`; anything unusable (not LangBRT's, a newer format, a field missing
        or of the wrong type) is one `CheckpointError` line naming `source`."""
        data = parse_json(text, f"{source}: unreadable LangBRT metadata", CheckpointError)
        if not isinstance(data, dict) or data.get("format") != ARTIFACT_FORMAT:
            raise CheckpointError(f"{source}: not a LangBRT export (no LangBRT metadata)")
        check_format_version(data, ARTIFACT_VERSION, source, CheckpointError)
        if data.get("format_version", 0) < ARTIFACT_VERSION:
            raise CheckpointError(f"{source}: exported by an older LangBRT (format version "
                                  f"{data.get('format_version', 0)}, whose graph computes a map for every baked "
                                  f"prompt); export it again from its checkpoint with langbrt-export")
        # Unknown fields are ignored: an export may carry a field added after this runtime, in the same format.
        return dataclass_from_json(cls, data, source, CheckpointError, ignore_unknown=True)


def _refuse(field: str, problem: str) -> None:
    raise ConfigValueError(field, problem, f"export metadata: {field} {problem}")


def _check_prompt_table(prompts: list[str], predefined_index: list[int]) -> None:
    """Each prompt one a user could type, once, and one index per prompt: -1 (a user prompt) or its place among the
    model's pre-defined prompts, which are all in the table, each once."""
    from .text.prompts import normalize_prompt

    first_row: dict[str, int] = {}
    for i, prompt in enumerate(prompts):
        try:
            canonical = normalize_prompt(prompt)
        except LangBRTInputError as err:
            _refuse(f"prompts[{i}]", f"is not a usable prompt: {err}")
        if canonical in first_row:  # a lookup would answer from one row only: which one, the table does not say
            _refuse(f"prompts[{i}]", f"repeats prompts[{first_row[canonical]}] ({prompt!r})")
        first_row[canonical] = i
    if len(predefined_index) != len(prompts):
        _refuse("predefined_index", f"must hold one entry per prompt ({len(prompts)}), got {len(predefined_index)}")
    for i, value in enumerate(predefined_index):
        if not -1 <= value < len(prompts):
            _refuse(f"predefined_index[{i}]", f"must be -1 (a user prompt) or in [0, {len(prompts)}), got {value}")
    chosen = [value for value in predefined_index if value >= 0]
    if len(set(chosen)) != len(chosen):
        _refuse("predefined_index", f"names a pre-defined prompt twice: {predefined_index}")


def engine_digest(engine: bytes) -> str:
    """The hex SHA-256 that ties a TensorRT sidecar to the engine bytes it describes (`ENGINE_DIGEST_KEY`)."""
    return hashlib.sha256(engine).hexdigest()
