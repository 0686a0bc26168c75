"""The one configuration of a training run, passed down to the loop and written to OUTPUT/train_config.json.

Everything that decides what a run computes lives here (data, subset, schedule, loss weights, model preset,
seed), so `train_config.json` beside the checkpoints is enough to reproduce or resume a run. Paths to
frozen helper networks (VGG, Alpha-CLIP, CLIP text weights) are recorded too, but not their contents.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from langbrt.config import MAX_IMAGE_SIZE, LangBRTConfig
from langbrt.errors import ConfigValueError, LangBRTInputError
from langbrt.json_dataclass import dataclass_from_json, parse_json
from langbrt.text.minilm import MINILM_NAME
from langbrt.text.open_clip_backend import OPEN_CLIP_PREFIX
from langbrt.text.prompts import normalize_prompt
from langbrt.training.losses.detection import DEFAULT_DETECTION_LOSS, DETECTION_LOSSES
from langbrt.training.losses.weights import LossWeights

PRESETS = ("tiny", "small", "paper")
"""Model sizes `--preset` accepts: `LangBRTConfig.tiny()` (64x64, CPU tests), `.small()` (256x256, the
bundled CPU model) and `.paper()` (512x512)."""

PRECISIONS = ("fp32", "bf16")
"""`--precision`: fp32, or bf16 autocast around the forward passes (weights and optimizer stay fp32)."""

ABLATIONS = ("none", "no-tbd", "no-tca", "no-prior")
"""`--ablation`: the full model, or the paper's Table 2 variants (w/o TBD, w/o TCA, w/o the language prior;
w/o L_local is `--semantic-weight 0`). `TrainConfig.loss_weights` says which loss terms each one drops."""

MAX_SEED = 2**32 - 1
"""numpy's seed range, the narrowest of the three generators a run seeds."""

FLOAT32_MAX = 3.4028234663852886e38
"""The optimizer multiplies fp32 tensors by `--lr`: a larger value overflows there."""

MAX_SIZES = {
    "synthetic_length": 100_000_000,  # the run draws a permutation of it (8 bytes each): 800 MB at most
    "batch_size": 4096,  # the paper trains with 1; 4096 images of the smallest size fill a large GPU
    "num_workers": 256,  # DataLoader processes: more than any machine has cores
    "ddp_timeout": 7 * 24 * 3600,  # seconds: a week; a collective stuck that long is a hang, not a slow step
}
"""Bounds on sizes a run allocates by (a hand-edited train_config.json is read before anything checks them:
`"synthetic_length": 1e15` ended in torch.randperm's allocation failure); generous, far beyond any real run."""

MIN_IMAGE_SIZE = 32
"""Smallest `--image-size` the PatchGAN discriminator accepts (its logits are H/8 - 2 wide)."""

MODEL_FIELDS = ("preset", "image_size", "map_threshold", "ablation", "text_encoder")
"""Fields that decide the model's shape or behaviour: a resumed run keeps the checkpoint's, so changing one
on resume is an error rather than a config that contradicts the weights."""

SYNTHETIC = "synthetic"
FFHQR = "ffhqr"

DDP_TIMEOUT_S = 1800
"""`--ddp-timeout`'s default, the time limit of the process group's collectives under torchrun: 30 minutes, as
gloo's default and Hugging Face Trainer's `ddp_timeout`, set for nccl too, whose default in torch 2.14 is 10 minutes.
Work that one rank does while the others wait in a collective (a checkpoint written to a slow network disk,
the alignment check of a training set's pairs) must fit in it, or the waiting ranks end the job."""


