"""The model that ships inside the package: what every tool uses when no model is named.

It was trained by `training/recipes/bundled_model.sh` on synthetic blemishes only (procedural faces plus
one public-domain photo), so it demonstrates the pipeline end to end on a fresh machine; production
quality needs training on real before/after pairs (FFHQR, see README).
"""

from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "default_model"


def default_model_path() -> Path:
    """The bundled checkpoint folder; `CheckpointError` if this installation lacks it."""
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        raise CheckpointError(f"this installation has no bundled model ({DEFAULT_MODEL_DIR} is missing): "
                              "pass --model DIR (a checkpoint folder, .onnx or .engine)")
    return DEFAULT_MODEL_DIR
