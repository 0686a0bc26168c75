"""Read a user-supplied CLIP weights file and extract its text tower under OpenAI key names.

Users bring CLIP weights in several shapes: OpenAI JIT archives (`ViT-B-16.pt`), OpenAI/open_clip state dicts
(.pt/.pth/.bin/.safetensors, sometimes wrapped in {"state_dict": ...} with `module.` prefixes from DDP), and
Alpha-CLIP checkpoints, which hold only the image tower (Alpha-CLIP fine-tunes the image tower; its text tower
is OpenAI CLIP's, frozen). This module turns any of them into one flat dict of OpenAI-named tensors, or says
clearly why it cannot.
"""

import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from langbrt.errors import CheckpointError, LangBRTInputError

TOKEN_EMBEDDING_KEY = "token_embedding.weight"
_WRAPPER_KEYS = ("state_dict", "model", "module")
_PREFIXES = ("module.", "model.")
_RENAMES = {".attn.in_proj.weight": ".attn.in_proj_weight", ".attn.in_proj.bias": ".attn.in_proj_bias"}
# Keys of an image tower saved on its own (no "visual." prefix), as Alpha-CLIP's checkpoints are.
_IMAGE_TOWER_KEYS = ("conv1_alpha.weight", "conv1.weight", "class_embedding")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load every tensor of a weights file onto the CPU: safetensors, torch.save files (weights-only), or
    TorchScript archives such as OpenAI's released CLIP `.pt` files. Wrappers like {"state_dict": {...}} are
    unwrapped; non-tensor entries are dropped."""
    path = Path(path)
    if not path.is_file():
        raise LangBRTInputError(f"CLIP weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if _is_torchscript_archive(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, the archives are not
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign or corrupt files; re-raised as one
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"cannot read {path} as a weights-only torch file ({first_line}); "
            "re-save it as a plain state dict (torch.save(model.state_dict(), ...)) or as .safetensors"
        ) from err
    return _unwrap(loaded, path)


def _is_torchscript_archive(path: Path) -> bool:
    """TorchScript zips carry `constants.pkl` and compiled `code/`; plain torch.save zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _unwrap(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(loaded, Mapping):
        inner = [loaded[k] for k in _WRAPPER_KEYS if isinstance(loaded.get(k), Mapping)]
        if not inner or any(isinstance(v, torch.Tensor) for v in loaded.values()):
            break
        loaded = inner[0]
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not a state dict of tensors")
    return {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


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