@dataclass
class TrainConfig:
    """A training run. The optimiser and schedule follow the paper, sec. 4.1.2 (Adam 2e-4 with cosine decay, 25k
    steps, batch 1); not the paper's: the tiny preset (a CPU runs it; `preset="paper"` is the paper's model),
    flips, the weight EMA and the BCE detection loss (README, "Where we differ from the paper")."""

    data: str = SYNTHETIC  # "synthetic", "ffhqr" (with ffhqr_root) or a folder holding source/ + target/
    output: str = "runs/langbrt"
    ffhqr_root: str | None = None
    ffhqr_target_root: str | None = None
    fraction: float = 1.0
    synthetic_length: int = 2048  # samples in the synthetic training set (generated on the fly)
    real_faces: tuple[str, ...] = ()  # regions files of clean real face photos used as synthetic bases
    real_fraction: float = 0.3  # share of synthetic samples drawn on a real base (when real_faces is set)
    prompts: tuple[str, ...] = ()  # what every real pair answers unless prompts.json names its own; (): the default
    steps: int = 25_000
    batch_size: int = 1
    lr: float = 2e-4
    min_lr: float = 0.0  # where the cosine decay ends
    warmup_steps: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.0  # 0: no clipping
    weights: LossWeights = field(default_factory=LossWeights)  # paper: beta=10, gamma=eta=1
    preset: str = "tiny"
    image_size: int | None = None  # None: the preset's size
    map_threshold: float | None = None  # None: the preset's gate threshold on the detection maps
    detection_loss: str = DEFAULT_DETECTION_LOSS  # one of DETECTION_LOSSES: "l1" is the paper's eq. 5, see map_loss
    ablation: str = "none"  # one of ABLATIONS: the paper's Table 2 variants
    text_encoder: str = "minilm"  # "minilm" or "open_clip:ARCH"
    clip_text_weights: str | None = None
    vgg_weights: str | None = None
    alpha_clip_weights: str | None = None
    precision: str = "fp32"
    seed: int = 0
    strict: bool = False
    strict_pairs: bool = False  # a pair that looks misaligned stops the run (else: one warning)
    flip: bool = True
    ema_decay: float = 0.999  # 0: no EMA, the checkpoint holds the raw weights
    num_workers: int = 0
    log_every: int = 10
    image_every: int = 500
    checkpoint_every: int = 1000
    init: str | None = None  # a checkpoint folder whose weights the run starts from (fine-tuning); None: random
    val: str | None = None  # held-out pairs scored during training: a source/ + target/ folder or "synthetic"
    val_every: int | None = None  # steps between validations; None: every checkpoint_every
    val_samples: int = 64  # at most this many held-out pairs (synthetic: exactly this many test samples)
    # Under torchrun: how long a rank waits in a collective for the others before the job fails (`distributed.py`).
    ddp_timeout: int = DDP_TIMEOUT_S
    # The current folder of the process that trained: the relative paths above are relative to it (`run_paths`);
    # None in configs written before 2026-11-28. The trainer records it; a user never sets it.
    workdir: str | None = None

    def validate(self) -> None:
        """Raise `ConfigValueError` for a value the run cannot use: one line naming the option (`from_dict`
        words it as the file and the field)."""
        for name, choices in (("ablation", ABLATIONS), ("detection_loss", DETECTION_LOSSES), ("preset", PRESETS),
                              ("precision", PRECISIONS)):
            if getattr(self, name) not in choices:
                raise ConfigValueError(name, f"must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.data == FFHQR and not self.ffhqr_root:
            raise ConfigValueError("ffhqr_root", "must name the FFHQR folder when data is ffhqr",
                                   "--data ffhqr needs --ffhqr-root DIR (the FFHQR folder)")
        positive = {"steps": self.steps, "batch_size": self.batch_size, "synthetic_length": self.synthetic_length,
                    "log_every": self.log_every, "image_every": self.image_every,
                    "checkpoint_every": self.checkpoint_every, "val_every": self.validation_every(),
                    "val_samples": self.val_samples, "ddp_timeout": self.ddp_timeout}
        for name, value in positive.items():
            if value < 1:
                raise ConfigValueError(name, f"must be at least 1, got {value}")
        for name, most in MAX_SIZES.items():
            if getattr(self, name) > most:
                raise ConfigValueError(name, f"is at most {most}, got {getattr(self, name)}")
        if not 0 < self.lr <= FLOAT32_MAX:
            raise ConfigValueError("lr", f"must be a positive finite number (at most {FLOAT32_MAX:.1e}), got {self.lr}")
        if not all(0.0 <= beta < 1.0 for beta in self.betas):  # also false for NaN
            raise ConfigValueError("betas", f"must be two numbers in [0, 1) (Adam's), got {list(self.betas)}",
                                   f"betas must be two numbers in [0, 1) (Adam's), got {list(self.betas)}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigValueError("seed", f"must be in [0, 2**32 - 1], got {self.seed}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigValueError("ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigValueError("fraction", f"must be in (0, 1], e.g. 0.01 for 1% of the data; got {self.fraction}")
        if not 0.0 <= self.min_lr <= self.lr:
            raise ConfigValueError("min_lr", f"must be in [0, lr {self.lr}], got {self.min_lr}",
                                   f"--min-lr must be in [0, --lr {self.lr}], got {self.min_lr}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ConfigValueError("warmup_steps", f"must be in [0, steps {self.steps}), got {self.warmup_steps}",
                                   f"--warmup-steps must be in [0, --steps {self.steps}), got {self.warmup_steps}")
        if not 0.0 <= self.grad_clip < math.inf:
            raise ConfigValueError("grad_clip", f"must be a finite number > 0 (or 0: off), got {self.grad_clip}")
        self._validate_prompts()
        if not 0.0 <= self.real_fraction <= 1.0:
            raise ConfigValueError("real_fraction", f"must be in [0, 1], got {self.real_fraction}")
        if self.num_workers < 0:
            raise ConfigValueError("num_workers", f"must be 0 (load in the main process) or more, got "
                                                  f"{self.num_workers}")
        if self.text_encoder.startswith(OPEN_CLIP_PREFIX) and not self.clip_text_weights:
            raise ConfigValueError("clip_text_weights", f"must name the CLIP text-tower weights for text_encoder "
                                                        f"{self.text_encoder}",
                                   f"--text-encoder {self.text_encoder} needs its CLIP text-tower weights: pass "
                                   "--clip-text-weights PATH")
        self._validate_model_overrides()

    def _validate_prompts(self) -> None:
        """--prompt names what real pairs answer: the synthetic set draws its own per scene, where it would be
        silently ignored, so it is an error there; each prompt must be one the model can be asked."""
        if self.prompts and self.data == SYNTHETIC:
            raise ConfigValueError("prompts", "must be empty for data synthetic, which draws its own prompts per scene",
                                   "--prompt is for real pairs (--data DIR or ffhqr); --data synthetic draws its own "
                                   "prompts for every scene: drop --prompt")
        for prompt in self.prompts:
            try:
                normalize_prompt(prompt)
            except LangBRTInputError as err:
                raise ConfigValueError("prompts", f"holds an unusable one: {err}", f"--prompt: {err}") from None

    def _validate_model_overrides(self) -> None:
        """--image-size and --map-threshold against the preset, as one line instead of `LangBRTConfig`'s
        developer assertions."""
        preset = getattr(LangBRTConfig, self.preset)()
        if self.image_size is not None:
            smallest = max(MIN_IMAGE_SIZE, preset.stride)
            if not smallest <= self.image_size <= MAX_IMAGE_SIZE or self.image_size % preset.stride:
                sizes, got = f"a multiple of {preset.stride} from {smallest} to {MAX_IMAGE_SIZE}", self.image_size
                raise ConfigValueError("image_size", f"must be {sizes} for preset {self.preset}, got {got}",
                                       f"--image-size must be {sizes} for --preset {self.preset}, got {got}")
        if self.map_threshold is not None and not 0.0 <= self.map_threshold < preset.map_saturation:
            raise ConfigValueError("map_threshold", f"must be in [0, {preset.map_saturation}) (below the map "
                                                    f"saturation), got {self.map_threshold}")

    def validation_every(self) -> int:
        """Steps between validations: `val_every`, else the checkpoint interval, so that each checkpoint's
        shipped weights get their held-out scores in the log."""
        return self.val_every if self.val_every is not None else self.checkpoint_every

    def loss_weights(self) -> LossWeights:
        """The weights this run trains with: `weights`, less the terms its ablation removes.

        no-tbd has no detection maps (the gate is all ones), so eq. 5, eq. 6 and the per-prompt map loss
        would add a constant without gradient. no-prior is the paper's "w/o Prior" (sec. 4.4): no
        vision-language pre-training "for blemish detection and semantic regularization", so the learned
        prompt embeddings (`model_config`) and no Alpha-CLIP term (eq. 10 lives in Alpha-CLIP's space).
        """
        if self.ablation == "no-tbd":
            return replace(self.weights, detection=0.0, component=0.0)
        if self.ablation == "no-prior":
            return replace(self.weights, semantic=0.0)
        return self.weights

    def text_encoder_name(self) -> str:
        """The encoder's full name as checkpoints record it ('minilm' is short for MiniLM's)."""
        return MINILM_NAME if self.text_encoder in ("minilm", MINILM_NAME) else self.text_encoder

    def model_settings(self) -> dict[str, Any]:
        """The `MODEL_FIELDS` as the model sees them: preset defaults filled in, the encoder's full name."""
        preset = getattr(LangBRTConfig, self.preset)()
        settings = {"preset": self.preset,
                    "image_size": self.image_size if self.image_size is not None else preset.image_size,
                    "map_threshold": self.map_threshold if self.map_threshold is not None else preset.map_threshold,
                    "ablation": self.ablation, "text_encoder": self.text_encoder_name()}
        assert tuple(settings) == MODEL_FIELDS, (tuple(settings), MODEL_FIELDS)
        return settings

    def model_config(self) -> LangBRTConfig:
        """The model this run trains; the text encoder's name and dim are filled in by the trainer."""
        overrides: dict[str, Any] = {}
        if self.image_size is not None:
            overrides["image_size"] = self.image_size
        if self.map_threshold is not None:
            overrides["map_threshold"] = self.map_threshold
        if self.ablation == "no-tbd":
            overrides["use_detection"] = False
        elif self.ablation == "no-tca":
            overrides["attention_kind"] = "self"
        elif self.ablation == "no-prior":
            from langbrt.training.data.blemish_types import paraphrases, valid_specs

            # One learned vector per prompt string the synthetic set can draw: without a language model,
            # paraphrases of the same request share nothing, which is what this ablation measures.
            overrides["learned_prompts"] = tuple(sorted({p for spec in valid_specs() for p in paraphrases(spec)}))
        return getattr(LangBRTConfig, self.preset)(**overrides)

    @classmethod
    def settings_of(cls, model: LangBRTConfig) -> TrainConfig | None:
        """A config whose model settings (`MODEL_FIELDS`) build `model`'s architecture, or None when no preset
        and ablation do (a `LangBRTConfig` written by hand).

        Why: a checkpoint saved with `LangBRT.save_pretrained` has the model's config.json but no
        train_config.json, and a run started from its weights (`--init`) still records, checks and reports
        its model by preset. The text encoder's dim and the attention implementation are the loaded model's
        own, not settings of the run.
        """
        for preset in PRESETS:
            for ablation in ABLATIONS:
                candidate = cls(preset=preset, image_size=model.image_size, map_threshold=model.map_threshold,
                                ablation=ablation, text_encoder=model.text_encoder)
                try:
                    candidate.validate()
                    built = candidate.model_config()
                except (ConfigValueError, LangBRTInputError):
                    continue  # a size this preset cannot have
                if dataclasses.replace(built, text_encoder=model.text_encoder, text_dim=model.text_dim,
                                       attention=model.attention) == model:
                    return candidate
        return None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any, source: str = "train config") -> TrainConfig:
        """Rebuild from `to_dict()` output read from `source`, checked (`validate`); anything that is not a
        usable train config (unknown keys included: a config written by a newer LangBRT) is one
        `LangBRTInputError` line naming `source` and the field, not the flag a user did not give."""
        cfg = dataclass_from_json(cls, data, source, LangBRTInputError)
        try:
            cfg.validate()
        except ConfigValueError as err:
            raise LangBRTInputError(f"{source}: {err.field} {err.problem}") from None
        return cfg

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise LangBRTInputError(f"{path}: unreadable train config ({err})") from None
        return cls.from_dict(parse_json(text, f"{path}: unreadable train config", LangBRTInputError), str(path))
