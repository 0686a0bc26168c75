"""Checkpoints: a directory (`model.safetensors` + `prompt_bank.safetensors` + `config.json`) or one file.

No pickles: weights and prompt embeddings are safetensors, everything else is JSON. A directory is written
whole under a hidden name and renamed into place (`atomic_folder`), so a directory with a readable
config.json has complete weights beside it, the ones it describes, and a failed overwrite leaves the old
checkpoint as it was.
Training resumes keep their optimizer state in a separate `trainer_state.pt` (see langbrt.training).

A path ending in `.safetensors` is the single-file form, for shipping one model as one file: the same
weights plus the prompt embeddings under `PROMPTS_KEY`, and the same config JSON in the file's metadata
under `CONFIG_KEY`. The file is written to a temporary name and renamed, so it is complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .atomic import atomic_folder, atomic_path, new_file_mode
from .config import LangBRTConfig
from .errors import CheckpointError, LangBRTInputError, OutputWriteError
from .json_dataclass import check_format_version, parse_json
from .text import PromptBank, TextEncoder

if TYPE_CHECKING:
    from .model import LangBRT

FORMAT = "langbrt-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PROMPTS_FILE = "prompt_bank.safetensors"
SINGLE_FILE_SUFFIX = ".safetensors"
FINAL_DIR = "final"  # what `langbrt-train --output OUTPUT` writes: OUTPUT/final/ and OUTPUT/checkpoints/step_NNNNNN/
CHECKPOINTS_DIR = "checkpoints"
CONFIG_KEY = "langbrt_config"  # single file: metadata entry holding config.json's text
PROMPTS_KEY = "__langbrt__.prompt_embeddings"  # single file: the prompt bank (no module owns this name)


def is_single_file(path: str | Path) -> bool:
    """True when `path` names the single-file checkpoint form (existing or to be written)."""
    path = Path(path)
    return path.suffix.lower() == SINGLE_FILE_SUFFIX and not path.is_dir()


def weights_sha256(path: str | Path) -> str | None:
    """sha256 of a checkpoint's weights file (the single file itself, or a folder's `WEIGHTS_FILE`); None when
    there is none. An export records it as its `model_hash`, which is how a benchmark finds the checkpoint an
    exported model came from."""
    weights = Path(path) if is_single_file(path) else Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        return None
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


WRITE_ERRORS = (OSError, SafetensorError)  # safetensors reports a full disk as SafetensorError, not OSError


def save_checkpoint(model: LangBRT, directory: str | Path) -> Path:
    """Write `model` into `directory` (created if needed), or into one `.safetensors` file; return the path.

    The folder is written whole under a hidden name and swapped in (`atomic_folder`): a failure part-way (a
    full disk) is one `OutputWriteError` line and leaves an existing checkpoint there as it was. Because the
    swap replaces the whole folder, a folder holding anything but a checkpoint's own files is refused (a
    `CheckpointError`, before anything is written) rather than emptied.
    """
    directory = Path(directory)
    if is_single_file(directory):
        return _save_single_file(model, directory)
    target = _folder_to_replace(directory)
    try:
        with atomic_folder(target) as staging:
            write_checkpoint_files(model, staging)
    except WRITE_ERRORS as err:
        raise OutputWriteError(f"cannot write checkpoint to {directory}: {write_failure(err)}") from None
    return directory


def write_checkpoint_files(model: LangBRT, folder: Path) -> None:
    """Write the folder form's three files into the existing `folder`, in place: for a caller that stages the
    folder itself (the trainer adds its own files, then swaps the folder in). Raises one of `WRITE_ERRORS`."""
    state, embeddings, config = _checkpoint_contents(model)
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT})
    save_file({"embeddings": embeddings}, str(folder / PROMPTS_FILE), metadata={"format": FORMAT})
    for name in (WEIGHTS_FILE, PROMPTS_FILE):  # safetensors leaves them 0600; give them config.json's mode
        os.chmod(folder / name, new_file_mode())
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")


def write_failure(err: BaseException) -> str:
    """Why a write failed, for an error line: "No space left on device", not safetensors' "Error while
    serializing: I/O error: No space left on device (os error 28)"."""
    if isinstance(err, OSError):
        return str(err.strerror or err)
    return str(err).removeprefix("Error while serializing: ").removeprefix("I/O error: ")


