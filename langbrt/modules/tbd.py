"""TBD: text-prompted blemish detection (paper eq. 1).

Each prompt embedding e_j is expanded to the feature width (the paper's E(.)); a pre-defined prompt i
additionally goes through its own mapping layer psi_i. The map of prompt j is the per-pixel dot product
<F0, e'_j>, squashed by a sigmoid into a probability p_j. The combined probability is the noisy-OR
1 - prod_j (1 - w_j p_j): the paper sums the maps; the noisy-OR keeps that sum's meaning ("any named
blemish here") while staying in [0, 1] with a gradient everywhere. Eq. 1 sums the P pre-defined prompts' maps
into every image's m, beside its U user prompts; here m combines only the prompts an image is asked (w_j = 1;
the pre-defined ones when none is given), so that a user who names only "acne" gets nothing else retouched.

A sigmoid never reaches 0, so the maps that gate the output blend are thresholded and saturated:
    gated = clamp((p - t) / (s - t), 0, 1),
exactly 0 where p <= t (normal skin stays bit-identical) and exactly 1 where p >= s, so where the detector
is confident the decoder's change is applied in full and need not guess the map's value to undo a soft
gate. Training supervises the soft probabilities, which keep a gradient where the gate is closed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import LangBRTConfig


@dataclass
class DetectionMaps:
    """Latent-resolution maps; T prompts of the table, B images."""

    soft_maps: torch.Tensor  # (B, T, h, w) probabilities p_j, zeroed where the prompt is inactive
    soft_mask: torch.Tensor  # (B, 1, h, w) noisy-OR of the active prompts
    maps: torch.Tensor  # (B, T, h, w) gated maps, exactly 0 on normal skin
    mask: torch.Tensor  # (B, 1, h, w) gated combined map m


def gate(probabilities: torch.Tensor, threshold: float, saturation: float) -> torch.Tensor:
    """clamp((p - t) / (s - t), 0, 1): exactly 0 below the threshold t, exactly 1 above the saturation s."""
    return torch.clamp((probabilities - threshold) / (saturation - threshold), 0.0, 1.0)


class TextPromptedDetection(nn.Module):
    """F0 (B, C, h, w) + prompt table -> per-prompt and combined blemish maps."""

    def __init__(self, config: LangBRTConfig) -> None:
        super().__init__()
        C = config.embed_dim
        P = len(config.predefined_prompts)
        self.threshold = config.map_threshold
        self.saturation = config.map_saturation
        self.feature_head = nn.Sequential(nn.GroupNorm(1, C), nn.Conv2d(C, C, 1))
        self.expand = nn.Sequential(nn.Linear(config.text_dim, C), nn.GELU(), nn.Linear(C, C))  # E(.)
        self.predefined_weight = nn.Parameter(torch.eye(C).repeat(P, 1, 1))  # psi_i: (P, C, C)
        self.predefined_bias = nn.Parameter(torch.zeros(P, C))  # (P, C)
        self.map_bias = nn.Parameter(torch.tensor(-2.0))  # most skin is clean: start with low p
        self.scale = C**-0.5

    def prompt_vectors(self, embeddings: torch.Tensor, predefined_index: torch.Tensor) -> torch.Tensor:
        """Text embeddings (T, D) -> image-feature-space vectors (T, C); index i >= 0 selects psi_i."""
        expanded = self.expand(embeddings)  # (T, C)
        if not len(self.predefined_weight):  # no pre-defined prompts (the config allows none): no psi_i to pick,
            return expanded  # and one_hot over 0 classes would refuse the clamped index 0 of a user prompt
        through_psi = torch.einsum("pdc,tc->ptd", self.predefined_weight, expanded)  # (P, T, C)
        through_psi = through_psi + self.predefined_bias[:, None, :]  # (P, T, C)
        num_predefined = self.predefined_weight.shape[0]
        choose = nn.functional.one_hot(predefined_index.clamp(min=0), num_predefined).to(expanded.dtype)  # (T, P)
        choose = choose * (predefined_index >= 0).to(expanded.dtype)[:, None]  # (T, P), zero for user prompts
        predefined = torch.einsum("tp,ptc->tc", choose, through_psi)  # (T, C)
        is_user = (1.0 - choose.sum(dim=1, keepdim=True))  # (T, 1)
        return is_user * expanded + predefined  # (T, C)

    def forward(self, features: torch.Tensor, prompt_vectors: torch.Tensor,
                prompt_weights: torch.Tensor) -> DetectionMaps:
        f = self.feature_head(features)  # (B, C, h, w)
        if prompt_vectors.dim() == 3:  # (B, T, C): each image its own prompts (an export's prompt_index)
            logits = torch.einsum("bchw,btc->bthw", f, prompt_vectors)  # (B, T, h, w)
        else:  # (T, C): one table for the batch
            logits = torch.einsum("bchw,tc->bthw", f, prompt_vectors)  # (B, T, h, w)
        logits = logits * self.scale + self.map_bias  # (B, T, h, w)
        weights = prompt_weights[:, :, None, None].to(logits.dtype)  # (B, T, 1, 1)
        soft_maps = torch.sigmoid(logits) * weights  # (B, T, h, w)
        soft_mask = 1.0 - torch.prod(1.0 - soft_maps, dim=1, keepdim=True)  # (B, 1, h, w)
        return DetectionMaps(
            soft_maps=soft_maps,
            soft_mask=soft_mask,
            maps=gate(soft_maps, self.threshold, self.saturation),
            mask=gate(soft_mask, self.threshold, self.saturation),
        )


def no_detection(features: torch.Tensor, num_prompts: int) -> DetectionMaps:
    """The "w/o TBD" ablation: no prompt maps, and a combined map of ones so the whole image is edited."""
    B, _, h, w = features.shape
    zeros = features.new_zeros(B, num_prompts, h, w)  # (B, T, h, w)
    ones = features.new_ones(B, 1, h, w)  # (B, 1, h, w)
    return DetectionMaps(soft_maps=zeros, soft_mask=ones, maps=zeros, mask=ones)
