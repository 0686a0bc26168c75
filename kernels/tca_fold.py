"""The TCA weights folded through the narrow map features, for the folded Triton kernel.

Keys and values come from the map features m~ (Cm channels; 9 in the paper preset), which are narrower
than a head (32 channels). Per head h, with the bias folded in as an extra ones channel, [m~ | 1]
(N, Cm + 1):

    Q_h K_h^T / alpha_h = (x~ Wq_h^T + bq_h) [Wk_h | bk_h] [m~ | 1]^T / alpha_h = (x~ QK_h + qk_h) [m~ | 1]^T
    (A_h V_h) Wo_h^T    = A_h [m~ | 1] [Wv_h | bv_h]^T Wo_h^T                 = (A_h [m~ | 1]) VO_h

with x~ = x * (1 - m), Wq_h / Wk_h / Wv_h the head's rows of the projections and Wo_h its columns of the
output projection:

    QK_h = Wq_h^T [Wk_h | bk_h] / alpha_h      (C, Cm + 1)
    qk_h = bq_h [Wk_h | bk_h] / alpha_h        (Cm + 1,)
    VO_h = [Wv_h | bv_h]^T Wo_h^T              (Cm + 1, C)

So the kernel runs every per-head matmul over Cm + 1 = 10 (tile 16) channels instead of head_dim = 32 and
needs no K or V projection: about 40 % fewer tensor-core operations at the paper shape, and half the weight
tiles to stage in shared memory. Folding is exact algebra; only the rounding order changes.

What the kernel does to a logit before its sigmoid is folded in as well: a scale (1/2 when it computes
sigmoid(s) as 0.5 tanh(s / 2) + 0.5, -log2(e) for 1 / (1 + 2^(-s log2 e))) and the logit bias -log(w*w),
which the ones channel adds to every real key: the logits come out of the matmul ready. The tensors are
zero-padded from Cm + 1 to the kernel's tile width (`block_k`), so the kernel loads whole rows with
vector loads and no masks; the biases stay fp32.

In fp16 a fold can overflow where the unfolded computation does not (QK_h holds 1 / alpha_h before any
fp32 accumulation); `FoldedTCAWeights.finite` says so, and the launcher then uses the direct kernel.

The folded tensors depend on the weights alone, so they are computed once and reused (`folded_weights`)
until a weight changes: the cache entry is keyed on the tensors' identities and version counters (which
every in-place update, an optimizer step or a load_state_dict, bumps) and holds weak references, so a new
tensor that happens to reuse a freed one's id never hits an old entry.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch

from .reference import TCAParams

CACHE_SIZE = 64  # folded weight sets kept; one per (TCA block, dtype, device) in use


@dataclass(frozen=True)
class LogitFold:
    """What the kernel's logits carry besides Q_h K_h^T / alpha_h: logit = scale * (Q_h K_h^T / alpha_h + bias)
    for every real key; the pad width of the folded tensors."""

    block_k: int  # >= Cm + 1
    scale: float = 1.0
    bias: float = 0.0


@dataclass(frozen=True)
class FoldedTCAWeights:
    """What the folded kernel reads instead of the nine TCA tensors; all contiguous, the matrices in the
    inputs' dtype and the biases in fp32 (fp64 for fp64), zero beyond channel Cm (the ones channel) up to
    block_k."""

    qk: torch.Tensor  # (heads, C, block_k)
    qk_bias: torch.Tensor  # (heads, block_k), fp32
    vo: torch.Tensor  # (heads, block_k, C)
    out_bias: torch.Tensor  # (C,), fp32
    finite: bool  # False: some value overflowed fp16 (checked for fp16 only)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.qk, self.qk_bias, self.vo, self.out_bias)


def fold_tca_weights(params: TCAParams, num_heads: int, dtype: torch.dtype, logits: LogitFold) -> FoldedTCAWeights:
    """QK_h, qk_h and VO_h of the module docstring for every head, with `logits` folded in and padded to
    `logits.block_k`, computed in fp32 (fp64 for fp64), returned in `dtype`."""
    C, Cm = params.k_weight.shape
    if logits.block_k < Cm + 1:
        raise ValueError(f"block_k {logits.block_k} cannot hold {Cm} map channels and the ones channel")
    d = C // num_heads
    compute = torch.promote_types(dtype, torch.float32)
    with torch.no_grad():  # the kernel's backward differentiates the reference, never these
        f = {name: t.to(compute) for name, t in zip(("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "alpha"),
                                                params.tensors(), strict=True)}
        inv_alpha = 1.0 / f["alpha"].reshape(num_heads)  # (heads,) from any shape of that many (as the reference)
        # [Wk_h | bk_h] and [Wv_h | bv_h] of the module docstring, the bias as the ones channel
        wk_aug = torch.cat([f["wk"], f["bk"][:, None]], dim=1).view(num_heads, d, Cm + 1)  # (heads, d, Cm + 1)
        wv_aug = torch.cat([f["wv"], f["bv"][:, None]], dim=1).view(num_heads, d, Cm + 1)  # (heads, d, Cm + 1)
        wq_t = f["wq"].view(num_heads, d, C).transpose(1, 2)  # (heads, C, d) = Wq_h^T
        wo_t = f["wo"].view(C, num_heads, d).permute(1, 2, 0)  # (heads, d, C) = Wo_h^T
        pad = logits.block_k - (Cm + 1)
        qk = (wq_t @ wk_aug) * (logits.scale * inv_alpha[:, None, None])  # (heads, C, Cm + 1)
        qk_bias = (f["bq"].view(num_heads, 1, d) @ wk_aug).squeeze(1) * inv_alpha[:, None]  # (heads, Cm + 1)
        qk_bias[:, Cm] += logits.bias  # the ones channel: every real key's logit gains the bias
        qk_bias = qk_bias * logits.scale
        vo = wv_aug.transpose(1, 2) @ wo_t  # (heads, Cm + 1, C)
        padded = (torch.nn.functional.pad(qk, (0, pad)), torch.nn.functional.pad(qk_bias, (0, pad)),
                  torch.nn.functional.pad(vo, (0, 0, 0, pad)), f["bo"])  # block_k channels
        qk, qk_bias, vo, out_bias = padded
        # The biases stay in fp32 (fp64 for fp64): the kernel adds them in fp32, and converting them from
        # half precision cost it ~40 instructions per warp and window (sm_90).
        out = (qk.to(dtype).contiguous(), qk_bias.to(compute).contiguous(), vo.to(dtype).contiguous(),
               out_bias.to(compute).contiguous())
        # Only fp16's range is narrower than the fp32 the fold is computed in; the check costs a device sync,
        # which training (a refold after every optimizer step) should not pay for bf16 or fp32.
        finite = dtype != torch.float16 or bool(torch.stack([torch.isfinite(t).all() for t in out]).all())
        return FoldedTCAWeights(*out, finite=finite)


@dataclass(frozen=True)
class _Entry:
    refs: tuple[weakref.ref, ...]
    folded: FoldedTCAWeights
    storages: tuple[torch.UntypedStorage, ...]  # the tensors' storage when folded, held (`folded_weights`)


_cache: OrderedDict[tuple, _Entry] = OrderedDict()
_cache_lock = threading.Lock()


def _versions(tensors: tuple[torch.Tensor, ...]) -> tuple[int, ...] | None:
    """The tensors' version counters, or None for inference tensors, which have none (then: no caching)."""
    try:
        return tuple(t._version for t in tensors)
    except RuntimeError:
        return None