def _checkpoint_contents(model: LangBRT) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, Any]]:
    """What both forms store: the weights, the prompt embeddings (P, D) and the config."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    texts, embeddings = model.prompt_bank.state()
    return state, embeddings.float().contiguous(), checkpoint_config(model, texts)


def _folder_to_replace(directory: Path) -> Path:
    """The real path `atomic_folder` swaps for `directory` (a symlinked folder is written through, "." gets its
    name), its parent created; or one `CheckpointError` if replacing it whole would lose something."""
    target = directory.resolve()
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"cannot write checkpoint to {directory}: it is a file, not a folder (a single-file "
                              f"checkpoint ends in {SINGLE_FILE_SUFFIX})")
    if target.is_dir():
        if os.path.ismount(target):
            raise CheckpointError(f"cannot write checkpoint to {directory}: it is a mount point, which cannot be "
                                  "replaced whole; save into a folder inside it")
        foreign = sorted(p.name for p in target.iterdir() if not _is_checkpoint_file(p.name))
        if foreign:
            raise CheckpointError(f"cannot write checkpoint to {directory}: it holds {len(foreign)} file(s) that "
                                  f"are not a checkpoint's (e.g. {foreign[0]}), which replacing the folder would "
                                  "delete; save into a new folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(f"cannot create checkpoint folder {directory}: {err.strerror}") from None
    return target


def _is_checkpoint_file(name: str) -> bool:
    """A file a checkpoint folder holds: its own three, or a temporary one an interrupted older LangBRT (which
    wrote in place) left behind."""
    own = (WEIGHTS_FILE, PROMPTS_FILE, CONFIG_FILE)
    return name in own or (name.endswith(".tmp") and name.startswith(tuple(f".{n}." for n in own)))


def _save_single_file(model: LangBRT, path: Path) -> Path:
    if not path.parent.is_dir():
        raise CheckpointError(f"cannot write checkpoint {path}: folder {path.parent} does not exist")
    state, embeddings, config = _checkpoint_contents(model)
    metadata = {"format": FORMAT, CONFIG_KEY: json.dumps(config)}
    try:
        with atomic_path(path) as tmp:
            save_file({**state, PROMPTS_KEY: embeddings}, str(tmp), metadata=metadata)
    except WRITE_ERRORS as err:
        raise OutputWriteError(f"cannot write checkpoint to {path}: {write_failure(err)}") from None
    return path


def checkpoint_config(model: LangBRT, prompt_texts: list[str]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "text_encoder": {"name": model.config.text_encoder, "dim": model.config.text_dim},
        "prompts": prompt_texts,
    }


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """The parsed config of a checkpoint directory or single file, or one clear `CheckpointError`."""
    directory = Path(directory)
    if not directory.exists():
        raise CheckpointError(f"{directory}: no such checkpoint")
    if is_single_file(directory):
        path, text = directory, _single_file_config_text(directory)
    elif not directory.is_dir():
        raise CheckpointError(f"{directory}: not a LangBRT checkpoint (expected a folder with {CONFIG_FILE} "
                              f"or a {SINGLE_FILE_SUFFIX} file)")
    else:
        path = directory / CONFIG_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CheckpointError(f"{directory}: not a LangBRT checkpoint (no {CONFIG_FILE})"
                                  f"{checkpoints_within(directory)}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{path}: unreadable checkpoint config ({err})") from None
    data = parse_json(text, f"{path}: unreadable checkpoint config", CheckpointError)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a LangBRT checkpoint config")
    check_format_version(data, FORMAT_VERSION, str(path), CheckpointError)
    return data


def checkpoints_within(directory: Path) -> str:
    """The checkpoint to pass instead, for the error line, when `directory` is a training run's OUTPUT folder or
    its checkpoints/ folder; '' otherwise.

    Why: `langbrt-train --output runs/mine`, then `--model runs/mine` (or `--resume runs/mine`), is what one
    types; "no config.json" left the fix unsaid.
    """
    steps = [p for p in (*(directory / CHECKPOINTS_DIR).glob("step_*"), *directory.glob("step_*"))
             if (p / CONFIG_FILE).is_file()]
    latest = max(steps, key=lambda p: (len(p.name), p.name)) if steps else None  # step_1000000 after step_999999
    if (directory / FINAL_DIR / CONFIG_FILE).is_file():
        return f"; it is a training run's folder: pass its final checkpoint, {directory / FINAL_DIR}" + (
            f" (or a step's, e.g. {latest})" if latest is not None else "")
    if latest is not None:
        return f"; it holds training checkpoints: pass one, e.g. the latest, {latest}"
    return ""


def load_checkpoint(directory: str | Path, text_encoder: TextEncoder | None = None,
                    expected_config: LangBRTConfig | None = None,
                    map_location: str | torch.device = "cpu") -> LangBRT:
    """Rebuild a `LangBRT` from `directory`, checking config, encoder and every tensor's shape."""
    from .model import LangBRT

    directory = Path(directory)
    data = read_checkpoint_config(directory)
    try:
        config = LangBRTConfig.from_dict(data.get("model"))
    except CheckpointError as err:
        raise CheckpointError(f"{directory}: {err}") from None
    if expected_config is not None and expected_config != config:
        raise CheckpointError(f"{directory}: config mismatch: {_config_diff(expected_config, config)}")
    if text_encoder is not None and (text_encoder.name, text_encoder.dim) != (config.text_encoder,
                                                                              config.text_dim):
        raise CheckpointError(
            f"{directory}: text encoder mismatch: checkpoint was trained with {config.text_encoder} "
            f"(dim {config.text_dim}), got {text_encoder.name} (dim {text_encoder.dim})"
        )
    if is_single_file(directory):
        weights = _load_safetensors(directory, map_location)
        embeddings = weights.pop(PROMPTS_KEY, torch.zeros(0, config.text_dim)).cpu()
    else:
        weights = _load_safetensors(directory / WEIGHTS_FILE, map_location)
        prompt_state = _load_safetensors(directory / PROMPTS_FILE, "cpu")
        embeddings = prompt_state.get("embeddings", torch.zeros(0, config.text_dim))
    texts = data.get("prompts", [])
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise CheckpointError(f"{directory}: the config's prompts must be a list of strings")
    if embeddings.shape != (len(texts), config.text_dim):
        raise CheckpointError(f"{directory}: prompt bank holds {tuple(embeddings.shape)} embeddings for "
                              f"{len(texts)} prompts of dim {config.text_dim}")
    try:
        bank = PromptBank.from_state(texts, embeddings, encoder_name=config.text_encoder, dim=config.text_dim,
                                     encoder=text_encoder)
    except LangBRTInputError as err:  # a prompt no user could type, e.g. "" (normalize_prompt)
        raise CheckpointError(f"{directory}: the config's prompts: {err}") from None
    model = LangBRT(config, prompt_bank=bank)
    _load_state(model, weights, directory)
    return model.to(map_location).eval()


