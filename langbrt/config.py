"""The one configuration of a LangBRT model, passed down to every module and saved in checkpoints."""

from __future__ import annotations

import dataclasses
import reprlib
import typing
from dataclasses import dataclass
from typing import Any

from .errors import CheckpointError, LangBRTInputError
from .json_dataclass import dataclass_from_json, describe, field_types, fits

PAPER_PREDEFINED_PROMPTS: tuple[str, ...] = (
    "dark circles under the eyes",
    "forehead wrinkles",
    "acne on the cheeks",
)
"""The P = 3 pre-defined prompts. The paper's examples (sec. 3.2) name the third "acne on the right cheek"; ours
names both cheeks, the face region its eq. 6 mask covers, so that a horizontally flipped training sample keeps
the same pre-defined prompt and region (one side would flip into the other prompt)."""


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
        """Refuse a config no model can be built from, in one line (`LangBRTInputError`).

        Why not assertions: a config also arrives from a checkpoint's config.json, which a person can edit;
        `embed_dim: 32` there used to surface as a bare AssertionError, `window_size: 0` as a ZeroDivisionError.
        """
        _check_types(self)
        for name in ("image_size", "embed_dim", "depth", "num_heads", "window_size", "text_dim",
                     "discriminator_channels"):
            if getattr(self, name) < 1:
                raise LangBRTInputError(f"model config: {name} must be at least 1, got {getattr(self, name)}")
        for name, most in MAX_SIZES.items():  # before anything is sized by them
            value = getattr(self, name)
            size, unit = (len(value), " entries") if isinstance(value, tuple) else (value, "")
            if size > most:
                raise LangBRTInputError(f"model config: {name} is at most {most}{unit}, got {size}{unit}")
        if not self.encoder_channels or min(self.encoder_channels) < 1:
            raise LangBRTInputError(f"model config: encoder_channels must be positive sizes, got "
                                    f"{list(self.encoder_channels)}")
        _check_prompts(self)
        if self.image_size > MAX_IMAGE_SIZE or max(self.encoder_channels) > MAX_WIDTH or self.text_dim > MAX_WIDTH:
            raise LangBRTInputError(f"model config: image_size is at most {MAX_IMAGE_SIZE} and channel widths at "
                                    f"most {MAX_WIDTH}, got {self.image_size} and "
                                    f"{max(self.encoder_channels)}/{self.text_dim}")
        if self.attention not in ATTENTION_IMPLS:
            raise LangBRTInputError(f"model config: attention must be one of {', '.join(ATTENTION_IMPLS)}, got "
                                    f"{self.attention!r}")
        if self.position_frequencies < 0 or not 0.0 < self.mlp_ratio <= MAX_MLP_RATIO:
            raise LangBRTInputError(f"model config: position_frequencies must be >= 0 and mlp_ratio in "
                                    f"(0, {MAX_MLP_RATIO}], got {self.position_frequencies} and {self.mlp_ratio}")
        if self.embed_dim % self.num_heads:
            raise LangBRTInputError(f"model config: embed_dim {self.embed_dim} is not divisible by num_heads "
                                    f"{self.num_heads}")
        if self.encoder_channels[-1] != self.embed_dim:
            raise LangBRTInputError(f"model config: the last encoder_channels entry ({self.encoder_channels[-1]}) "
                                    f"must equal embed_dim ({self.embed_dim})")
        if not 0.0 <= self.map_threshold < self.map_saturation <= 1.0:  # also false for NaN
            raise LangBRTInputError(f"model config: need 0 <= map_threshold < map_saturation <= 1, got "
                                    f"{self.map_threshold} and {self.map_saturation}")
        if self.attention_kind not in ATTENTION_KINDS:
            raise LangBRTInputError(f"model config: attention_kind must be one of {', '.join(ATTENTION_KINDS)}, "
                                    f"got {self.attention_kind!r}")
        if self.image_size % self.stride:
            raise LangBRTInputError(f"model config: image_size {self.image_size} is not a multiple of the "
                                    f"encoder's stride {self.stride}")
        if self.latent_size < 2:  # see `LangBRT._check_images`: a one-cell latent is no model, and cannot run
            raise LangBRTInputError(f"model config: image_size {self.image_size} gives a 1x1 latent; it must be at "
                                    f"least twice the encoder's stride {self.stride}")

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
        """Paper sizes (sec. 4.1.2): 512x512 input, 7 Swin-like blocks (C=96, 3 heads, 8x8 windows), P=3.

        The paper's blocks are configured "the same as SwinTransformer", whose Swin-T starts at C=96 with 3 heads
        in 7x7 windows. We keep C and the heads but use 8x8 windows, which tile the 64x64 latent exactly (7x7
        windows would pad it to 70x70), and one stage at the latent's resolution: T transforms features for the
        decoder, so it has no patch merging (README, "Where we differ from the paper").
        """
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
    def from_dict(cls, data: Any) -> LangBRTConfig:
        """Rebuild from `to_dict()` output (a checkpoint's "model" entry); anything that is not a valid config,
        unknown keys included (a newer checkpoint format), is one `CheckpointError` line."""
        try:
            return dataclass_from_json(cls, data, "model config", CheckpointError)
        except LangBRTInputError as err:
            raise CheckpointError(str(err)) from None