def folded_weights(params: TCAParams, num_heads: int, dtype: torch.dtype, logits: LogitFold) -> FoldedTCAWeights:
    """`fold_tca_weights`, cached until any of the nine tensors is replaced or changed in place.

    A hit also needs each tensor's storage to be the one folded: `param.data = ...` (which
    `Module.half()`, `.float()` and `.to()` do to every parameter) swaps a parameter's values without
    bumping its version counter, and `module.half().float()` then hit the fold of the unrounded weights.
    The entry holds those storages, so no new one can take a freed one's address (CUDA's caching allocator
    hands a same-size block straight back) and pass for it; they are the weights' size, small next to the
    folds the cache keeps anyway. Changes made in place through `.data` stay invisible (`.data` has a
    version counter of its own)."""
    tensors = params.tensors()
    versions = _versions(tensors)
    if versions is None:
        return fold_tca_weights(params, num_heads, dtype, logits)
    key = (tuple(id(t) for t in tensors), versions, num_heads, dtype, logits)
    storages = tuple(t.untyped_storage() for t in tensors)
    with _cache_lock:
        entry = _cache.get(key)
        if (entry is not None
                and all(ref() is t for ref, t in zip(entry.refs, tensors, strict=True))
                and all(held.data_ptr() == now.data_ptr() for held, now in zip(entry.storages, storages, strict=True))):
            _cache.move_to_end(key)
            return entry.folded
    folded = fold_tca_weights(params, num_heads, dtype, logits)
    with _cache_lock:
        _cache[key] = _Entry(tuple(weakref.ref(t) for t in tensors), folded, storages)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return folded


def live_folds() -> tuple[FoldedTCAWeights, ...]:
    """Every cached folded weight set. Why: a CUDA graph captured through the fused kernel reads them by
    address while only this cache owns them; its holder keeps these references, so an eviction (or
    `clear_cache`) can never free memory a replay still reads."""
    with _cache_lock:
        return tuple(entry.folded for entry in _cache.values())


def clear_cache() -> None:
    """Forget every folded weight set (tests; or to free the memory of models no longer used)."""
    with _cache_lock:
        _cache.clear()
