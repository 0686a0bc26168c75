"""The exportable graph: a LangBRT with its prompt table baked in, taking only tensors.

An exported model runs without a text encoder, so the prompts it knows are fixed at export time: the
model's pre-defined prompts, every prompt in its prompt bank and any prompts the user adds, de-duplicated
in that order. Their image-feature-space vectors (`tbd.prompt_vectors`, the "precomputed prompt
embeddings") are computed once here and stored as a constant, so the graph holds no one-hot selection of
the psi_i mapping layers. The runtime names each image's prompts with `prompt_index` (B, K), rows padded
with weight-0 entries (`prompt_weights` (B, K)), and the graph gathers those K vectors per image: maps are
detected, upsampled and refined for the prompts asked for only, never for the whole table (2 079 prompts
for the bundled model, whose every map at full size made an export 9x slower than its checkpoint).

`extra_prompt_slots` E > 0 adds E slots for prompts outside the table: the runtime encodes them itself
and passes `extra_embeddings` (E, D) with `extra_weights` (B, E); unused slots are zeros with weight 0.
Extras are user prompts (no psi_i), so their vector is `tbd.expand(e)` exactly as `prompt_vectors` gives
for predefined_index -1.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from langbrt.checkpoint import weights_sha256
from langbrt.errors import LangBRTInputError
from langbrt.kernels import ENV_VAR, AttentionImpl
from langbrt.kernels.dispatch import environ_set
from langbrt.model import LangBRT
from langbrt.text import normalize_prompt

DEFAULT_EXTRA_PROMPT_SLOTS = 4


@dataclass(frozen=True)
class BakedTable:
    """The prompt table an export carries: texts in order, their embeddings and psi_i index."""

    texts: list[str]  # T normalised prompts
    embeddings: torch.Tensor  # (T, D) float32
    predefined_index: torch.Tensor  # (T,) long, -1 for user prompts


def check_exportable(model: LangBRT, extra_prompt_slots: int) -> None:
    """One `LangBRTInputError` line for the paper's ablation models an export cannot carry as trained.

    Without the text-guided detector (--ablation no-tbd) there are no prompts or maps to bake. Without a
    language model (--ablation no-prior) every prompt is a learned vector: the table bakes them all, and an
    extra prompt slot would be filled by a text encoder the model never trained with (QA, 2026-11-26: ONNX
    ran any prompt, where torch refuses an unknown one).
    """
    if model.tbd is None:
        raise LangBRTInputError("this model has no text-guided detector (trained with --ablation no-tbd): "
                                "there are no prompts to bake, so it cannot be exported; run it with the torch "
                                "backend")
    if model.learned_prompts and extra_prompt_slots:
        raise LangBRTInputError(f"this model has no text encoder (trained with --ablation no-prior): it answers "
                                f"only its {len(model.learned_prompts)} learned prompts, which the export bakes; "
                                "pass --extra-prompt-slots 0")


def baked_table(model: LangBRT, prompts: Sequence[str] | None = None) -> BakedTable:
    """Pre-defined prompts, then a "w/o prior" model's learned ones, then the prompt bank, then `prompts`,
    de-duplicated in that stable order.

    Prompts not in the bank are encoded with the model's text encoder (loaded on demand); an empty prompt
    raises `LangBRTInputError` from `normalize_prompt`.
    """
    texts: list[str] = []
    for text in [*model.predefined_prompts, *model.learned_prompts, *model.prompt_bank.texts, *(prompts or [])]:
        key = normalize_prompt(text)
        if key not in texts:
            texts.append(key)
    predefined = {p: i for i, p in enumerate(model.predefined_prompts)}
    embeddings = model.embed_prompts(texts).float()  # (T, D)
    index = torch.tensor([predefined.get(t, -1) for t in texts], dtype=torch.long)  # (T,)
    return BakedTable(texts, embeddings, index)


class ExportableLangBRT(nn.Module):
    """`forward(images, prompt_index, prompt_weights[, extra_embeddings, extra_weights]) -> (image, mask, maps)`.

    Same maths as `LangBRT.forward_table` over each image's prompts: the baked ones `prompt_index` names,
    then the extras; `maps` is (B, K + E, S, S) in that order. With `extra_prompt_slots == 0` the graph has
    only the first three inputs.
    """

    def __init__(self, model: LangBRT, table: BakedTable,
                 extra_prompt_slots: int = DEFAULT_EXTRA_PROMPT_SLOTS) -> None:
        super().__init__()
        assert extra_prompt_slots >= 0, extra_prompt_slots
        assert len(table.texts) + extra_prompt_slots > 0, "an export needs at least one prompt or extra slot"
        self.model = model
        self.table = table
        self.extra_prompt_slots = extra_prompt_slots
        param = next(model.parameters())
        with torch.no_grad():
            vectors = model.tbd.prompt_vectors(table.embeddings.to(param), table.predefined_index.to(param.device))
        if not len(vectors):  # extras only: a zero row for the padding entries to point at (weight 0)
            vectors = vectors.new_zeros(1, vectors.shape[1])
        self.register_buffer("table_vectors", vectors.detach().clone(), persistent=False)  # (max(T, 1), C)

    @property
    def num_prompts(self) -> int:
        return len(self.table.texts)

    def forward(self, images: torch.Tensor, prompt_index: torch.Tensor, prompt_weights: torch.Tensor,
                extra_embeddings: torch.Tensor | None = None,
                extra_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        vectors, weights = self.table_vectors[prompt_index], prompt_weights  # (B, K, C), (B, K)
        if self.extra_prompt_slots:
            assert extra_embeddings is not None and extra_weights is not None
            extra_vectors = model.tbd.expand(extra_embeddings)  # (E, C): a user prompt skips psi_i
            extra_vectors = extra_vectors[None].expand(images.shape[0], -1, -1)  # (B, E, C)
            vectors = torch.cat([vectors, extra_vectors], dim=1)  # (B, K + E, C)
            weights = torch.cat([weights, extra_weights], dim=1)  # (B, K + E)
        out = model.forward_vectors(images, vectors, weights)
        return out.image, out.mask, out.maps  # (B, 3, S, S), (B, 1, S, S), (B, K + E, S, S)

    def example_inputs(self, batch_size: int = 2, prompts_per_image: int = 3) -> tuple[torch.Tensor, ...]:
        """Inputs of the right shapes for tracing (a batch of 2 and 3 prompts per image, so no size-1 dimension
        gets specialised and the two dynamic sizes differ)."""
        S, D = self.model.config.image_size, self.model.config.text_dim
        index = torch.arange(batch_size * prompts_per_image).remainder(max(self.num_prompts, 1))
        inputs: tuple[torch.Tensor, ...] = (torch.rand(batch_size, 3, S, S),
                                            index.view(batch_size, prompts_per_image).to(torch.int32),
                                            torch.ones(batch_size, prompts_per_image))
        if self.extra_prompt_slots:
            E = self.extra_prompt_slots
            inputs += (torch.zeros(E, D), torch.zeros(batch_size, E))
        device = self.table_vectors.device
        return tuple(t.to(device) for t in inputs)


@contextlib.contextmanager
def traced_attention(impl: AttentionImpl) -> Iterator[None]:
    """Force one attention implementation in every block while tracing, restoring the previous setting after.

    REFERENCE gives a graph of standard ops; PLUGIN_NODE one TensorRT plugin node per TCA attention. The
    environment variable overrides every block's configured choice (see `langbrt.kernels.dispatch`).
    """
    with environ_set(ENV_VAR, impl.value):
        yield


def model_hash(model: LangBRT, checkpoint_dir: str | Path | None = None) -> str:
    """sha256 of the checkpoint's weights file when the model came from one, else of its state dict bytes."""
    from_file = weights_sha256(checkpoint_dir) if checkpoint_dir is not None else None
    if from_file is not None:
        return from_file
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
