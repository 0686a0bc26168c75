"""The window plumbing and the reference TCA op, checked against a naive per-token computation."""

import math

import pytest
import torch

from langbrt.kernels import TCAParams, windowed_sigmoid_cross_attention_reference
from langbrt.kernels.windows import (
    attention_keep_mask,
    cyclic_shift,
    pad_to_windows,
    region_ids,
    window_partition,
    window_reverse,
)


def random_params(C: int, Cm: int, heads: int, seed: int = 0) -> TCAParams:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.3

    return TCAParams(r(C, C), r(C), r(C, Cm), r(C), r(C, Cm), r(C), r(C, C), r(C),
                     torch.rand(heads, generator=g) + 0.5)


def naive_tca(x, mf, p: TCAParams, heads: int, w: int, shift: int) -> torch.Tensor:
    """Token by token: find the query's window in shifted coordinates and its allowed keys."""
    B, H, W, C = x.shape
    Hp, Wp = math.ceil(H / w) * w, math.ceil(W / w) * w
    d = C // heads

    def region(coord: int, size: int) -> int:
        if shift == 0:
            return 0
        return 0 if coord < size - w else (1 if coord < size - shift else 2)

    out = torch.zeros_like(x)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                si, sj = (i - shift) % Hp, (j - shift) % Wp  # position after the cyclic shift
                wi, wj = si // w, sj // w
                q = (x[b, i, j] * (1 - mf[b, i, j, 0])) @ p.q_weight.T + p.q_bias
                acc = torch.zeros(C)
                for ki in range(wi * w, wi * w + w):
                    for kj in range(wj * w, wj * w + w):
                        oi, oj = (ki + shift) % Hp, (kj + shift) % Wp  # original position of that key
                        if oi >= H or oj >= W:
                            continue
                        if (region(ki, Hp), region(kj, Wp)) != (region(si, Hp), region(sj, Wp)):
                            continue
                        k = mf[b, oi, oj] @ p.k_weight.T + p.k_bias
                        v = mf[b, oi, oj] @ p.v_weight.T + p.v_bias
                        for h in range(heads):
                            s = slice(h * d, (h + 1) * d)
                            a = torch.sigmoid(q[s] @ k[s] / p.alpha[h] - math.log(w * w))
                            acc[s] += a * v[s]
                out[b, i, j] = acc @ p.out_weight.T + p.out_bias
    return out


def test_partition_then_reverse_is_identity():
    x = torch.randn(2, 8, 12, 5)
    assert torch.equal(window_reverse(window_partition(x, 4), 4, 8, 12), x)


def test_partition_keeps_window_tokens_together():
    x = torch.arange(16.0).view(1, 4, 4, 1)
    windows = window_partition(x, 2)
    assert windows[0, :, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert windows[1, :, 0].tolist() == [2.0, 3.0, 6.0, 7.0]


def test_cyclic_shift_is_undone_by_negative_shift():
    x = torch.randn(1, 8, 8, 3)
    assert torch.equal(cyclic_shift(cyclic_shift(x, 2), -2), x)


def test_padding_reaches_window_multiple():
    assert pad_to_windows(torch.ones(1, 5, 7, 2), 4).shape == (1, 8, 8, 2)


def test_unshifted_regions_are_all_zero():
    assert region_ids(8, 8, 4, 0).unique().tolist() == [0]


def test_shifted_regions_have_nine_labels():
    assert region_ids(8, 8, 4, 2).unique().numel() == 9


def test_keep_mask_drops_padded_keys():
    keep = attention_keep_mask(5, 4, 4, 0)  # rows 5..7 of the second window row are padding
    assert keep.shape == (2, 16, 16)
    assert keep[0].all()
    assert keep[1][:, :4].all() and not keep[1][:, 4:].any()


@pytest.mark.parametrize(("H", "W", "shift"), [(8, 8, 0), (8, 8, 2), (6, 7, 0), (6, 7, 2)])
def test_reference_matches_naive_per_token_attention(H, W, shift):
    torch.manual_seed(0)
    C, Cm, heads, w = 6, 3, 2, 4
    x = torch.randn(2, H, W, C)
    mf = torch.rand(2, H, W, Cm)
    p = random_params(C, Cm, heads)
    got = windowed_sigmoid_cross_attention_reference(x, mf, p, heads, w, shift)
    torch.testing.assert_close(got, naive_tca(x, mf, p, heads, w, shift), atol=1e-5, rtol=1e-5)


def test_fully_masked_query_depends_only_on_maps():
    """With m == 1 the query is the bias: the image features cannot influence the attention."""
    C, Cm, heads = 4, 2, 1
    mf = torch.rand(1, 4, 4, Cm)
    mf[..., 0] = 1.0
    p = random_params(C, Cm, heads)
    a = windowed_sigmoid_cross_attention_reference(torch.randn(1, 4, 4, C), mf, p, heads, 4, 0)
    b = windowed_sigmoid_cross_attention_reference(torch.randn(1, 4, 4, C), mf, p, heads, 4, 0)
    torch.testing.assert_close(a, b)