ATTENTION_KINDS = ("tca", "self")
ATTENTION_IMPLS = ("auto", "triton", "reference", "plugin-node")  # `kernels.AttentionImpl`'s values (a test pins it)
MAX_IMAGE_SIZE = 4096  # 8x the paper's 512: beyond it a config is a typo, not a model anyone can run
MAX_WIDTH = 8192
MAX_MLP_RATIO = 64.0
# Bounds on the other sizes, for the same reason: a hand-edited config.json is built before its weights are
# read, and `"depth": 1000000000` grew the process to 18 GB before any error. Each is several times the paper's
# (sec. 4.1.2) and far beyond any preset; the number of encoder stages is what MAX_IMAGE_SIZE allows (stride 2
# each, and image_size must be at least twice the stride).
MAX_SIZES = {
    "depth": 64,  # paper 7 blocks
    "num_heads": 64,  # paper 3
    "window_size": 64,  # paper 8; a window larger than the latent is clamped to it anyway
    "position_frequencies": 16,  # paper 2; 2**16 cycles across a latent of at most 512 is noise
    "discriminator_channels": 512,  # paper 64; the PatchGAN quadruples it in its last layers
    "encoder_channels": MAX_IMAGE_SIZE.bit_length() - 2,  # entries: 11 stages give stride 2048, a 2x2 latent
    "predefined_prompts": 64,  # paper 3; each owns a (C, C) matrix psi_i
    "learned_prompts": 65536,  # the no-prior ablation learns one vector per synthetic prompt (2172)
}


def _check_prompts(config: LangBRTConfig) -> None:
    """Every baked prompt is one a user could type (`normalize_prompt`), said with its place in the config, and
    distinct once normalised: each owns a psi_i or a learned vector, looked up by the normalised text (a
    repeated learned prompt indexed past the end of the learned embeddings)."""
    from .text.prompts import normalize_prompt

    for name in ("predefined_prompts", "learned_prompts"):
        seen: dict[str, int] = {}
        for i, prompt in enumerate(getattr(config, name)):
            try:
                key = normalize_prompt(prompt)
            except LangBRTInputError as err:
                raise LangBRTInputError(f"model config: {name}[{i}]: {err}") from None
            if key in seen:
                raise LangBRTInputError(f"model config: {name}[{i}] repeats {name}[{seen[key]}] ({prompt!r})")
            seen[key] = i
    _check_predefined_are_learned(config)


def _check_predefined_are_learned(config: LangBRTConfig) -> None:
    """A "w/o prior" model (learned_prompts set) embeds only its learned prompts: a pre-defined prompt outside
    them made every default forward (no prompts given) and every export, which bakes the pre-defined prompts
    first, fail on a prompt "not learned by this model"."""
    from .text.prompts import normalize_prompt

    if not config.learned_prompts:
        return
    learned = {normalize_prompt(p) for p in config.learned_prompts}
    for i, prompt in enumerate(config.predefined_prompts):
        if normalize_prompt(prompt) not in learned:
            raise LangBRTInputError(f"model config: predefined_prompts[{i}] ({prompt!r}) must also be one of "
                                    "learned_prompts: a model without a text encoder embeds only those")


def _check_types(config: LangBRTConfig) -> None:
    """Each field has its declared type (see `json_dataclass.fits`); tuple fields hold tuples, so that a config
    built in code with a list still hashes and compares equal to the same config read from JSON."""
    for name, hint in field_types(LangBRTConfig).items():
        value = getattr(config, name)
        if not fits(hint, value) or (typing.get_origin(hint) is tuple and not isinstance(value, tuple)):
            raise LangBRTInputError(f"model config: {name} must be {describe(hint)}, got {reprlib.repr(value)}")
