"""CLIP text tower (open_clip architecture) loaded from a local weights file.

The paper conditions on CLIP text embeddings, and Alpha-CLIP (whose text tower is OpenAI CLIP's, frozen)
scores region/prompt agreement. No package ships CLIP weights, so the user supplies a file; open_clip
builds the architecture with random weights (`pretrained=None`: it never downloads) and only the text tower
is filled from the file. The image tower is dropped to save memory: LangBRT uses CLIP here for text only.
"""

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from langbrt.errors import CheckpointError, LangBRTInputError
from langbrt.text.clip_weights import canonical_state_dict
from langbrt.text.encoder import check_texts
from langbrt.text.offline import hub_offline
from langbrt.weights_file import read_state_dict

OPEN_CLIP_PREFIX = "open_clip:"
QUICKGELU_SUFFIX = "-quickgelu"
_NOT_TEXT_KEYS = ("logit_scale", "logit_bias")


class OpenClipTextEncoder:
    """Text tower of an open_clip CLIP architecture, weights from a local file; implements `TextEncoder`.

    `arch` is an open_clip config name ("ViT-B-16", "ViT-L-14", ...). OpenAI's CLIP weights (and so
    Alpha-CLIP's text tower) were trained with QuickGELU: pass `quick_gelu=True` or an arch ending in
    "-quickgelu", else the activations differ from training. `quick_gelu=None` keeps the arch config's choice.
    The choice is part of `name` ("open_clip:ViT-B-16-quickgelu"), so a checkpoint records exactly which
    numerics it was trained on.
    """

    def __init__(self, arch: str, weights: str | Path, *, quick_gelu: bool | None = None) -> None:
        self._arch = named_arch(arch, quick_gelu)
        self._weights = Path(weights)
        if not self._weights.is_file():
            raise LangBRTInputError(f"CLIP weights file not found: {self._weights}")
        self._model = None
        self._tokenizer = None
        self._dim: int | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"{OPEN_CLIP_PREFIX}{self._arch}"

    @property
    def arch(self) -> str:
        return self._arch

    @property
    def weights(self) -> Path:
        return self._weights

    @property
    def dim(self) -> int:
        """Text projection width (CLIP's joint embedding size), read from the arch config without loading."""
        if self._dim is None:
            config_arch, _ = config_arch_of(self._arch)
            self._dim = int(_model_config(config_arch)["embed_dim"])
        return self._dim

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> "OpenClipTextEncoder":
        """Build the architecture and load the text tower from the weights file (idempotent). Returns self."""
        with self._lock:
            if self._model is None:
                self._load_locked()
        return self

    def _load_locked(self) -> None:
        import open_clip

        config_arch, force_quick_gelu = config_arch_of(self._arch)
        _check_supported(config_arch, _model_config(config_arch))
        state = canonical_state_dict(read_state_dict(self._weights, "CLIP weights"), self._weights)
        with hub_offline(), quiet_random_init_warning():
            model = open_clip.create_model(
                config_arch,
                pretrained=None,  # never download: weights come from self._weights below
                force_quick_gelu=force_quick_gelu,
                device="cpu",
                precision="fp32",
            )
            tokenizer = open_clip.get_tokenizer(config_arch)
        model.visual = None  # text only: free the randomly initialised image tower
        _load_text_tower(model, state, self._weights, self._arch)
        model.eval().requires_grad_(False)
        self._dim = int(model.text_projection.shape[-1])
        self._tokenizer = tokenizer
        self._model = model

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embed texts as (N, dim) float32 on CPU, rows L2-normalised (CLIP truncates at 77 tokens)."""
        check_texts(texts)
        self.load()
        tokens = self._tokenizer(list(texts))  # (N, context_length) int64
        with torch.no_grad():
            features = self._model.encode_text(tokens)  # (N, dim)
        return F.normalize(features.float(), dim=-1)

    def __repr__(self) -> str:
        return f"OpenClipTextEncoder(name={self.name!r}, weights='{self._weights}', loaded={self.loaded})"


def named_arch(arch: str, quick_gelu: bool | None) -> str:
    """The arch as written in `name`; QuickGELU is spelled as open_clip does, with a "-quickgelu" suffix."""
    arch = arch.strip().replace("/", "-")  # OpenAI spells "ViT-B/16"
    if not arch:
        raise LangBRTInputError("open_clip architecture name is empty; e.g. ViT-B-16")
    if quick_gelu is True and not arch.endswith(QUICKGELU_SUFFIX):
        return arch + QUICKGELU_SUFFIX
    if quick_gelu is False and arch.endswith(QUICKGELU_SUFFIX):
        raise LangBRTInputError(f"architecture {arch} uses QuickGELU but quick_gelu=False was passed")
    return arch


def config_arch_of(arch: str) -> tuple[str, bool]:
    """Map a named arch onto an open_clip config: "X-quickgelu" without its own config is X with QuickGELU."""
    import open_clip

    known = set(open_clip.list_models())
    if arch in known:
        return arch, False
    base = arch.removesuffix(QUICKGELU_SUFFIX)
    if arch.endswith(QUICKGELU_SUFFIX) and base in known:
        return base, True
    suggestions = sorted(m for m in known if m.split("-")[0] == arch.split("-")[0])[:8]
    examples = ", ".join(suggestions) or "ViT-B-16"
    raise LangBRTInputError(f"unknown open_clip architecture {arch!r}; known ones include {examples}")


def _model_config(config_arch: str) -> dict:
    import open_clip

    return open_clip.get_model_config(config_arch)


def _check_supported(arch: str, config: dict) -> None:
    """Only CLIP-style text towers (OpenAI key names, bundled BPE tokenizer) load offline; HF-backed text
    towers would fetch their tokenizer or weights from the hub."""
    text_cfg = config.get("text_cfg", {})
    if config.get("custom_text") or "hf_model_name" in text_cfg or "hf_tokenizer_name" in text_cfg:
        raise LangBRTInputError(
            f"open_clip architecture {arch} has a custom or Hugging Face text tower; use an OpenAI-style "
            "CLIP architecture such as ViT-B-16 or ViT-L-14"
        )


@contextmanager
def quiet_random_init_warning() -> Iterator[None]:
    """open_clip warns "No pretrained weights loaded ... initialized randomly"; we load them right after."""

    def drop(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _load_text_tower(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    """Strictly load the text tower: every text key of the model present, no text key the model lacks, every
    shape equal. Image-tower keys in the file (`visual.*`) are ignored."""
    expected = {k for k in model.state_dict() if k not in _NOT_TEXT_KEYS}  # the image tower is gone already
    roots = {k.split(".")[0] for k in expected}
    provided = {k: v for k, v in state.items() if k.split(".")[0] in roots}
    missing = sorted(expected - provided.keys())
    if missing:
        raise CheckpointError(
            f"{path} lacks {len(missing)} text-tower weights of open_clip {arch}, e.g. {missing[:4]}; "
            "is it the CLIP weights of this architecture?"
        )
    unexpected = sorted(provided.keys() - expected)
    if unexpected:
        raise CheckpointError(
            f"{path} has text-tower weights that open_clip {arch} does not, e.g. {unexpected[:4]}; "
            "is it the CLIP weights of another architecture?"
        )
    own = model.state_dict()
    mismatched = [
        f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}"
        for key, value in provided.items()
        if value.shape != own[key].shape
    ]
    if mismatched:
        raise CheckpointError(
            f"{path} does not fit open_clip {arch}: shape mismatch in {mismatched[:3]}; "
            "pass the CLIP weights of this architecture"
        )
    model.load_state_dict(provided, strict=False)

