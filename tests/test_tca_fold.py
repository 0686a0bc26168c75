"""The folded TCA weights reproduce the per-head scores and outputs, and are cached only while valid."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from langbrt.kernels import TCAParams, tca_fold


def random_params(C: int, Cm: int, heads: int, seed: int = 0) -> TCAParams:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64) / shape[-1] ** 0.5

    return TCAParams(r(C, C), r(C), r(C, Cm), r(C), r(C, Cm), r(C), r(C, C), r(C),
                     torch.rand(heads, generator=g, dtype=torch.float64) + 0.5)


@pytest.fixture(autouse=True)
def empty_cache():
    tca_fold.clear_cache()
    yield
    tca_fold.clear_cache()


PLAIN = tca_fold.LogitFold(block_k=16)  # no scale, no bias; wide enough for every Cm below but the last


def plain(Cm: int) -> tca_fold.LogitFold:
    return tca_fold.LogitFold(block_k=max(PLAIN.block_k, 1 << Cm.bit_length()))


@pytest.mark.parametrize(("C", "Cm", "heads"), [(96, 9, 3), (24, 9, 2), (16, 3, 1), (32, 40, 4)])
def test_folded_weights_give_the_same_scores_and_outputs_per_head(C, Cm, heads):
    """(x QK_h + qk_h) [m | 1 | 0]^T = Q_h K_h^T / alpha_h and (A [m | 1 | 0]) VO_h = (A V_h) Wo_h^T, for any
    Cm (the last case is wider than a head: folding is exact there too, merely not faster)."""
    params = random_params(C, Cm, heads)
    g = torch.Generator().manual_seed(1)
    N, d = 16, C // heads
    x = torch.randn(N, C, generator=g, dtype=torch.float64)  # (N, C) mask-suppressed queries
    maps = torch.rand(N, Cm, generator=g, dtype=torch.float64)  # (N, Cm)
    attn = torch.rand(N, N, generator=g, dtype=torch.float64)  # (N, N) any attention weights
    logits = plain(Cm)
    folded = tca_fold.fold_tca_weights(params, heads, torch.float64, logits)
    pad = logits.block_k - Cm - 1
    ones, zeros = torch.ones(N, 1, dtype=torch.float64), torch.zeros(N, pad, dtype=torch.float64)
    maps_1 = torch.cat([maps, ones, zeros.normal_(generator=g)], dim=1)  # (N, block_k) padding: any values

    q = x @ params.q_weight.T + params.q_bias  # (N, C)
    k = maps @ params.k_weight.T + params.k_bias  # (N, C)
    v = maps @ params.v_weight.T + params.v_bias  # (N, C)
    for h in range(heads):
        rows = slice(h * d, (h + 1) * d)
        scores = q[:, rows] @ k[:, rows].T / params.alpha[h]  # (N, N)
        folded_scores = (x @ folded.qk[h] + folded.qk_bias[h]) @ maps_1.T
        torch.testing.assert_close(folded_scores, scores)
        out = (attn @ v[:, rows]) @ params.out_weight[:, rows].T  # (N, C)
        torch.testing.assert_close((attn @ maps_1) @ folded.vo[h], out)
    torch.testing.assert_close(folded.out_bias, params.out_bias)
    assert folded.finite


def test_logit_scale_and_bias_are_folded_for_real_keys_only():
    """logit = scale * (Q K^T / alpha + bias) through the ones channel: a padded key (all-zero row, ones
    channel included) gets logit 0, which the kernel's zero value row then cancels."""
    C, Cm, heads, N = 24, 9, 2, 8
    params = random_params(C, Cm, heads)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(N, C, generator=g, dtype=torch.float64)
    keys = torch.cat([torch.rand(N, Cm, generator=g, dtype=torch.float64), torch.ones(N, 1, dtype=torch.float64),
                      torch.zeros(N, 6, dtype=torch.float64)], dim=1)  # (N, 16)
    keys[-1] = 0.0  # a padded key
    plain_fold = tca_fold.fold_tca_weights(params, heads, torch.float64, tca_fold.LogitFold(block_k=16))
    fold = tca_fold.fold_tca_weights(params, heads, torch.float64, tca_fold.LogitFold(16, scale=0.5, bias=-3.0))
    for h in range(heads):
        raw = (x @ plain_fold.qk[h] + plain_fold.qk_bias[h]) @ keys.T  # (N, N)
        got = (x @ fold.qk[h] + fold.qk_bias[h]) @ keys.T
        torch.testing.assert_close(got[:, :-1], 0.5 * (raw[:, :-1] - 3.0))
        torch.testing.assert_close(got[:, -1], torch.zeros(N, dtype=torch.float64))


def test_folded_weights_come_padded_contiguous_with_fp32_biases():
    folded = tca_fold.fold_tca_weights(random_params(24, 9, 2), 2, torch.float16, PLAIN)
    assert folded.qk.shape == (2, 24, 16) and folded.qk_bias.shape == (2, 16) and folded.vo.shape == (2, 16, 24)
    assert folded.qk.dtype == folded.vo.dtype == torch.float16  # the matrices in the asked dtype,
    assert folded.qk_bias.dtype == folded.out_bias.dtype == torch.float32  # the biases the kernel adds in fp32
    assert all(t.is_contiguous() for t in folded.tensors())
    assert not folded.qk[..., 10:].any() and not folded.qk_bias[:, 10:].any() and not folded.vo[:, 10:].any()


