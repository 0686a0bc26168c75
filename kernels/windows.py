"""Window plumbing for Swin-style attention: pad, cyclic shift, partition, reverse, and the masks.

Each function is tiny and pure so it can be tested alone and so the fused kernel's index arithmetic
has a readable specification to be checked against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def padded_size(size: int, window_size: int) -> int:
    """Smallest multiple of `window_size` that holds `size`.

    Rounds up with non-negative operands only: while an export traces it, `size` is a graph value and `//`
    becomes ONNX Div, which truncates; the ceil-by-negation idiom then gave one window less than the latent,
    and Pad with that negative amount cropped it (ONNX Runtime failed on any window not dividing the latent).
    """
    return (size + window_size - 1) // window_size * window_size


def pad_to_windows(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Zero-pad a (B, H, W, C) map at the bottom/right so H and W are multiples of the window."""
    _, H, W, _ = x.shape
    pad_h = padded_size(H, window_size) - H
    pad_w = padded_size(W, window_size) - W
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, C)


def cyclic_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Roll a (B, H, W, C) map up/left by `shift` (Swin's shifted windows); `-shift` undoes it."""
    if shift == 0:
        return x
    return torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, w * w, C), windows in row-major order, tokens row-major inside."""
    B, H, W, C = x.shape
    w = window_size
    x = x.view(B, H // w, w, W // w, w, C)  # (B, nH, w, nW, w, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B * (H // w) * (W // w), w * w, C)


def window_reverse(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    """(B * nW, w * w, C) -> (B, H, W, C); the inverse of `window_partition`."""
    w = window_size
    C = windows.shape[-1]
    B = windows.shape[0] // ((H // w) * (W // w))
    x = windows.view(B, H // w, W // w, w, w, C)  # (B, nH, nW, w, w, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)


def region_ids(H: int, W: int, window_size: int, shift: int, device: torch.device | None = None) -> torch.Tensor:
    """Swin's region label of every position of a padded (H, W) map, in SHIFTED coordinates.

    After the cyclic shift, a window at the bottom/right edge holds tokens from up to four regions that
    were not neighbours in the image; tokens may only attend within their region. Labels are 0..8. With
    shift == 0 every position is region 0.
    """
    ids = torch.zeros(H, W, dtype=torch.int32, device=device)
    if shift == 0:
        return ids
    bounds = ((0, -window_size), (-window_size, -shift), (-shift, None))
    label = 0
    for h0, h1 in bounds:
        for w0, w1 in bounds:
            ids[h0:h1, w0:w1] = label
            label += 1
    return ids  # (H, W)


def valid_positions(H: int, W: int, Hp: int, Wp: int, shift: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool (Hp, Wp) in SHIFTED coordinates: True where the token is real image, False where it is padding."""
    valid = torch.zeros(Hp, Wp, dtype=torch.bool, device=device)
    valid[:H, :W] = True
    if shift:
        valid = torch.roll(valid, shifts=(-shift, -shift), dims=(0, 1))
    return valid  # (Hp, Wp)


def attention_keep_mask(H: int, W: int, window_size: int, shift: int,
                        device: torch.device | None = None) -> torch.Tensor:
    """Bool (nW, w*w, w*w): which (query, key) pairs of each window may interact.

    A pair is kept when both tokens are in the same shift region and the key is not padding. Padded
    keys must be masked explicitly: their projection is the bias, which would otherwise leak into
    valid windows.
    """
    Hp, Wp = padded_size(H, window_size), padded_size(W, window_size)
    ids = region_ids(Hp, Wp, window_size, shift, device)
    valid = valid_positions(H, W, Hp, Wp, shift, device)
    ids_w = window_partition(ids.view(1, Hp, Wp, 1), window_size).squeeze(-1)  # (nW, w*w)
    valid_w = window_partition(valid.view(1, Hp, Wp, 1), window_size).squeeze(-1)  # (nW, w*w)
    same_region = ids_w[:, :, None] == ids_w[:, None, :]  # (nW, w*w, w*w)
    return same_region & valid_w[:, None, :]
