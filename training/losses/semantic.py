"""Eq. 10: the Alpha-CLIP semantic term, differentiable end to end.

Alpha-CLIP (SunzeY/AlphaCLIP) is CLIP's image tower plus one extra patch embedding for an alpha (region) mask:
the first layer computes conv1(image) + conv1_alpha(alpha). We build the tower with open_clip (random weights,
`pretrained=None`, never downloads), attach `conv1_alpha` to it, and load the user's Alpha-CLIP checkpoint;
after `canonical_key` (Alpha-CLIP spells `attn.in_proj.weight`, open_clip `attn.in_proj_weight`) the key
names are the same. Unlike RetouchGPT's Alpha-CLIP loss (computed under no_grad on a PIL image, so nothing
reaches the generator), every step here - resize, normalisation, the tower - is a tensor op, so the gradient
reaches the generator's output.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from langbrt.errors import CheckpointError, LangBRTInputError
from langbrt.text.clip_weights import canonical_key
from langbrt.text.encoder import TextEncoder
from langbrt.text.offline import hub_offline
from langbrt.text.open_clip_backend import config_arch_of, named_arch, quiet_random_init_warning
from langbrt.weights_file import read_state_dict

ALPHA_KEY = "conv1_alpha.weight"
_VISUAL_PREFIX = "visual."
# Alpha-CLIP's mask preprocessing: ToTensor -> Resize -> Normalize(0.5, 0.26): a binary mask becomes +-1.923.
ALPHA_MEAN = 0.5
ALPHA_STD = 0.26
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class AlphaClipVisual(nn.Module):
    """Frozen Alpha-CLIP image tower: forward(images (N, 3, H, W) in [0, 1], masks (N, 1, H, W) in [0, 1])
    -> (N, D) image embeddings (not normalised). Resizing to the tower's input size and the CLIP / alpha
    normalisations happen inside, differentiably."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        conv1 = visual.conv1
        # Registered on the tower itself so that its state dict uses Alpha-CLIP's own names.
        visual.conv1_alpha = nn.Conv2d(
            1, conv1.out_channels, kernel_size=conv1.kernel_size, stride=conv1.stride, bias=False
        )
        self.visual = visual
        self.image_size = tuple(visual.image_size)  # (S, S)
        self.register_buffer("mean", torch.tensor(_CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(cls, arch: str, visual_checkpoint: str | Path) -> "AlphaClipVisual":
        """Build open_clip `arch` and load an Alpha-CLIP image-tower checkpoint (keys `conv1.weight`,
        `conv1_alpha.weight`, ..., optionally under `visual.` or DDP prefixes). Alpha-CLIP is OpenAI CLIP
        fine-tuned, so QuickGELU: pass e.g. "ViT-B-16-quickgelu" (the same arch as the CLIP text encoder)."""
        import open_clip

        path = Path(visual_checkpoint)
        if not path.is_file():
            raise LangBRTInputError(f"Alpha-CLIP weights file not found: {path}")
        config_arch, force_quick_gelu = config_arch_of(named_arch(arch, None))
        state = _visual_state_dict(read_state_dict(path, "Alpha-CLIP weights"), path)
        with hub_offline(), quiet_random_init_warning():
            model = open_clip.create_model(
                config_arch, pretrained=None, force_quick_gelu=force_quick_gelu, device="cpu", precision="fp32"
            )
        module = cls(model.visual)
        _load_strict(module.visual, state, path, arch)
        return module

    def train(self, mode: bool = True) -> "AlphaClipVisual":
        """Always eval: the tower is a fixed prior, whatever mode the trainer sets."""
        return super().train(False)

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        images = (images - self.mean) / self.std  # (N, 3, S, S), CLIP-normalised
        alpha = F.interpolate(masks, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        alpha = (alpha - ALPHA_MEAN) / ALPHA_STD  # (N, 1, S, S): 1 -> +1.923, 0 -> -1.923

        def add_alpha(_module: nn.Module, _inputs: tuple, patches: torch.Tensor) -> torch.Tensor:
            return patches + self.visual.conv1_alpha(alpha)  # (N, width, S/p, S/p)

        # open_clip's own forward, with the alpha patch embedding added to conv1's output for this call only.
        handle = self.visual.conv1.register_forward_hook(add_alpha)
        try:
            return self.visual(images)  # (N, D)
        finally:
            handle.remove()


def _visual_state_dict(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Canonical names of the image tower's tensors; a full CLIP dump keeps only its `visual.` part."""
    state = {canonical_key(key): value for key, value in state.items()}
    if any(key.startswith(_VISUAL_PREFIX) for key in state):
        state = {key[len(_VISUAL_PREFIX):]: v for key, v in state.items() if key.startswith(_VISUAL_PREFIX)}
    if ALPHA_KEY not in state:
        raise CheckpointError(
            f"{path} has no {ALPHA_KEY!r}: it is a plain CLIP image tower, not Alpha-CLIP; pass an Alpha-CLIP "
            "visual checkpoint (e.g. clip_b16_grit1m_fultune_8xe.pth) to --alpha-clip-weights"
        )
    return state


def _load_strict(visual: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    own = visual.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the open_clip {arch} image tower (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); pass the Alpha-CLIP checkpoint of this architecture with merged (non-LoRA) weights"
        )
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"{path} does not fit open_clip {arch}: shape mismatch in {wrong[:3]}")
    visual.load_state_dict(state)


class SemanticLoss(nn.Module):
    """Eq. 10: cosine similarity, in Alpha-CLIP space, between the generated image seen through each valid
    prompt's region mask and that blemish prompt's text embedding, averaged over each image's valid prompts and
    then over the images (eq. 10's E_x; an image without a valid prompt adds 0). The trainer minimises gamma
    times this (eq. 11's -gamma L_local: pushing the retouched region away from its blemish description).

    Why per image first (eq. 10 sums over an image's prompts; we average them, so that gamma does not grow with
    the number of prompts): a batch's loss is then the mean of its images' losses, so a global batch spread over
    torchrun ranks trains as it does in one process. A mean over every valid slot of the batch weighed the
    images with more prompts more, and differed by 13 % between 2 ranks x batch 1 and 1 x batch 2 (QA).

    Text embeddings come from the frozen text encoder (CLIP's text tower paired with this Alpha-CLIP) and are
    cached per prompt string; only the image path carries gradient.
    """

    def __init__(self, visual: AlphaClipVisual, text_encoder: TextEncoder) -> None:
        super().__init__()
        self.visual = visual
        self.text_encoder = text_encoder
        self._text_cache: dict[str, torch.Tensor] = {}

    def _text_embeddings(self, texts: list[str], device: torch.device) -> torch.Tensor:
        new = sorted({text for text in texts if text not in self._text_cache})
        if new:
            for text, embedding in zip(new, self.text_encoder.encode(new), strict=True):
                self._text_cache[text] = embedding  # (D,), L2-normalised, CPU
        return torch.stack([self._text_cache[text] for text in texts]).to(device)  # (N, D)

    def forward(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        prompts: list[list[str]],
        prompt_valid: torch.Tensor,
    ) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1]; masks (B, K, H, W); prompts B lists of K strings; prompt_valid (B, K)
        bool. Returns a scalar in [-1, 1]; 0 (no gradient) when no prompt slot is valid."""
        assert masks.shape[:2] == prompt_valid.shape, (tuple(masks.shape), tuple(prompt_valid.shape))
        pairs = prompt_valid.nonzero()  # (N, 2): (b, k) of every valid slot
        if pairs.numel() == 0:
            return images.new_zeros(())
        b, k = pairs[:, 0], pairs[:, 1]  # (N,), (N,)
        texts = [prompts[i][j] for i, j in pairs.tolist()]
        image_emb = self.visual(images[b], masks[b, k].unsqueeze(1).to(images.dtype))  # (N, D)
        text_emb = self._text_embeddings(texts, images.device).to(image_emb.dtype)  # (N, D)
        assert image_emb.shape == text_emb.shape, (tuple(image_emb.shape), tuple(text_emb.shape))
        cosine = (F.normalize(image_emb, dim=-1) * text_emb).sum(dim=-1)  # (N,)
        return mean_per_image(cosine, b, prompt_valid)


def mean_per_image(values: torch.Tensor, image: torch.Tensor, prompt_valid: torch.Tensor) -> torch.Tensor:
    """The mean over images (B) of each image's mean over its valid prompt slots, from `values` (N,) of the
    valid slots (`prompt_valid` (B, K) nonzero, in order) and `image` (N,) their image indices; an image
    without a valid slot counts 0. Independent of how a batch is split: see `SemanticLoss`."""
    per_image = values.new_zeros(prompt_valid.shape[0]).index_add(0, image, values)  # (B,) sums
    return (per_image / prompt_valid.sum(dim=1).clamp_min(1).to(values.dtype)).mean()
