"""Photos of any size in and out of the fixed-size network: letterbox down, paste the retouch back up.

The network sees an S x S letterboxed copy. What comes back is not the low-resolution output but only the
change it made (delta = output - input, where its mask is > 0), upsampled and added to the ORIGINAL
full-resolution pixels. So a 12-MP photo keeps its detail, and every pixel the upsampled mask leaves at 0
is bit-identical to the input: bilinear weights are non-negative, so the upsampled mask is exactly 0
wherever all contributing low-resolution mask pixels are 0, and there the original is selected as is.

A retouch usually changes a few percent of a photo, so the per-pixel blend runs only inside the box that
holds the upsampled mask's non-zero pixels (`nonzero_box`); outside it the original is copied. The box only
skips work: each pixel inside it goes through the same operations as before, so the result is the same bit
for bit (at 12 MP the blend took 0.3 s of CPU over the whole frame). A box over more than half the photo is
blended over the whole frame as before, where the copy would cost more than the box saves (a model with
random weights: its mask covers everything).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Letterbox:
    """Where the resized photo sits in the S x S model input."""

    size: int  # S
    top: int
    left: int
    height: int  # h: the photo's rows inside the model input
    width: int  # w
    full_height: int  # H: the original photo
    full_width: int  # W


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(C, h, w) -> (C, height, width), bilinear; antialiased when shrinking so fine texture does not alias."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    shrink = height < x.shape[-2] or width < x.shape[-1]
    return F.interpolate(x[None], size=(height, width), mode="bilinear", align_corners=False,
                         antialias=shrink)[0]


def letterbox_geometry(height: int, width: int, size: int) -> Letterbox:
    """Scale the long side to `size`, keep the aspect ratio (at least one pixel), centre the result."""
    scale = size / max(height, width)
    h = min(size, max(1, round(height * scale)))
    w = min(size, max(1, round(width * scale)))
    return Letterbox(size, (size - h) // 2, (size - w) // 2, h, w, height, width)


def letterbox(image: torch.Tensor, size: int) -> tuple[torch.Tensor, Letterbox]:
    """image (3, H, W) in [0, 1] -> model input (3, S, S) and its geometry; the border repeats the edge
    pixels so the encoder sees no artificial black frame to "retouch"."""
    assert image.ndim == 3 and image.shape[0] == 3, f"expected (3, H, W), got {tuple(image.shape)}"
    box = letterbox_geometry(image.shape[1], image.shape[2], size)
    small = _resize(image.float(), box.height, box.width).clamp(0.0, 1.0)  # (3, h, w)
    pad = (box.left, size - box.width - box.left, box.top, size - box.height - box.top)
    if any(pad):
        small = F.pad(small[None], pad, mode="replicate")[0]  # (3, S, S)
    return small.contiguous(), box


def _crop(x: torch.Tensor, box: Letterbox) -> torch.Tensor:
    """(C, S, S) -> the photo's region (C, h, w)."""
    return x[:, box.top : box.top + box.height, box.left : box.left + box.width]


def upsample_maps(maps: torch.Tensor, box: Letterbox) -> torch.Tensor:
    """Model-size maps (K, S, S) -> full resolution (K, H, W), clamped to [0, 1]; 0 stays exactly 0."""
    return _resize(_crop(maps.float(), box), box.full_height, box.full_width).clamp(0.0, 1.0)


def paste_back(original: torch.Tensor, model_input: torch.Tensor, output: torch.Tensor, mask: torch.Tensor,
               box: Letterbox) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the network's change to the full-resolution original.

    original (3, H, W); model_input, output (3, S, S); mask (1, S, S) -> (image (3, H, W), mask (1, H, W)).
    Pixels where the returned mask is 0 are the original's, bit for bit.
    """
    low_mask = _crop(mask.float(), box).clamp(0.0, 1.0)  # (1, h, w)
    delta = torch.where(low_mask > 0, _crop(output.float() - model_input.float(), box), 0.0)  # (3, h, w)
    # The whole frame, not the box: the bilinear weights of a pixel depend on where it sits in the frame.
    up = _resize(torch.cat([delta, low_mask]), box.full_height, box.full_width)  # (4, H, W) in one pass
    # In place from here: at 12 MP every full-resolution float plane is 48 MB, and a server holds many.
    full_mask = up[3:].clamp_(0.0, 1.0).clone()  # (1, H, W), its own storage so `up` can be freed
    rows, cols = nonzero_box(full_mask[0]) or (slice(0, 0), slice(0, 0))
    box_pixels = (rows.stop - rows.start) * (cols.stop - cols.start)
    if 2 * box_pixels > box.full_height * box.full_width:  # a mask over most of the photo: no copy first
        retouched = up[:3].add_(original).clamp_(0.0, 1.0)  # (3, H, W): original + delta
        return torch.where(full_mask > 0, retouched, original), full_mask  # (3, H, W)
    image = original.clone()  # (3, H, W): the original wherever full_mask is 0
    kept = image[:, rows, cols]  # (3, h', w'): the box, a view into image
    retouched = up[:3, rows, cols].add_(kept).clamp_(0.0, 1.0)  # (3, h', w'): original + delta
    torch.where(full_mask[:, rows, cols] > 0, retouched, kept, out=kept)  # blends into image
    return image, full_mask


def nonzero_box(plane: torch.Tensor) -> tuple[slice, slice] | None:
    """(H, W) -> the (rows, columns) slices of the smallest box holding every non-zero value, None if there is none.

    Why: a blend or an overlay that leaves zero-weight pixels as they are need only visit this box.
    """
    assert plane.ndim == 2, f"expected (H, W), got {tuple(plane.shape)}"
    nonzero = plane != 0  # (H, W)
    rows = torch.nonzero(nonzero.any(dim=1))[:, 0]  # (n,) indices of rows holding a non-zero value
    if rows.numel() == 0:
        return None
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    cols = torch.nonzero(nonzero[top:bottom].any(dim=0))[:, 0]  # (m,) of the rows that hold any
    return slice(top, bottom), slice(int(cols[0]), int(cols[-1]) + 1)
