"""LangBRT: E -> TBD -> T -> D, from an image batch and prompts to the retouched image and its maps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import LangBRTConfig
from .errors import LangBRTError, LangBRTInputError
from .modules.decoder import Decoder, blend
from .modules.encoder import Encoder
from .modules.refine import MapRefiner
from .modules.tbd import TextPromptedDetection, gate, no_detection
from .modules.tca import LatentTransformer
from .prompt_maps import regroup_maps
from .text import PromptBank, TextEncoder, normalize_prompt, text_encoder_from_name
from .text.prompts import normalize_prompt_lists

KNOWN_PROMPTS_LISTED = 12
"""How many of a "w/o prior" model's learned prompts an unknown-prompt error names (one trained on FFHQR
has thousands: the whole list made a ~100 KB error line)."""


@dataclass
class LangBRTOutput:
    """What one forward pass returns; every map is at image resolution, K prompts per image."""

    image: torch.Tensor  # (B, 3, H, W) retouched, in [0, 1]
    mask: torch.Tensor  # (B, 1, H, W) gated combined map: 0 where the image is left untouched
    maps: torch.Tensor  # (B, K, H, W) gated map of each prompt (zeros for padding entries)
    soft_mask: torch.Tensor  # (B, 1, H, W) un-gated combined probability (what L_detc supervises)
    soft_maps: torch.Tensor  # (B, K, H, W) un-gated per-prompt probabilities
    residual: torch.Tensor  # (B, 3, H, W) decoder output delta, before gating


@dataclass(frozen=True)
class PromptTable:
    """The prompts of a batch as tensors: one table of unique prompts and who uses which."""

    texts: list[str]  # T normalised prompt texts
    embeddings: torch.Tensor  # (T, D)
    predefined_index: torch.Tensor  # (T,) long: index into the pre-defined prompts, -1 for user prompts
    weights: torch.Tensor  # (B, T) 1.0 where image b uses prompt t
    per_image: list[list[int]]  # for each image, its prompts' indices into the table, in the user's order


class LangBRT(nn.Module):
    """The generator of the paper (E, TBD, T, D); the discriminator lives with training.

    `forward(images, prompts)` takes strings; `forward_table` takes a precomputed prompt table and is
    what export and the runtime use (no text encoder at run time).
    """

    def __init__(self, config: LangBRTConfig, text_encoder: TextEncoder | None = None,
                 prompt_bank: PromptBank | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.tbd = TextPromptedDetection(config) if config.use_detection else None
        self.refiner = MapRefiner(config.encoder_channels[0]) if config.use_detection else None
        self.transformer = LatentTransformer(config)
        self.decoder = Decoder(config)
        if prompt_bank is None:
            prompt_bank = PromptBank(text_encoder, encoder_name=config.text_encoder, dim=config.text_dim)
        elif text_encoder is not None:
            prompt_bank.set_encoder(text_encoder)
        self.prompt_bank = prompt_bank
        self._predefined = {normalize_prompt(p): i for i, p in enumerate(config.predefined_prompts)}
        self._learned = {normalize_prompt(p): i for i, p in enumerate(config.learned_prompts)}
        if self._learned:  # the "w/o prior" ablation: a learned vector per known prompt, no language model
            self.learned_prompt_embeddings = nn.Parameter(torch.randn(len(self._learned), config.text_dim) * 0.02)

    @property
    def predefined_prompts(self) -> list[str]:
        return [normalize_prompt(p) for p in self.config.predefined_prompts]

    @property
    def learned_prompts(self) -> list[str]:
        """The prompts of a model without a language model (the "w/o prior" ablation), each with its own
        learned vector; empty for every other model."""
        return list(self._learned)

    def embed_prompts(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings (N, D) of normalised texts, loading the configured text encoder only if needed."""
        if self._learned:
            unknown = [t for t in texts if t not in self._learned]
            if unknown:
                known = list(self._learned)
                listed = ", ".join(known[:KNOWN_PROMPTS_LISTED])
                more = f" and {len(known) - KNOWN_PROMPTS_LISTED} more" if len(known) > KNOWN_PROMPTS_LISTED else ""
                raise LangBRTInputError(f"prompt {unknown[0]!r} was not learned by this model (it has no "
                                        f"text encoder); known prompts: {listed}{more}")
            return self.learned_prompt_embeddings[[self._learned[t] for t in texts]]
        if self.prompt_bank.encoder is None and any(t not in self.prompt_bank for t in texts):
            try:
                self.prompt_bank.set_encoder(text_encoder_from_name(self.config.text_encoder))
            except LangBRTError:
                pass  # the bank's own error lists the prompts it can answer without an encoder
        return self.prompt_bank.embed(list(texts))

    def prompt_table(self, prompts: Sequence[Sequence[str]], batch_size: int) -> PromptTable:
        """Normalise, de-duplicate and embed the prompts of a batch (one list of strings per image)."""
        lists = normalize_prompt_lists(prompts, batch_size)
        texts = list(dict.fromkeys(text for image_prompts in lists for text in image_prompts))
        position = {text: i for i, text in enumerate(texts)}
        per_image = [[position[text] for text in image_prompts] for image_prompts in lists]
        weights = torch.zeros(batch_size, len(texts))
        for b, indices in enumerate(per_image):
            weights[b, indices] = 1.0
        predefined_index = torch.tensor([self._predefined.get(t, -1) for t in texts], dtype=torch.long)
        return PromptTable(texts, self.embed_prompts(texts), predefined_index, weights, per_image)

    def forward(self, images: torch.Tensor, prompts: Sequence[Sequence[str]] | None = None) -> LangBRTOutput:
        """images (B, 3, H, W) in [0, 1]; prompts: one list of strings per image (default: pre-defined)."""
        self._check_images(images)  # first: a (3, H, W) image would otherwise be "3 images" to the prompt check
        if prompts is None:
            prompts = [list(self.config.predefined_prompts)] * images.shape[0]
        table = self.prompt_table(prompts, images.shape[0])
        out = self.forward_table(images, table.embeddings, table.predefined_index, table.weights)
        return _regroup_maps(out, table.per_image)

    def forward_table(self, images: torch.Tensor, prompt_embeddings: torch.Tensor,
                      predefined_index: torch.Tensor, prompt_weights: torch.Tensor) -> LangBRTOutput:
        """images (B, 3, H, W); table (T, D), (T,), weights (B, T) -> output with maps (B, T, H, W)."""
        vectors = None
        if self.tbd is not None:
            vectors = self.tbd.prompt_vectors(prompt_embeddings.to(images.device, images.dtype),
                                              predefined_index.to(images.device))
        return self.forward_vectors(images, vectors, prompt_weights)

    def forward_vectors(self, images: torch.Tensor, prompt_vectors: torch.Tensor | None,
                        prompt_weights: torch.Tensor) -> LangBRTOutput:
        """Like `forward_table` with the prompts already in feature space: (T, C) for the batch, or (B, T, C)
        each image its own (what an export gathers from its baked table)."""
        self._check_images(images)
        features, skips = self.encoder(images)  # (B, C, h, w)
        if self.tbd is not None and prompt_vectors is not None:
            detection = self.tbd(features, prompt_vectors, prompt_weights.to(images.device, images.dtype))
            attention_map = detection.mask  # (B, 1, h, w)
        else:
            detection = no_detection(features, prompt_weights.shape[1])
            attention_map = torch.zeros_like(detection.mask)  # the transformer gets no map information
        latent = self.transformer(features, attention_map)  # (B, C, h, w)
        residual = self.decoder(latent, skips)  # (B, 3, H, W)
        size = images.shape[-2:]
        soft_mask = upsample_maps(detection.soft_mask, size)  # (B, 1, H, W)
        soft_maps = upsample_maps(detection.soft_maps, size)  # (B, T, H, W)
        if self.refiner is not None:
            fine = self.refiner(skips[0])  # (B, 1, H, W): how blemish-like each pixel is, any prompt
            soft_mask, soft_maps = soft_mask * fine, soft_maps * fine
        mask = self.gate(soft_mask)  # (B, 1, H, W), exactly 0 on normal skin
        # The gate is trained by the detection losses alone: letting the reconstruction loss shrink it would
        # make "edit nothing" the easy way out before the decoder has learned a useful change.
        return LangBRTOutput(
            image=blend(images, residual, mask.detach() if self.training else mask),
            mask=mask,
            maps=self.gate(soft_maps),
            soft_mask=soft_mask,
            soft_maps=soft_maps,
            residual=residual,
        )

    def gate(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Detection probabilities -> the map that gates the blend (see `langbrt.modules.tbd.gate`)."""
        if self.tbd is None:
            return probabilities  # "w/o TBD": the all-ones map edits everywhere
        return gate(probabilities, self.config.map_threshold, self.config.map_saturation)

    def _check_images(self, images: torch.Tensor) -> None:
        stride = self.config.stride
        if not isinstance(images, torch.Tensor):
            raise LangBRTInputError(f"images must be a (B, 3, H, W) tensor, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise LangBRTInputError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if images.shape[0] == 0:  # else a GroupNorm's "Non-empty 4D data tensor expected", deep in the encoder
            raise LangBRTInputError("images is an empty batch (B = 0): give at least one image")
        weights = next(self.parameters())
        # Under autocast (training's --precision bf16, a caller's fp16 region) float images of another dtype
        # are cast per op, as autocast is for: only outside it would the first layer fail on the mismatch.
        autocast = images.is_floating_point() and torch.is_autocast_enabled(images.device.type)
        if images.dtype != weights.dtype and not autocast:  # else "mat1 and mat2 must have the same dtype"
            raise LangBRTInputError(
                f"images are {images.dtype} but the model is {weights.dtype}: pass float values in [0, 1] as "
                f"{weights.dtype} (uint8: images.to({weights.dtype}) / 255), or move the model with .to(dtype)"
            )
        if images.shape[-1] % stride or images.shape[-2] % stride:
            raise LangBRTInputError(
                f"image size {tuple(images.shape[-2:])} must be a multiple of {stride}; "
                f"the runtime resizes any photo to {self.config.image_size}x{self.config.image_size}"
            )
        if images.shape[-2:] == (stride, stride):  # GroupNorm over a 1x1 latent: one value per group for narrow
            raise LangBRTInputError(  # stages (ValueError "Expected more than 1 value per channel")
                f"image size {tuple(images.shape[-2:])} gives a 1x1 latent: pass at least {2 * stride} pixels "
                "on one side"
            )

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write weights (safetensors), config.json and the prompt bank into a folder, written whole and then
        swapped in, so a failure leaves an existing checkpoint there as it was (see `save_checkpoint`).

        A path ending in `.safetensors` writes the single-file form (config in the file's metadata), also atomically.
        """
        from .checkpoint import save_checkpoint

        return save_checkpoint(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, text_encoder: TextEncoder | None = None,
                        expected_config: LangBRTConfig | None = None,
                        map_location: str | torch.device = "cpu") -> LangBRT:
        """Load a checkpoint directory or `.safetensors` file; a config or encoder mismatch raises `CheckpointError`."""
        from .checkpoint import load_checkpoint

        return load_checkpoint(directory, text_encoder=text_encoder, expected_config=expected_config,
                               map_location=map_location)


def upsample_maps(maps: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Latent maps (B, K, h, w) -> (B, K, H, W), bilinear: zero wherever all neighbours are zero."""
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def _regroup_maps(out: LangBRTOutput, per_image: list[list[int]]) -> LangBRTOutput:
    """Table-ordered maps (B, T, H, W) -> each image's own prompts in its order (B, K, H, W)."""
    out.maps = regroup_maps(out.maps, per_image)
    out.soft_maps = regroup_maps(out.soft_maps, per_image)
    return out
