"""The VGG-19 term of eq. 9: sum over layers l of ||Phi_l(y) - Phi_l(y_hat)||_1.

Written without torchvision (its wheels break beside some torch builds, and its model constructors are where
silent weight downloads happen). The conv stack is laid out exactly as torchvision's `vgg19().features`, so
the keys of torchvision's `vgg19-dcbb9e9d.pth` (`features.N.weight/bias`) load directly. Weights come only
from a local file or the torch hub cache; nothing is downloaded.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from langbrt.errors import CheckpointError, LangBRTInputError
from langbrt.weights_file import read_state_dict

VGG19_FILENAME = "vgg19-dcbb9e9d.pth"  # torchvision's release name; the hub cache keeps it under this name
_POOL = "M"
_VGG19_LAYOUT = (64, 64, _POOL, 128, 128, _POOL, 256, 256, 256, 256, _POOL,
                 512, 512, 512, 512, _POOL, 512, 512, 512, 512)  # torchvision cfg "E" up to relu5_4
# Index in `features` of the ReLU whose output is each feature layer (torchvision numbering).
FEATURE_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_4": 17, "relu4_4": 26, "relu5_4": 35}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def find_vgg19_weights() -> Path | None:
    """torchvision's VGG-19 file in the torch hub cache if a previous download left it there; never downloads."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME
    return path if path.is_file() else None


def _vgg19_features() -> nn.Sequential:
    """Conv3x3 + ReLU blocks with max-pools between stages: 16 convs, indices as torchvision's."""
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG19_LAYOUT:
        if item == _POOL:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            channels = item
    return nn.Sequential(*layers)


class VGGPerceptual(nn.Module):
    """Frozen VGG-19 feature extractor; forward(pred, target) with images in [0, 1] returns the sum over
    `layers` of the mean L1 between their features. Gradients flow to `pred` (and `target`), never to VGG."""

    def __init__(self, layers: tuple[str, ...] = tuple(FEATURE_LAYERS)) -> None:
        super().__init__()
        unknown = [name for name in layers if name not in FEATURE_LAYERS]
        assert not unknown, f"unknown VGG-19 layers {unknown}; known: {list(FEATURE_LAYERS)}"
        self.layer_indices = sorted(FEATURE_LAYERS[name] for name in layers)
        self.features = _vgg19_features()[: self.layer_indices[-1] + 1]
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_file(cls, path: str | Path, layers: tuple[str, ...] = tuple(FEATURE_LAYERS)) -> "VGGPerceptual":
        """Load a torchvision VGG-19 state dict (`classifier.*` keys are ignored: only the conv stack is used)."""
        path = Path(path)
        if not path.is_file():
            raise LangBRTInputError(f"VGG-19 weights file not found: {path}; pass torchvision's {VGG19_FILENAME}")
        state = read_state_dict(path, "VGG-19 weights")
        model = cls(layers)
        own = model.state_dict()
        provided = {key: value for key, value in state.items() if key in own}
        missing = sorted(own.keys() - provided.keys())
        if missing:
            raise CheckpointError(
                f"{path} lacks {len(missing)} VGG-19 conv weights, e.g. {missing[:3]}; "
                f"pass torchvision's {VGG19_FILENAME}"
            )
        wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in provided.items()
                 if v.shape != own[k].shape]
        if wrong:
            raise CheckpointError(f"{path} is not VGG-19: shape mismatch in {wrong[:3]}")
        model.load_state_dict(provided)
        return model

    def train(self, mode: bool = True) -> "VGGPerceptual":
        """Always eval: the network is a fixed measuring instrument, whatever mode the trainer sets."""
        return super().train(False)

    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> the chosen layers' features, shallowest first."""
        x = (images - self.mean) / self.std  # (B, 3, H, W), ImageNet-normalised
        out: list[torch.Tensor] = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.layer_indices:
                out.append(x)  # (B, C_l, H_l, W_l)
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred_features = self.extract(pred)
        target_features = self.extract(target)
        return sum(F.l1_loss(p, t) for p, t in zip(pred_features, target_features, strict=True))
