"""The one configuration of a LangBRT model, passed down to every module and saved in checkpoints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import CheckpointError

PAPER_PREDEFINED_PROMPTS: tuple[str, ...] = (
    "dark circles under the eyes",
    "forehead wrinkles",
    "acne on the cheeks",
)


@dataclass(frozen=True)
class LangBRTConfig:
    """Sizes and switches of E, TBD, T and D.

    The encoder downsamples by 2 per entry of `encoder_channels` (3 entries: /8, so a 512 image gives the
    64x64 latent the transformer works on). `text_dim` must equal the text encoder's output size and is
    checked when a checkpoint is loaded with an encoder.
    """

    image_size: int = 512
    encoder_channels: tuple[int, ...] = (32, 64, 96)
    embed_dim: int = 96
    depth: int = 7
    num_heads: int = 3
    window_size: int = 8
    mlp_ratio: float = 4.0
    position_frequencies: int = 2
    text_dim: int = 384
    text_encoder: str = "minilm:all-MiniLM-L6-v2"
    predefined_prompts: tuple[str, ...] = PAPER_PREDEFINED_PROMPTS
    map_threshold: float = 0.1  # detection probability below which a pixel is left exactly untouched
    map_saturation: float = 0.5  # probability above which the decoder's change is applied in full
    attention: str = "auto"
    discriminator_channels: int = 64
    # Ablations of the paper's Table 2; the defaults are the full model.
    use_detection: bool = True  # False = "w/o TBD": no maps, the decoder's output is used everywhere
    attention_kind: str = "tca"  # "self" = "w/o TCA": plain windowed softmax self-attention over features
    learned_prompts: tuple[str, ...] = ()  # non-empty = "w/o prior": learned embeddings, no text encoder

    def __post_init__(self) -> None:
        assert self.embed_dim % self.num_heads == 0, (self.embed_dim, self.num_heads)
        assert self.encoder_channels[-1] == self.embed_dim, (self.encoder_channels, self.embed_dim)
        assert 0.0 <= self.map_threshold < self.map_saturation <= 1.0, (self.map_threshold, self.map_saturation)
        assert self.attention_kind in ("tca", "self"), self.attention_kind
        stride = self.stride
        assert self.image_size % stride == 0, (self.image_size, stride)

    @property
    def stride(self) -> int:
        """Downsampling factor from image to latent."""
        return 2 ** len(self.encoder_channels)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.stride

    @property
    def map_feature_dim(self) -> int:
        """Channels of the map features m~ fed to K and V: the combined map + a sin/cos position code."""
        return 1 + 4 * self.position_frequencies

    @classmethod
    def paper(cls, **overrides: Any) -> LangBRTConfig:
        """Paper sizes (sec. 4.1.2): 512x512 input, 7 Swin-like blocks (C=96, 3 heads, 8x8 windows), P=3."""
        return cls(**overrides)

    @classmethod
    def small(cls, **overrides: Any) -> LangBRTConfig:
        """The bundled CPU-friendly model: 256x256 input, 32x32 latent, 4 blocks of C=64 in 8x8 windows.

        About 12x fewer FLOPs than `paper()`, so one photo retouches in well under a second on a laptop CPU;
        the runtime pastes its retouch back onto the full-resolution photo.
        """
        values: dict[str, Any] = dict(
            image_size=256,
            encoder_channels=(16, 32, 64),
            embed_dim=64,
            depth=4,
            num_heads=2,
            window_size=8,
            mlp_ratio=2.0,
            discriminator_channels=32,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def tiny(cls, **overrides: Any) -> LangBRTConfig:
        """A model small enough for CPU tests: 64x64 input, 16x16 latent (stride 4), 2 blocks of 4x4 windows."""
        values: dict[str, Any] = dict(
            image_size=64,
            encoder_channels=(16, 32),
            embed_dim=32,
            depth=2,
            num_heads=2,
            window_size=4,
            mlp_ratio=2.0,
            discriminator_channels=16,
        )
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LangBRTConfig:
        """Rebuild from `to_dict()` output; unknown keys are an error (a newer checkpoint format)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"model config has unknown fields {unknown}: written by a newer LangBRT?")
        values = dict(data)
        for name in ("encoder_channels", "predefined_prompts", "learned_prompts"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