def _single_file_config_text(path: Path) -> str:
    """The config JSON stored in a single-file checkpoint's safetensors metadata."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    if CONFIG_KEY not in metadata:
        if path.name == WEIGHTS_FILE and (path.parent / CONFIG_FILE).is_file():  # QA: final/model.safetensors
            raise CheckpointError(f"{path} is the weights file of the checkpoint folder {path.parent}: pass the "
                                  "folder")
        raise CheckpointError(f"{path}: a safetensors file but not a LangBRT checkpoint (no {CONFIG_KEY!r} "
                              "metadata); save one with LangBRT.save_pretrained('model.safetensors')")
    return metadata[CONFIG_KEY]


def _load_safetensors(path: Path, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise CheckpointError(f"{path.parent}: incomplete checkpoint, {path.name} is missing")
    try:
        return load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt weights file ({err})") from None


def weights_mismatch(module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> str | None:
    """How saved `weights` fail to fit `module`, for an error line ("1 missing, 0 unexpected, 0 reshaped,
    e.g. q.weight"); None when they fit. Why: `load_state_dict`'s own error is many lines long and names no file."""
    own = module.state_dict()
    missing, unexpected = sorted(own.keys() - weights.keys()), sorted(weights.keys() - own.keys())
    reshaped = sorted(k for k in own.keys() & weights.keys() if own[k].shape != weights[k].shape)
    if not (missing or unexpected or reshaped):
        return None
    example = (missing + unexpected + reshaped)[0]
    if example in reshaped:
        example += f" (saved {tuple(weights[example].shape)}, needed {tuple(own[example].shape)})"
    return f"{len(missing)} missing, {len(unexpected)} unexpected, {len(reshaped)} reshaped, e.g. {example}"


def _load_state(model: torch.nn.Module, weights: dict[str, torch.Tensor], directory: Path) -> None:
    mismatch = weights_mismatch(model, weights)
    if mismatch:
        raise CheckpointError(f"{directory}: weights do not fit the model its config describes ({mismatch})")
    broken = non_finite_weight(weights)
    if broken is not None:
        raise CheckpointError(f"{directory}: weight {broken} holds NaN or infinity (a damaged file, or training "
                              "that diverged); use an earlier checkpoint")
    model.load_state_dict(weights)


def non_finite_weight(weights: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor in `weights` with a NaN or infinity, else None.

    Why: training refuses to save such weights, but a file edited or damaged later loaded fine and gave
    images half black with exit 0, and an export and an eval of it ran too (QA, 2026-11-26). One pass over
    the weights: 5 ms for the paper preset's 1.4 M on the dev box's CPU.
    """
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def _config_diff(expected: LangBRTConfig, found: LangBRTConfig) -> str:
    a, b = expected.to_dict(), found.to_dict()
    diffs = [f"{k}: expected {a[k]!r}, checkpoint has {b[k]!r}" for k in a if a[k] != b[k]]
    return "; ".join(diffs)
