"""Read a user-supplied CLIP weights file and extract its text tower under OpenAI key names.

Users bring CLIP weights in several shapes: OpenAI JIT archives (`ViT-B-16.pt`), OpenAI/open_clip state dicts
(.pt/.pth/.bin/.safetensors, sometimes wrapped in {"state_dict": ...} with `module.` prefixes from DDP), and
Alpha-CLIP checkpoints, which hold only the image tower (Alpha-CLIP fine-tunes the image tower; its text tower
is OpenAI CLIP's, frozen). This module turns any of them into one flat dict of OpenAI-named tensors, or says
clearly why it cannot.
"""

from collections.abc import Mapping
from pathlib import Path

import torch

from langbrt.errors import CheckpointError

TOKEN_EMBEDDING_KEY = "token_embedding.weight"
_PREFIXES = ("module.", "model.")
_RENAMES = {".attn.in_proj.weight": ".attn.in_proj_weight", ".attn.in_proj.bias": ".attn.in_proj_bias"}
# Keys of an image tower saved on its own (no "visual." prefix), as Alpha-CLIP's checkpoints are.
_IMAGE_TOWER_KEYS = ("conv1_alpha.weight", "conv1.weight", "class_embedding")


def canonical_key(key: str) -> str:
    """OpenAI CLIP naming: strip DDP/wrapper prefixes (`module.`, `model.`) and map the
    `attn.in_proj.weight` spelling some dumps use (Alpha-CLIP's LoRA attention) back to
    nn.MultiheadAttention's `attn.in_proj_weight`."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    for old, new in _RENAMES.items():
        if key.endswith(old):
            key = key[: -len(old)] + new
    return key


def canonical_state_dict(state: Mapping[str, torch.Tensor], path: str | Path) -> dict[str, torch.Tensor]:
    """Canonical key names for a whole state dict; raises if the file has no text tower at all."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new_key = canonical_key(key)
        if new_key in out:
            raise CheckpointError(f"{path} has two tensors that both map to {new_key!r}")
        out[new_key] = value
    if TOKEN_EMBEDDING_KEY not in out:
        raise CheckpointError(_no_text_tower_message(out, Path(path)))
    return out


def _no_text_tower_message(state: Mapping[str, torch.Tensor], path: Path) -> str:
    if any(k.endswith("conv1_alpha.weight") for k in state):
        what = "is an Alpha-CLIP checkpoint: it holds only the image tower"
    elif any(k in state for k in _IMAGE_TOWER_KEYS) or any(k.startswith("visual.") for k in state):
        what = "holds only an image tower"
    else:
        what = "holds no CLIP text tower"
    return (
        f"{path} {what} (no {TOKEN_EMBEDDING_KEY!r}); for the text encoder pass the OpenAI CLIP weights "
        "of the same architecture (e.g. OpenAI's ViT-B-16.pt with Alpha-CLIP B/16)"
    )
