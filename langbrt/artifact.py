"""Metadata that every exported artifact (ONNX file, TensorRT engine sidecar) carries about itself.

Export writes it; the runtime configures itself from it (input size, the baked prompt table, which
text encoder could add prompts). It lives in `langbrt` because both `export` and `runtime` need it and
the runtime must not import export code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import CheckpointError
from .json_dataclass import check_format_version, dataclass_from_json, parse_json

ARTIFACT_FORMAT = "langbrt-artifact"
ARTIFACT_VERSION = 1
METADATA_KEY = "langbrt"  # the ONNX metadata_props key; also the sidecar JSON's top-level content

INPUT_IMAGES = "images"  # (B, 3, S, S) float in [0, 1]
INPUT_PROMPT_WEIGHTS = "prompt_weights"  # (B, T) weight of each baked prompt per image (0 = off)
INPUT_EXTRA_EMBEDDINGS = "extra_embeddings"  # (E, D) embeddings of prompts not in the table
INPUT_EXTRA_WEIGHTS = "extra_weights"  # (B, E) weight of each extra prompt per image
OUTPUT_IMAGE = "image"  # (B, 3, S, S) retouched
OUTPUT_MASK = "mask"  # (B, 1, S, S) combined gated map
OUTPUT_MAPS = "maps"  # (B, T + E, S, S) per-prompt gated maps, table order then extras


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
        # Unknown fields are ignored: an export may carry a field added after this runtime, in the same format.
        return dataclass_from_json(cls, data, source, CheckpointError, ignore_unknown=True)
