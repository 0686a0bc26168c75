"""Read a user-supplied weights file (CLIP, Alpha-CLIP, VGG-19) into one flat dict of CPU tensors.

Users bring weights in several shapes: safetensors, `torch.save` state dicts (.pt/.pth/.bin, sometimes
wrapped in {"state_dict": ...}), and TorchScript archives such as OpenAI's released CLIP `.pt` files. Every
reader of such a file goes through `read_state_dict`, so each accepts all of them and a damaged or foreign
file is one `CheckpointError` line naming it, whichever library failed to read it.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from langbrt.errors import CheckpointError, LangBRTInputError

_WRAPPER_KEYS = ("state_dict", "model", "module")


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Every tensor of the weights file at `path`, on the CPU; `what` ("CLIP weights") names it in errors.

    torch files are read weights-only (no pickled code runs); wrappers like {"state_dict": {...}} are
    unwrapped and non-tensor entries dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise LangBRTInputError(f"{what} file not found: {path}")
    if path.stat().st_size == 0:  # torch's own message would suggest weights_only=False, which cannot help
        raise CheckpointError(f"{what} file {path} is empty (0 bytes); download or copy it again")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        if _is_torchscript_archive(path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, the archives are not
                return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise several types for foreign or corrupt files
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"cannot read {path} as {what} ({first_line}); re-save it as a plain state dict "
            "(torch.save(model.state_dict(), ...)) or as .safetensors"
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
