"""From the network's map order to each image's: one function the model and every backend share.

A batch's prompts are de-duplicated into one table (T distinct prompts, so a prompt several images share is
encoded and detected once), and the network returns one map per table entry. Callers want each image's own
prompts, in the order it gave them, zero-padded to the longest list.
"""

from __future__ import annotations

import torch


def regroup_maps(table_maps: torch.Tensor, per_image: list[list[int]]) -> torch.Tensor:
    """(B, T, H, W) maps in table order -> (B, K, H, W), image b's prompts in its order, zeros past its count.

    A gather, so gradients flow back to the table's maps (training regroups the soft maps with it).
    """
    B, _, H, W = table_maps.shape
    K = max(len(indices) for indices in per_image)
    index = torch.zeros(B, K, dtype=torch.long)
    valid = torch.zeros(B, K, 1, 1, dtype=table_maps.dtype)
    for b, indices in enumerate(per_image):
        index[b, : len(indices)] = torch.tensor(indices, dtype=torch.long)
        valid[b, : len(indices)] = 1.0
    gather_index = index.to(table_maps.device)[:, :, None, None].expand(B, K, H, W)
    return torch.gather(table_maps, 1, gather_index) * valid.to(table_maps.device)  # (B, K, H, W)