def test_a_fold_that_overflows_half_precision_says_so():
    """1 / alpha is folded into QK_h before any fp32 accumulation: a tiny alpha overflows fp16 there."""
    params = random_params(24, 9, 2)
    with torch.no_grad():
        params.alpha.fill_(1e-6)
    assert tca_fold.fold_tca_weights(params, 2, torch.float32, PLAIN).finite
    assert not tca_fold.fold_tca_weights(params, 2, torch.float16, PLAIN).finite


def test_too_narrow_a_pad_is_refused():
    with pytest.raises(ValueError, match="block_k 8"):
        tca_fold.fold_tca_weights(random_params(24, 9, 2), 2, torch.float32, tca_fold.LogitFold(block_k=8))


def test_cache_reuses_until_a_weight_changes_in_place():
    params = random_params(24, 9, 2)
    first = tca_fold.folded_weights(params, 2, torch.float32, PLAIN)
    assert tca_fold.folded_weights(params, 2, torch.float32, PLAIN) is first
    assert tca_fold.folded_weights(params, 2, torch.float16, PLAIN) is not first  # another dtype, another entry
    halved = tca_fold.folded_weights(params, 2, torch.float32, tca_fold.LogitFold(16, scale=0.5))
    torch.testing.assert_close(halved.qk, first.qk / 2)  # another logit fold, another entry
    with torch.no_grad():
        params.alpha.mul_(2.0)  # an optimizer step or load_state_dict bumps the version counter
    refolded = tca_fold.folded_weights(params, 2, torch.float32, PLAIN)
    assert refolded is not first
    torch.testing.assert_close(refolded.qk, first.qk / 2)


def test_cache_refolds_when_a_parameters_storage_is_swapped():
    """`Module.half()` / `.float()` / `.to()` assign `param.data`, which keeps the Parameter (its id) and its
    version counter: after `module.half().float()` the weights are rounded through fp16, and the fold of the
    unrounded ones must not be handed back."""
    params = TCAParams(*(torch.nn.Parameter(t) for t in random_params(24, 9, 2).tensors()))
    first = tca_fold.folded_weights(params, 2, torch.float32, PLAIN)
    versions = [t._version for t in params.tensors()]
    folded_addresses = [t.data_ptr() for t in params.tensors()]
    for t in params.tensors():
        t.data = t.data.half().float()  # what module.half().float() does to each parameter
    assert [t._version for t in params.tensors()] == versions  # the version counters do not see it
    # The entry still holds the storages it folded, so no new weight can be allocated at their addresses
    # (a same-size block is what CUDA's caching allocator hands out next) and pass for them.
    held = {s.data_ptr() for entry in tca_fold._cache.values() for s in entry.storages}
    assert set(folded_addresses) <= held
    refolded = tca_fold.folded_weights(params, 2, torch.float32, PLAIN)
    assert refolded is not first
    torch.testing.assert_close(refolded.qk, tca_fold.fold_tca_weights(params, 2, torch.float32, PLAIN).qk,
                               atol=0, rtol=0)


def test_cache_never_hands_a_new_tensor_an_old_tensors_entry():
    """A freed tensor's id can be reused by the next one, with the same version counter: an entry whose key
    matches but whose weakly referenced tensors are gone (or are other objects) must not be used."""
    fresh = random_params(24, 9, 2, seed=5)
    tensors = fresh.tensors()
    key = (tuple(id(t) for t in tensors), tuple(t._version for t in tensors), 2, torch.float32, PLAIN)
    stale = tca_fold.fold_tca_weights(random_params(24, 9, 2, seed=6), 2, torch.float32, PLAIN)
    gone = [torch.zeros(1) for _ in tensors]
    tca_fold._cache[key] = tca_fold._Entry(tuple(weakref.ref(t) for t in gone), stale,
                                           tuple(t.untyped_storage() for t in tensors))
    del gone
    gc.collect()
    got = tca_fold.folded_weights(fresh, 2, torch.float32, PLAIN)
    assert got is not stale
    torch.testing.assert_close(got.qk, tca_fold.fold_tca_weights(fresh, 2, torch.float32, PLAIN).qk)


def test_inference_tensors_are_folded_without_caching():
    with torch.inference_mode():
        params = random_params(24, 9, 2)  # inference tensors have no version counter
        a = tca_fold.folded_weights(params, 2, torch.float32, PLAIN)
        b = tca_fold.folded_weights(params, 2, torch.float32, PLAIN)
    assert a is not b
    torch.testing.assert_close(a.qk, b.qk)
    assert not tca_fold._cache


def test_cache_is_bounded():
    kept = [random_params(16, 3, 1, seed=i) for i in range(tca_fold.CACHE_SIZE + 5)]
    for params in kept:
        tca_fold.folded_weights(params, 1, torch.float32, PLAIN)
    assert len(tca_fold._cache) == tca_fold.CACHE_SIZE


def test_live_folds_are_every_cached_set_and_outlive_the_cache():
    """What a captured CUDA graph's holder keeps alive: the cache's folded tensors, past clear_cache."""
    first = tca_fold.folded_weights(random_params(16, 3, 1), 1, torch.float64, plain(3))
    second = tca_fold.folded_weights(random_params(16, 3, 1, seed=1), 1, torch.float64, plain(3))
    kept = tca_fold.live_folds()
    assert {id(f) for f in kept} == {id(first), id(second)}
    watcher = weakref.ref(first.qk)
    del first
    tca_fold.clear_cache()
    gc.collect()
    assert watcher() is not None and tca_fold.live_folds() == ()
    del kept
    gc.collect()
    assert watcher() is None
