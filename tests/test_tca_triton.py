"""The fused Triton TCA kernel matches the PyTorch reference: forward, dispatch, paper shapes; and its backward,
which is no kernel but a recompute of the reference differentiated by torch.func.vjp, returns each argument
its own gradient (the values agree by construction; the plumbing around the recompute is what is checked).

On CPU the kernel runs in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before the kernel
module is imported), so CPU shapes are tiny. The GPU tests run the compiled kernel at the paper's latent
shape. Shifted cases use sizes where the Swin region mask changes the result (with 10x13, window 4 and
shift 2 the padding alone already hides every cross-region key, so shift 1 is used there).
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from langbrt.errors import LangBRTInputError
from langbrt.kernels import (
    ENV_VAR,
    TCAParams,
    windowed_sigmoid_cross_attention,
    windowed_sigmoid_cross_attention_reference,
)
from langbrt.kernels.dispatch import check_impl_runs

tca_triton = pytest.importorskip("langbrt.kernels.tca_triton", reason="triton is not installed")
tca_choices = pytest.importorskip("langbrt.kernels.tca_choices")
tca_launch_configs = pytest.importorskip("langbrt.kernels.tca_launch_configs")
kernel_attention = tca_triton.windowed_sigmoid_cross_attention_triton

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# The half-precision folded kernel gives a key of another Swin region a folded logit of >= 2^15, whose
# 2^z the interpreter's numpy overflows to inf (sigmoid weight 0, as intended; the GPU's ex2 gives inf too).
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp2:RuntimeWarning")


def random_params(C: int, Cm: int, heads: int, seed: int = 0, dtype: torch.dtype = torch.float32,
                  device: str = "cpu") -> TCAParams:
    """Weights scaled like a trained layer (logits of order 1, so the sigmoid is not saturated)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, fan_in: int = 4) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) / fan_in**0.5).to(device=device, dtype=dtype)

    alpha = (torch.rand(heads, generator=g) + 0.5).to(device=device, dtype=dtype)  # (heads,) positive
    return TCAParams(r(C, C, fan_in=C), r(C), r(C, Cm, fan_in=Cm), r(C), r(C, Cm, fan_in=Cm), r(C),
                     r(C, C, fan_in=C), r(C), alpha)


def random_inputs(B: int, H: int, W: int, C: int, Cm: int, seed: int = 1, dtype: torch.dtype = torch.float32,
                  device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, H, W, C, generator=g)  # (B, H, W, C)
    map_features = torch.rand(B, H, W, Cm, generator=g)  # (B, H, W, Cm), channel 0 is the blemish map
    return x.to(device=device, dtype=dtype), map_features.to(device=device, dtype=dtype)


def poison_new_tensors(monkeypatch) -> None:
    """torch.empty hands out NaN-filled tensors for the rest of the test: an output element the kernel
    never writes then fails the comparison instead of passing by chance."""
    monkeypatch.setattr(torch, "empty", lambda *a, **k: torch.full(*a, float("nan"), **k))


GPU_TOLERANCE = {torch.float32: 1e-4, torch.float16: 3e-3, torch.bfloat16: 2e-2}  # x max |reference|


def cast_params(params: TCAParams, dtype: torch.dtype) -> TCAParams:
    return TCAParams(*(t.to(dtype) for t in params.tensors()))


def leaf_copies(x: torch.Tensor, map_features: torch.Tensor, params: TCAParams):
    """Fresh leaves that require grad, so two backward passes don't share .grad."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, map_features, *params.tensors())]
    return leaves[0], leaves[1], TCAParams(*leaves[2:]), leaves


#               B,  H,  W,  C, Cm, heads, window, shift
CPU_CASES = [
    pytest.param(2, 8, 8, 16, 3, 2, 4, 0, id="unshifted-batch2"),
    pytest.param(1, 8, 8, 16, 3, 1, 4, 2, id="shifted-1head"),
    pytest.param(1, 10, 13, 24, 9, 3, 4, 1, id="padded-shifted-3heads"),
    pytest.param(2, 10, 13, 24, 9, 2, 4, 0, id="padded-unshifted-headdim12"),
    pytest.param(1, 9, 7, 32, 9, 2, 8, 4, id="window8-one-padded-window"),
    # 4 x 3 windows, six of them interior: tokens neither wrapped by the shift nor padding
    pytest.param(1, 16, 12, 16, 3, 2, 4, 2, id="unpadded-shifted-interior-windows"),
    # padding 3 > window - shift 1: padded pixels land in an interior window, not only the last row
    pytest.param(1, 9, 10, 16, 9, 2, 4, 3, id="padded-shifted-padding-in-interior-windows"),
]


@pytest.mark.parametrize(("B", "H", "W", "C", "Cm", "heads", "window", "shift"), CPU_CASES)
def test_forward_matches_reference_fp32(B, H, W, C, Cm, heads, window, shift):
    x, mf = random_inputs(B, H, W, C, Cm)
    params = random_params(C, Cm, heads)
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, heads, window, shift)
    got = kernel_attention(x, mf, params, heads, window, shift)
    assert got.shape == (B, H, W, C) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("env", [pytest.param({}, id="direct"),
                                 pytest.param({"LANGBRT_TCA_KERNEL": "folded"}, id="folded")])
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)], ids=str)
def test_forward_half_precision_matches_fp32_reference(monkeypatch, dtype, tolerance, env):
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    x, mf = random_inputs(2, 10, 13, 24, 9)
    params = random_params(24, 9, 2)
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 2, 4, 1)
    got = kernel_attention(x.to(dtype), mf.to(dtype), cast_params(params, dtype), 2, 4, 1)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), expected, atol=2 * tolerance, rtol=tolerance)


TENSOR_NAMES = ["x", "map_features", "q_weight", "q_bias", "k_weight", "k_bias", "v_weight", "v_bias",
                "out_weight", "out_bias", "alpha"]


@pytest.mark.parametrize("wanted", [TENSOR_NAMES, ["map_features", "k_bias", "alpha"], ["x", "v_weight", "out_bias"]],
                         ids=["all", "map-kbias-alpha", "x-vweight-outbias"])
def test_the_recompute_backward_routes_each_reference_gradient_to_its_argument(wanted):
    """The backward re-runs the reference and differentiates it, so it cannot disagree with the reference's
    own autograd in value. What it can get wrong is the routing: which of the 11 tensors (with 4 non-tensor
    arguments between x/map_features and the weights) asked for a gradient, and which gradient goes back to
    which argument. With all asking the mapping is the identity; the sparse subsets exercise it."""
    x, mf = random_inputs(2, 10, 13, 24, 9)
    params = random_params(24, 9, 2)
    grad_out = torch.randn(2, 10, 13, 24, generator=torch.Generator().manual_seed(2))  # (B, H, W, C)

    def leaves() -> list[torch.Tensor]:
        return [t.detach().clone().requires_grad_(name in wanted)
                for name, t in zip(TENSOR_NAMES, (x, mf, *params.tensors()), strict=True)]

    kernel_leaves, ref_leaves = leaves(), leaves()
    kernel_attention(kernel_leaves[0], kernel_leaves[1], TCAParams(*kernel_leaves[2:]), 2, 4, 1).backward(grad_out)
    windowed_sigmoid_cross_attention_reference(ref_leaves[0], ref_leaves[1], TCAParams(*ref_leaves[2:]),
                                               2, 4, 1).backward(grad_out)
    for name, got, expected in zip(TENSOR_NAMES, kernel_leaves, ref_leaves, strict=True):
        if name not in wanted:
            assert got.grad is None, name
            continue
        assert got.grad is not None, name
        torch.testing.assert_close(got.grad, expected.grad, atol=1e-5, rtol=1e-5, msg=name)


def test_under_autocast_the_kernel_runs_in_the_autocast_dtype_and_differentiates_mixed_inputs():
    """Training with --precision bf16 on CUDA: x comes from an fp32 LayerNorm, the weights are fp32 and the
    map features may already be half (the no-tbd ablation builds them from the encoder's half features).
    The kernel must run in the autocast dtype, and its backward (a reference recompute outside autocast)
    must not mix dtypes. fp16 here: CPU autocast takes it, and the interpreter has no bf16."""
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    kx, kmf, kparams, kernel_leaves = leaf_copies(x, mf.half(), params)
    with torch.autocast("cpu", dtype=torch.float16):
        got = kernel_attention(kx, kmf, kparams, 2, 4, 2)
    assert got.dtype == torch.float16
    got.float().sum().backward()
    for leaf in kernel_leaves:
        assert leaf.grad is not None and leaf.grad.dtype == leaf.dtype and leaf.grad.isfinite().all()
    expected = windowed_sigmoid_cross_attention_reference(x.half(), mf.half(), cast_params(params, torch.float16),
                                                          2, 4, 2)
    torch.testing.assert_close(got, expected, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("shape", [(1, 0, 8), (2, 8, 0)], ids=["no-rows", "no-columns"])
def test_a_map_with_no_window_has_zero_gradients(shape):
    """H or W = 0: the kernel returns the empty output, and its backward must not run the reference, whose
    window_reverse divided by the window count (a ZeroDivisionError out of loss.backward())."""
    x, mf = random_inputs(*shape, 16, 3)
    kx, kmf, kparams, leaves = leaf_copies(x, mf, random_params(16, 3, 2))
    got = kernel_attention(kx, kmf, kparams, 2, 4, 2)
    assert got.shape == (*shape, 16)
    got.sum().backward()
    for leaf in leaves:
        assert leaf.grad is not None and leaf.grad.shape == leaf.shape and not leaf.grad.any()


@pytest.mark.parametrize("kernel", ["direct", "folded"])
def test_fp16_alpha_below_2_to_the_minus_8_gets_its_finite_gradient(monkeypatch, kernel):
    """alpha = 2e-3 in fp16: the backward differentiated the reference's 1 / alpha as -(1 / alpha)^2 in fp16,
    250 000 > 65504, so alpha's gradient was inf whatever the loss (the forward is fine there). It must be
    the float64 gradient within what the fp16 recompute's rounded logits cost at 1 / alpha = 500 (7 % here)."""
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, kernel)
    x, mf = random_inputs(1, 8, 8, 16, 3, dtype=torch.float64)
    params = random_params(16, 3, 2, dtype=torch.float64)
    with torch.no_grad():
        params.alpha.copy_(torch.tensor([2e-3, 3e-3]))
    grad_out = torch.randn(1, 8, 8, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, _, expected_params, _ = leaf_copies(x, mf, params)
    windowed_sigmoid_cross_attention_reference(x, mf, expected_params, 2, 4, 2).backward(grad_out)
    _, _, half_params, _ = leaf_copies(x, mf, cast_params(params, torch.float16))
    kernel_attention(x.half(), mf.half(), half_params, 2, 4, 2).backward(grad_out.half())
    got, expected = half_params.alpha.grad, expected_params.alpha.grad
    assert got.dtype == torch.float16 and got.isfinite().all(), got
    torch.testing.assert_close(got.double(), expected, rtol=0.1, atol=0)


def test_frozen_parameters_get_no_gradient():
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    x.requires_grad_()
    kernel_attention(x, mf, params, 2, 4, 2).sum().backward()
    assert x.grad is not None
    assert all(t.grad is None for t in params.tensors())


def test_non_contiguous_inputs_are_accepted():
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    x_t = x.transpose(1, 2).contiguous().transpose(1, 2)  # same values, (B, H, W, C) view with odd strides
    mf_wide = torch.cat([mf, torch.zeros_like(mf)], dim=-1)[..., :3]  # strided channel slice
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 2, 4, 2)
    got = kernel_attention(x_t, mf_wide, params, 2, 4, 2)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def _replaced(params: TCAParams, name: str, tensor: torch.Tensor) -> TCAParams:
    return TCAParams(**{**{n: getattr(params, n) for n in TENSOR_NAMES[2:]}, name: tensor})


@pytest.mark.parametrize("kernel", ["direct", "folded"])
@pytest.mark.parametrize(("what", "call"), [
    # no map channel: the kernels read the blemish map past the (empty) tensor's end (a segfault here)
    ("no channel", lambda x, mf, p: kernel_attention(x, mf[..., :0], random_params(16, 0, 2), 2, 4, 0)),
    # weights of another width: read past their end, silently wrong values (or an illegal access on a GPU)
    ("k_weight is", lambda x, mf, p: kernel_attention(x, mf, _replaced(p, "k_weight", torch.randn(16, 4)), 2, 4, 0)),
    ("q_weight is", lambda x, mf, p: kernel_attention(x, mf, _replaced(p, "q_weight", torch.randn(8, 8)), 2, 4, 0)),
    ("out_bias is", lambda x, mf, p: kernel_attention(x, mf, _replaced(p, "out_bias", torch.randn(8)), 2, 4, 0)),
    ("alpha is", lambda x, mf, p: kernel_attention(x, mf, _replaced(p, "alpha", torch.ones(3)), 2, 4, 0)),
    ("shift 4", lambda x, mf, p: kernel_attention(x, mf, p, 2, 4, 4)),
    # one window's (w*w, w*w) scores live on chip: w = 23-32 outgrew an H100's shared memory, w = 33 Triton's build
    ("takes windows of at most 16", lambda x, mf, p: kernel_attention(x, mf, p, 2, 17, 0)),
    ("do not split into 3 heads", lambda x, mf, p: kernel_attention(x, mf, p, 3, 4, 0)),
    ("takes x", lambda x, mf, p: kernel_attention(x[0], mf[0], p, 2, 4, 0)),
    ("takes x", lambda x, mf, p: kernel_attention(x, mf[:, :4], p, 2, 4, 0)),
    ("floating-point", lambda x, mf, p: kernel_attention(x.int(), mf, p, 2, 4, 0)),
    # float8 is floating point, but the fold cannot promote it (a RuntimeError) and the reference has no float8 maths
    ("float16, bfloat16", lambda x, mf, p: kernel_attention(x.to(torch.float8_e4m3fn), mf, p, 2, 4, 0)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_arguments_that_do_not_fit_are_one_clear_error_before_any_launch(monkeypatch, kernel, what, call):
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, kernel)
    x, mf = random_inputs(1, 8, 8, 16, 3)
    with pytest.raises(ValueError, match=what):
        call(x, mf, random_params(16, 3, 2))


def test_alpha_is_read_at_run_time():
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    kernel_attention(x, mf, params, 2, 4, 0)
    params.alpha.mul_(3.0)  # a learnable temperature changes between steps
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 2, 4, 0)
    torch.testing.assert_close(kernel_attention(x, mf, params, 2, 4, 0), expected, atol=1e-4, rtol=1e-4)


def test_registered_torch_op_matches_reference():
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    got = torch.ops.langbrt.tca_attention(x, mf, *params.tensors(), 2, 4, 2, False)
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 2, 4, 2)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_traced_calls_go_through_the_registered_op():
    """Eager calls skip the custom op's dispatch, but torch.compile must still see the op as one opaque node
    (so inductor never rebuilds the kernel itself outside the MMA build scope)."""
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    targets = []

    def recording_backend(gm: torch.fx.GraphModule, example_inputs):
        targets.extend(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(kernel_attention, backend=recording_backend, fullgraph=True)
    got = compiled(x, mf, params, 2, 4, 2)
    assert tca_triton.OP_NAME.replace("::", ".") + ".default" in targets, targets
    torch.testing.assert_close(got, windowed_sigmoid_cross_attention_reference(x, mf, params, 2, 4, 2),
                               atol=1e-4, rtol=1e-4)


def test_dispatch_env_triton_runs_the_kernel(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        return kernel_attention(*args, **kwargs)

    monkeypatch.setattr(tca_triton, "windowed_sigmoid_cross_attention_triton", spy)
    monkeypatch.setenv(ENV_VAR, "triton")
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    got = windowed_sigmoid_cross_attention(x, mf, params, 2, 4, 2)
    assert len(calls) == 1
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 2, 4, 2)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_dispatch_env_reference_skips_the_kernel(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the kernel ran although LANGBRT_ATTENTION=reference")

    monkeypatch.setattr(tca_triton, "windowed_sigmoid_cross_attention_triton", fail)
    monkeypatch.setenv(ENV_VAR, "reference")
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    got = windowed_sigmoid_cross_attention(x, mf, params, 2, 4, 2, impl="triton")
    torch.testing.assert_close(got, windowed_sigmoid_cross_attention_reference(x, mf, params, 2, 4, 2))


def test_auto_runs_the_reference_for_a_window_wider_than_the_kernels_take(monkeypatch):
    """The model config allows windows up to 64 (clamped to the latent), the kernels up to 16: on CUDA, auto
    must pick the reference for a wider window (window 64 failed in Triton's build, 23-32 needed more shared
    memory than an H100 has)."""
    from langbrt.kernels.dispatch import MAX_KERNEL_WINDOW, AttentionImpl, resolve_impl

    monkeypatch.delenv(ENV_VAR, raising=False)
    cuda = torch.device("cuda")  # resolve_impl only reads its type: no GPU needed
    assert resolve_impl("auto", cuda, MAX_KERNEL_WINDOW) is AttentionImpl.TRITON
    assert resolve_impl("auto", cuda, MAX_KERNEL_WINDOW + 1) is AttentionImpl.REFERENCE
    assert resolve_impl("auto", cuda) is AttentionImpl.TRITON
    assert resolve_impl("triton", cuda, MAX_KERNEL_WINDOW + 1) is AttentionImpl.TRITON  # asked for: its clear error
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    got = kernel_attention(x, mf, params, 2, MAX_KERNEL_WINDOW, 3)  # the widest window builds and is right
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 2, MAX_KERNEL_WINDOW, 3)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_wgmma_asked_for_the_folded_kernel_leaves_its_direct_fallback_on_mma_sync(monkeypatch):
    """The folded kernel falls back to the direct one when its fold overflows fp16; LANGBRT_TCA_MMA=wgmma then
    meant the folded kernel, and the direct kernel's wgmma build is wrong: the fallback builds mma.sync."""
    monkeypatch.setenv(tca_choices.MMA_ENV_VAR, "wgmma")
    monkeypatch.delenv(tca_choices.KERNEL_ENV_VAR, raising=False)
    assert tca_choices.mma_choice(tca_choices.KernelChoice.FOLDED) is tca_choices.MmaChoice.WGMMA
    assert tca_choices.mma_choice(tca_choices.KernelChoice.DIRECT) is tca_choices.MmaChoice.MMA


def test_a_refused_kernel_and_mma_pair_is_one_error_when_a_model_loads(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv(tca_choices.MMA_ENV_VAR, "wgmma")
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "direct")
    with pytest.raises(LangBRTInputError, match="cannot build the direct kernel"):
        check_impl_runs("auto", torch.device("cuda"))
    check_impl_runs("reference", torch.device("cuda"))  # the kernels are not used: nothing to refuse


def test_bad_env_values_are_one_clear_input_error(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "fast")
    with pytest.raises(LangBRTInputError, match="LANGBRT_ATTENTION='fast' is not one of"):
        windowed_sigmoid_cross_attention(*random_inputs(1, 8, 8, 16, 3), random_params(16, 3, 2), 2, 4, 0)
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv(tca_choices.MMA_ENV_VAR, "tensor-cores")
    with pytest.raises(LangBRTInputError, match="LANGBRT_TCA_MMA='tensor-cores' is not one of: mma, wgmma"):
        tca_choices.mma_choice(tca_choices.KernelChoice.DIRECT)
    monkeypatch.setenv(tca_choices.MMA_ENV_VAR, "wgmma")
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "direct")
    with pytest.raises(LangBRTInputError, match="LANGBRT_TCA_MMA=wgmma cannot build the direct kernel"):
        tca_choices.mma_choice(tca_choices.KernelChoice.DIRECT)
    monkeypatch.delenv(tca_choices.MMA_ENV_VAR)
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "fused")
    with pytest.raises(LangBRTInputError, match="LANGBRT_TCA_KERNEL='fused' is not one of: direct, folded"):
        tca_choices.kernel_choice()


@pytest.mark.parametrize(("choice", "during"), [("mma", "1"), ("wgmma", None)])
def test_each_launch_builds_under_the_chosen_mma_path(monkeypatch, choice, during):
    """Triton reads DISABLE_MMA_V3 when it builds (and keys its cache on it): the launch must hold it set for
    the mma path, leave it alone for wgmma, and restore the caller's environment either way."""
    seen = []

    class RecordingKernel:
        def __init__(self, real):
            self.real = real

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.append(os.environ.get("DISABLE_MMA_V3"))
                return self.real[grid](*args, **kwargs)
            return launch

    real_autotuned = tca_triton._autotuned_kernel
    monkeypatch.setattr(tca_triton, "_autotuned_kernel",
                        lambda kernel, bucket: RecordingKernel(real_autotuned(kernel, bucket)))
    monkeypatch.delenv("DISABLE_MMA_V3", raising=False)
    monkeypatch.setenv(tca_choices.MMA_ENV_VAR, choice)
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    got = kernel_attention(x, mf, params, 2, 4, 2)
    assert seen == [during]
    assert "DISABLE_MMA_V3" not in os.environ
    torch.testing.assert_close(got, windowed_sigmoid_cross_attention_reference(x, mf, params, 2, 4, 2),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # alpha 1e-6: saturated logits
def test_each_kernel_builds_on_its_own_default_mma_path(monkeypatch):
    """DEFAULT_MMA is per kernel: with LANGBRT_TCA_MMA unset, a folded launch must build on the folded
    kernel's path and a direct one on the direct kernel's, including the direct kernel a folded call falls
    back to when its fold overflows fp16."""
    seen = []

    class RecordingKernel:
        def __init__(self, kernel, real):
            self.kernel, self.real = kernel, real

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.append((self.kernel.value, os.environ.get("DISABLE_MMA_V3")))
                return self.real[grid](*args, **kwargs)
            return launch

    real_autotuned = tca_triton._autotuned_kernel
    monkeypatch.setattr(tca_triton, "_autotuned_kernel",
                        lambda kernel, bucket: RecordingKernel(kernel, real_autotuned(kernel, bucket)))
    monkeypatch.delenv(tca_choices.MMA_ENV_VAR, raising=False)
    monkeypatch.delenv("DISABLE_MMA_V3", raising=False)
    monkeypatch.setitem(tca_choices.DEFAULT_MMA, tca_choices.KernelChoice.FOLDED, tca_choices.MmaChoice.WGMMA)
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "direct")
    kernel_attention(x, mf, params, 2, 4, 2)
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "folded")
    kernel_attention(x, mf, params, 2, 4, 2)
    overflowing = cast_params(params, torch.float16)
    with torch.no_grad():
        overflowing.alpha.fill_(1e-6)
    kernel_attention(x.half(), mf.half(), overflowing, 2, 4, 2)
    assert seen == [("direct", "1"), ("folded", None), ("direct", "1")]


def test_batches_of_different_grid_sizes_are_tuned_apart(monkeypatch):
    """The best width depends on the grid size: a batch must not inherit the config another batch was tuned at."""
    buckets = []
    real_autotuned = tca_triton._autotuned_kernel

    def recording(kernel, bucket: int):
        buckets.append(bucket)
        return real_autotuned(kernel, bucket)

    monkeypatch.setattr(tca_triton, "_autotuned_kernel", recording)
    params = random_params(16, 3, 2)
    for batch in (1, 1, 2, 8):
        x, mf = random_inputs(batch, 8, 8, 16, 3)  # 4 windows of 4x4 per image
        kernel_attention(x, mf, params, 2, 4, 0)
    assert buckets == [tca_launch_configs.grid_bucket(4 * b) for b in (1, 1, 2, 8)]
    assert len(set(buckets)) == 3
    direct = tca_choices.KernelChoice.DIRECT
    assert real_autotuned(direct, buckets[0]) is real_autotuned(direct, buckets[0])  # tuned once, then reused
    assert real_autotuned(direct, buckets[0]) is not real_autotuned(direct, buckets[-1])


def test_mma_scopes_in_concurrent_threads_never_see_the_variable_unset(monkeypatch):
    """Each thread's launch must run with DISABLE_MMA_V3 set even while other threads leave their scopes."""
    monkeypatch.delenv("DISABLE_MMA_V3", raising=False)
    seen = []

    def launch() -> None:
        with tca_choices.mma_build_scope(tca_choices.MmaChoice.MMA):
            time.sleep(0.02)  # a launch in progress while other threads enter and leave
            seen.append(os.environ.get("DISABLE_MMA_V3"))

    threads = [threading.Thread(target=launch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == ["1"] * 4
    assert "DISABLE_MMA_V3" not in os.environ


# Tiles that do not fit the channels exactly: 49-token windows, a masked second channel tile, map channels
# that fill BLOCK_K = 16 (so the ones channel needs 32), fewer channels than one tile.
FOLDED_ODD_CASES = [
    pytest.param(1, 17, 18, 72, 9, 3, 7, 1, id="window7-C72-chunks64+16-masked"),
    pytest.param(1, 20, 7, 64, 16, 2, 8, 0, id="Cm16-needs-block_k32"),
    pytest.param(2, 11, 9, 4, 1, 1, 8, 1, id="C4-narrower-than-a-tile"),
    pytest.param(1, 12, 6, 128, 12, 4, 4, 1, id="C128-chunks16+128"),
    # 13 map channels, the ones channel and 3 region channels: BLOCK_K 32 only because the block is shifted
    pytest.param(1, 8, 12, 32, 13, 2, 4, 2, id="Cm13-region-channels-need-block_k32"),
]


@pytest.mark.parametrize(("B", "H", "W", "C", "Cm", "heads", "window", "shift"), CPU_CASES + FOLDED_ODD_CASES)
def test_folded_kernel_matches_reference(monkeypatch, B, H, W, C, Cm, heads, window, shift):
    """LANGBRT_TCA_KERNEL=folded: the weights folded through the map features (tca_fold.py)."""
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "folded")
    x, mf = random_inputs(B, H, W, C, Cm)
    params = random_params(C, Cm, heads)
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, heads, window, shift)
    torch.testing.assert_close(kernel_attention(x, mf, params, heads, window, shift), expected,
                               atol=1e-4, rtol=1e-4)
    got_half = kernel_attention(x.half(), mf.half(), cast_params(params, torch.float16), heads, window, shift)
    # the GPU tests' bound: outputs reach ~80 here, where one fp16 ulp is 0.06
    torch.testing.assert_close(got_half.float(), expected, rtol=0,
                               atol=GPU_TOLERANCE[torch.float16] * expected.abs().max().item())


@pytest.mark.parametrize("fast_sigmoid", [False, True])
def test_folded_fp16_logit_channel_past_fp16_range_saturates_instead_of_nan(monkeypatch, fast_sigmoid):
    """A folded logit channel (x~ QK_h + qk_h, 1 / alpha and the sigmoid's scale included) beyond 65504 is
    rounded to fp16 for the score dot: as inf it met the zero [m~ | 1] row of every padded key (0 * inf =
    NaN outputs, tca_window_jit.to_operand); saturated, every real key's logit stays far past 1 and the weights
    are the reference's. Here the ones channel carries ~1.8e5 (large biases), on a padded 6 x 7 map."""
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "folded")
    x, mf = random_inputs(1, 6, 7, 16, 3)
    params = random_params(16, 3, 2)
    with torch.no_grad():
        params.q_weight.zero_()  # every query bq: no x QK_h term to cancel the bias channel's
        params.q_bias.fill_(30.0)
        params.k_bias.fill_(30.0)  # qk_h's ones channel: bq_h . bk_h / alpha_h = 8 * 900 / alpha_h ...
        params.alpha.fill_(0.04)  # ... = 1.8e5 logits, whose fold (fp32 biases, fp16 QK_h) stays finite
    half = cast_params(params, torch.float16)
    expected = windowed_sigmoid_cross_attention_reference(x.half().float(), mf.half().float(),
                                                          cast_params(half, torch.float32), 2, 4, 0)
    # unshifted: at such logits a shifted block's region mask would not hold (tca_folded_jit._folded_window)
    got = kernel_attention(x.half(), mf.half(), half, 2, 4, 0, fast_sigmoid=fast_sigmoid).float()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=0, atol=GPU_TOLERANCE[torch.float16] * expected.abs().max().item())


@pytest.mark.parametrize("kernel", ["direct", "folded"])
def test_alpha_of_any_shape_with_one_temperature_per_head_is_accepted(monkeypatch, kernel):
    """check_arguments and the reference take alpha of any shape with `num_heads` elements; the fold broadcast
    a (1, heads) alpha against (heads, C, Cm + 1) and failed with a RuntimeError about tensor sizes."""
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, kernel)
    x, mf = random_inputs(1, 6, 7, 16, 3)
    params = _replaced(random_params(16, 3, 2), "alpha", torch.tensor([[0.7, 1.3]]))
    kx, kmf, kparams, _ = leaf_copies(x, mf, params)
    rx, rmf, rparams, _ = leaf_copies(x, mf, params)
    got = kernel_attention(kx, kmf, kparams, 2, 4, 2)
    expected = windowed_sigmoid_cross_attention_reference(rx, rmf, rparams, 2, 4, 2)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    got.sum().backward()
    expected.sum().backward()
    assert kparams.alpha.grad.shape == (1, 2)
    torch.testing.assert_close(kparams.alpha.grad, rparams.alpha.grad, atol=1e-5, rtol=1e-5)


def test_folded_kernel_sees_weight_updates(monkeypatch):
    """The folded weights are cached: an in-place update (an optimizer step) must still reach the kernel."""
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "folded")
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    kernel_attention(x, mf, params, 2, 4, 2)
    with torch.no_grad():
        params.k_weight.add_(0.5)
        params.out_weight.mul_(-1.0)
        params.alpha.mul_(3.0)  # learnable: folded into QK_h, so it must refold too
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 2, 4, 2)
    torch.testing.assert_close(kernel_attention(x, mf, params, 2, 4, 2), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("kernel", ["direct", "folded"])
def test_fast_sigmoid_form_matches_reference(monkeypatch, kernel, shift):
    """fast_sigmoid folds s / 2 into the logits and masks other Swin regions towards -inf (the exact form:
    +inf). The interpreter evaluates 0.5 tanh(z) + 0.5 exactly, so the fast form's algebra is checked here;
    tanh.approx's own error only on a GPU (test_gpu_fast_sigmoid_matches_the_reference)."""
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, kernel)
    x, mf = random_inputs(1, 16, 12, 16, 3)
    params = random_params(16, 3, 2)
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 2, 4, shift)
    torch.testing.assert_close(kernel_attention(x, mf, params, 2, 4, shift, fast_sigmoid=True), expected,
                               atol=1e-4, rtol=1e-4)
    half_params = cast_params(params, torch.float16)
    got_half = kernel_attention(x.half(), mf.half(), half_params, 2, 4, shift, fast_sigmoid=True)
    torch.testing.assert_close(got_half.float(), expected, rtol=0,
                               atol=GPU_TOLERANCE[torch.float16] * expected.abs().max().item())


@pytest.mark.parametrize(("setting", "dtype", "device", "interpreting", "tanh"), [
    pytest.param(None, torch.float16, "cuda", False, True, id="auto-fp16-cuda"),
    pytest.param("auto", torch.bfloat16, "cuda", False, True, id="auto-bf16-cuda"),
    pytest.param(None, torch.float32, "cuda", False, False, id="auto-fp32-cuda"),
    pytest.param(None, torch.float16, "cuda", True, False, id="auto-fp16-interpreter"),
    pytest.param(None, torch.float16, "cpu", False, False, id="auto-fp16-cpu"),
    pytest.param("EXACT", torch.float16, "cuda", False, False, id="exact-fp16-cuda"),
    pytest.param("tanh", torch.float32, "cpu", True, True, id="tanh-fp32-interpreter"),
])
def test_the_default_sigmoid_form_is_tanh_in_half_precision_on_cuda(monkeypatch, setting, dtype, device,
                                                                    interpreting, tanh):
    """LANGBRT_TCA_SIGMOID (tca_choices.SigmoidChoice): auto computes the tanh form for fp16 / bf16 on CUDA,
    whose error is below the half-precision rounding of the weight right after it, and the exact form for
    fp32 and in the interpreter; exact and tanh force one form for every launch."""
    if setting is None:
        monkeypatch.delenv(tca_choices.SIGMOID_ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(tca_choices.SIGMOID_ENV_VAR, setting)
    monkeypatch.setattr(tca_choices, "INTERPRETING", interpreting)
    assert tca_choices.fast_sigmoid_for(_OnDevice(dtype, torch.device(device))) is tanh


class _OnDevice:
    """What fast_sigmoid_for reads of a tensor, for a device this machine may not have."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device


def test_the_kernel_computes_the_form_the_environment_asks_for(monkeypatch):
    """A call that does not say (fast_sigmoid=None, as the model's) builds the form LANGBRT_TCA_SIGMOID picks,
    read at each launch; one that says keeps its own; a bad value is one clear error at the call, under
    torch.compile too (read inside the opaque op, not in traced code), and when a model loads."""
    built = []
    real_constants = tca_triton.kernel_constants
    monkeypatch.setattr(tca_triton, "kernel_constants",
                        lambda *a, **k: built.append(k["fast_sigmoid"]) or real_constants(*a, **k))
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 2, 4, 2)
    for setting, fast in (("tanh", True), ("exact", False)):
        monkeypatch.setenv(tca_choices.SIGMOID_ENV_VAR, setting)
        torch.testing.assert_close(kernel_attention(x, mf, params, 2, 4, 2), expected, atol=1e-4, rtol=1e-4)
        kernel_attention(x, mf, params, 2, 4, 2, fast_sigmoid=not fast)
        assert built[-2:] == [fast, not fast]
    monkeypatch.setenv(tca_choices.SIGMOID_ENV_VAR, "fastest")
    bad_value = "LANGBRT_TCA_SIGMOID='fastest' is not one of: auto, exact, tanh"
    with pytest.raises(LangBRTInputError, match=bad_value):
        kernel_attention(x, mf, params, 2, 4, 2)
    torch._dynamo.reset()
    with pytest.raises(LangBRTInputError, match=bad_value):
        torch.compile(kernel_attention, fullgraph=True)(x, mf, params, 2, 4, 2)
    with pytest.raises(LangBRTInputError, match="LANGBRT_TCA_SIGMOID"):
        check_impl_runs("triton", torch.device("cpu"))


@pytest.mark.parametrize("size", [pytest.param(24, id="whole-windows"), pytest.param(20, id="padded")])
def test_folded_kernel_at_the_paper_width_with_interior_and_border_windows(monkeypatch, size):
    """C = 96 runs as channel tiles of 64 and 32 (`channel_chunks`); a 3x3 grid of 8x8 windows shifted by 4
    has interior windows (one Swin region) and border windows (up to four), 20x20 pads the last ones.
    fp32 masks the regions with a select, fp16 with the region channels of the score dot."""
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "folded")
    x, mf = random_inputs(1, size, size, 96, 9)
    params = random_params(96, 9, 3)
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 3, 8, 4)
    torch.testing.assert_close(kernel_attention(x, mf, params, 3, 8, 4), expected, atol=1e-4, rtol=1e-4)
    got_half = kernel_attention(x.half(), mf.half(), cast_params(params, torch.float16), 3, 8, 4)
    torch.testing.assert_close(got_half.float(), expected, rtol=0,
                               atol=GPU_TOLERANCE[torch.float16] * expected.abs().max().item())


def test_region_channels_mask_other_regions_even_where_logits_saturate(monkeypatch):
    """The fp16 folded kernel's Swin mask is a logit offset, not a select: keys of another region must
    still get no weight when the logits are large (alpha 0.05: 20x a trained layer's), and keys of the
    query's own region must keep theirs."""
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "folded")
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    with torch.no_grad():
        params.alpha.fill_(0.05)
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 2, 4, 2)
    half_params = cast_params(params, torch.float16)
    assert tca_triton.folded_weights(half_params, 2, torch.float16, tca_triton.folded_logits(3, 4, 2, False)).finite
    got = kernel_attention(x.half(), mf.half(), half_params, 2, 4, 2)
    torch.testing.assert_close(got.float(), expected, rtol=0,
                               atol=GPU_TOLERANCE[torch.float16] * expected.abs().max().item())


@pytest.mark.parametrize("sigmoid", ["exact", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_region_channels_hold_at_logits_in_the_thousands(monkeypatch, dtype, sigmoid):
    """alpha 2e-3 and 2e-4 (logits up to ~2 650 and ~26 500 in this case): a key of another Swin region must
    still get no weight. The folded kernel once added +-1024 per region channel, and past a logit of ~1 420
    such a key got a weight near 1 (fp16 error 0.10 and 0.78 of the output's scale, the direct kernel's
    0.003 and 0.001). Held to twice the direct kernel's error: at these logits half-precision rounding of
    logits near 0 alone exceeds GPU_TOLERANCE, in both kernels."""
    monkeypatch.setenv(tca_choices.SIGMOID_ENV_VAR, sigmoid)
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    for alpha in (2e-3, 2e-4):
        with torch.no_grad():
            params.alpha.fill_(alpha)
        expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 2, 4, 2)
        errors = {}
        for kernel in tca_choices.KernelChoice:
            monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, kernel.value)
            got = kernel_attention(x.to(dtype), mf.to(dtype), cast_params(params, dtype), 2, 4, 2).float()
            errors[kernel] = (got - expected).abs().max().item() / expected.abs().max().item()
        direct, folded = errors[tca_choices.KernelChoice.DIRECT], errors[tca_choices.KernelChoice.FOLDED]
        assert folded <= 2 * direct, (alpha, errors)


@pytest.mark.parametrize("sigmoid", ["exact", "tanh"])
@pytest.mark.parametrize(("x_scale", "map_scale"), [(1.0, 100.0), (10.0, 10.0)], ids=["maps-x100", "x-and-maps-x10"])
def test_region_channels_hold_past_fp16s_range_of_logits(monkeypatch, sigmoid, x_scale, map_scale):
    """fp16, alpha 1e-3, map features past channel 0 (the blemish map stays in [0, 1]) and x scaled up:
    logits reach ~5e5, and a saturated logit channel (+-65504) times a map feature far past 2^15. When only
    the query's region channels carried the mask (2^15, keys 0 / 1 bits) a key of another Swin region then
    got a weight near 1 (error 0.85-0.87 of the output's scale, the direct kernel's 4e-4); with 2^15 on both
    sides (2^30 per band) the folded kernel is held to twice the direct kernel's error, as at lower logits."""
    monkeypatch.setenv(tca_choices.SIGMOID_ENV_VAR, sigmoid)
    x, mf = random_inputs(1, 8, 8, 16, 3)
    x, mf = x * x_scale, torch.cat([mf[..., :1], mf[..., 1:] * map_scale], dim=-1)  # (1, 8, 8, 16), (1, 8, 8, 3)
    params = random_params(16, 3, 2)
    with torch.no_grad():
        params.alpha.fill_(1e-3)
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 2, 4, 2)
    errors = {}
    for kernel in tca_choices.KernelChoice:
        monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, kernel.value)
        got = kernel_attention(x.half(), mf.half(), cast_params(params, torch.float16), 2, 4, 2).float()
        errors[kernel] = (got - expected).abs().max().item() / expected.abs().max().item()
    assert errors[tca_choices.KernelChoice.FOLDED] <= 2 * errors[tca_choices.KernelChoice.DIRECT], errors


@pytest.mark.parametrize(("B", "programs_per_sm", "programs_per_image"), [
    pytest.param(1, 3, 3, id="3-programs-of-3-windows"),  # windows 0 3 6 / 1 4 7 / 2 5 8
    pytest.param(1, 2, 2, id="2-programs-of-5-and-4-windows"),  # 0 2 4 6 8 / 1 3 5 7: one ends a window early
    pytest.param(2, 3, 1, id="one-program-per-image"),  # 3 * 1 SM // 2 images: every window in one loop
    pytest.param(1, 20, 9, id="more-programs-than-windows"),  # one window each: the loop runs once
])
def test_persistent_folded_kernel_matches_reference(monkeypatch, B, programs_per_sm, programs_per_image):
    """A persistent launch (LaunchConfig.programs_per_sm): each program walks the windows p, p + P, ... of
    its image and loads the next one's activations before this one's maths. 20x20 with 8x8 windows shifted
    by 4 (a 3x3 grid, the last row and column padded, interior and border windows) at the paper's width;
    the interpreter counts as one SM. The output is poisoned first: a window no program computed fails."""
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "folded")
    grids = []
    real_programs = tca_launch_configs.persistent_programs
    monkeypatch.setattr(tca_triton, "persistent_programs", lambda *a: grids.append(real_programs(*a)) or grids[-1])
    poison_new_tensors(monkeypatch)
    x, mf = random_inputs(B, 20, 20, 96, 9)
    params = random_params(96, 9, 3)
    config = tca_launch_configs.LaunchConfig(4, head_stages=1, programs_per_sm=programs_per_sm)
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 3, 8, 4)
    got = tca_triton._launch(x, mf, *params.tensors(), 3, 8, 4, False, config=config)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    half_params = cast_params(params, torch.float16)
    got_half = tca_triton._launch(x.half(), mf.half(), *half_params.tensors(), 3, 8, 4, False, config=config)
    torch.testing.assert_close(got_half.float(), expected, rtol=0,
                               atol=GPU_TOLERANCE[torch.float16] * expected.abs().max().item())
    assert grids == [programs_per_image, programs_per_image]


@pytest.mark.parametrize(("programs_per_sm", "sm_count", "windows", "batch", "programs"), [
    (3, 132, 64, 32, 12),  # 384 programs on 396 slots: rounded down, no second wave
    (3, 132, 64, 1, 64),  # at most one program per window
    (2, 132, 64, 300, 1),  # at least one per image
])
def test_persistent_programs_fill_the_sms_without_a_second_wave(programs_per_sm, sm_count, windows, batch,
                                                                 programs):
    assert tca_launch_configs.persistent_programs(programs_per_sm, sm_count, windows, batch) == programs


def test_programs_per_sm_is_the_folded_kernels_only():
    with pytest.raises(ValueError, match="programs_per_sm is the folded kernel's"):
        tca_launch_configs.LaunchConfig(4, programs_per_sm=3)
    with pytest.raises(ValueError, match="at least 1"):
        tca_launch_configs.LaunchConfig(4, head_stages=1, programs_per_sm=0)
    assert tca_launch_configs.LaunchConfig(4, head_stages=1).kernel_arguments() == {
        "HEAD_STAGES": 1, "PROGRAMS_PER_SM": 0, "OUTPUT_AFTER_HEADS": False}


def test_output_after_heads_is_the_folded_kernels_unpipelined_loop_only():
    """It unrolls the folded kernel's head loop: nothing left to pipeline, and the direct kernel has no such
    loop form."""
    for wrong in ({}, {"head_stages": 2}):
        with pytest.raises(ValueError, match="output_after_heads is the folded kernel's"):
            tca_launch_configs.LaunchConfig(4, output_after_heads=True, **wrong)
    config = tca_launch_configs.LaunchConfig(4, 80, head_stages=1, output_after_heads=True)
    assert config.kernel_arguments()["OUTPUT_AFTER_HEADS"] is True


@pytest.mark.parametrize(("B", "H", "W", "shift"), [
    pytest.param(2, 16, 16, 0, id="unshifted-whole-windows"),
    pytest.param(1, 20, 20, 4, id="shifted-padded"),  # 3x3 windows, the last row and column padded
    pytest.param(1, 16, 24, 4, id="shifted-wide"),
])
def test_output_after_heads_matches_reference(monkeypatch, B, H, W, shift):
    """The unrolled head loop with the output projection after the last head (OUTPUT_AFTER_HEADS) at the
    paper's width (C = 96: two channel tiles, each projected from all three heads' mixes) and 8x8
    windows: fp32 to the reference's 1e-4, fp16 within the GPU tests' bound, and equal to the launch that
    projects with each head. The output is poisoned first: a tile never stored fails."""
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "folded")
    poison_new_tensors(monkeypatch)
    x, mf = random_inputs(B, H, W, 96, 9)
    params = random_params(96, 9, 3)
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 3, 8, shift)
    after = tca_launch_configs.LaunchConfig(4, head_stages=1, output_after_heads=True)
    with_each_head = tca_launch_configs.LaunchConfig(4, head_stages=1)
    got = tca_triton._launch(x, mf, *params.tensors(), 3, 8, shift, False, config=after)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    half = (x.half(), mf.half(), *cast_params(params, torch.float16).tensors())
    got_half = tca_triton._launch(*half, 3, 8, shift, False, config=after)
    torch.testing.assert_close(got_half.float(), expected, rtol=0,
                               atol=GPU_TOLERANCE[torch.float16] * expected.abs().max().item())
    torch.testing.assert_close(got_half, tca_triton._launch(*half, 3, 8, shift, False, config=with_each_head))


@pytest.mark.parametrize(("channels", "tokens", "chunks"), [
    (96, 64, (64, 32)), (64, 64, (64, 0)), (128, 64, (64, 64)), (24, 16, (16, 16)), (16, 16, (16, 0)),
    (8, 16, (16, 0)), (40, 64, (32, 16)), (200, 64, (64, 256)),
])
def test_channel_chunks_cover_the_channels_with_tiles_no_wider_than_a_window(channels, tokens, chunks):
    assert tca_triton.channel_chunks(channels, tokens) == chunks


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # logits of +-1e5: saturated
def test_folded_path_falls_back_to_the_direct_kernel_when_the_fold_overflows(monkeypatch):
    """A tiny alpha overflows fp16 once folded into QK_h; the direct kernel divides by it in fp32."""
    x, mf = random_inputs(1, 8, 8, 16, 3, dtype=torch.float16)
    params = cast_params(random_params(16, 3, 2), torch.float16)
    with torch.no_grad():
        params.alpha.fill_(1e-6)
    logits = tca_triton.folded_logits(3, 4, 2, fast_sigmoid=False)
    assert not tca_triton.folded_weights(params, 2, torch.float16, logits).finite
    direct = kernel_attention(x, mf, params, 2, 4, 2)
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "folded")
    folded = kernel_attention(x, mf, params, 2, 4, 2)
    assert torch.isfinite(folded).all()
    torch.testing.assert_close(folded, direct, atol=0, rtol=0)


def test_tiny_model_output_is_the_same_with_kernel_and_reference(monkeypatch):
    """The interface checks rely on: LANGBRT_ATTENTION switches a whole model between the two paths."""
    from langbrt import LangBRT, LangBRTConfig
    from langbrt.text import default_text_encoder

    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder()).eval()
    images = torch.rand(1, 3, 64, 64)
    prompts = [["acne on the right cheek", "dark circles under the eyes"]]
    outputs = {}
    for impl in ("reference", "triton"):
        monkeypatch.setenv(ENV_VAR, impl)
        with torch.no_grad():
            outputs[impl] = model(images, prompts)
    torch.testing.assert_close(outputs["triton"].image, outputs["reference"].image, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(outputs["triton"].maps, outputs["reference"].maps, atol=1e-5, rtol=1e-5)


def test_tiny_model_folds_each_blocks_weights_once_across_inference_calls(monkeypatch):
    """The folded kernel's fold is cached by the identities of the TCA tensors: the model must hand it the
    same alpha tensor each call (a fresh softplus refolded every attention, with a device sync in fp16
    that broke CUDA graph capture), also in inference mode, and a new one once alpha_raw changes."""
    from langbrt import LangBRT, LangBRTConfig
    from langbrt.kernels import tca_fold
    from langbrt.modules.tca import TargetAwareCrossAttention
    from langbrt.text import default_text_encoder

    folds = []
    real_fold = tca_fold.fold_tca_weights
    monkeypatch.setattr(tca_fold, "fold_tca_weights", lambda *args: folds.append(args[0]) or real_fold(*args))
    monkeypatch.setenv(ENV_VAR, "triton")
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "folded")
    tca_fold.clear_cache()
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder()).eval()
    blocks = [m for m in model.modules() if isinstance(m, TargetAwareCrossAttention)]
    images, prompts = torch.rand(1, 3, 64, 64), [["acne on the right cheek"]]
    with torch.inference_mode():
        first = model(images, prompts).image
        assert len(folds) == len(blocks)
        assert torch.equal(model(images, prompts).image, first)
    assert len(folds) == len(blocks)
    with torch.no_grad():
        blocks[0].alpha_raw.add_(0.5)  # an optimizer step or load_state_dict
    with torch.inference_mode():
        model(images, prompts)
    assert len(folds) == len(blocks) + 1
    torch.testing.assert_close(folds[-1].alpha, torch.nn.functional.softplus(blocks[0].alpha_raw))


def config_id(kernel: tca_choices.KernelChoice, config: tca_launch_configs.LaunchConfig) -> str:
    stages = f"-{config.head_stages}stage" if config.head_stages is not None else ""
    persistent = f"-{config.programs_per_sm}persm" if config.programs_per_sm is not None else ""
    after = "-after" if config.output_after_heads else ""
    return f"{kernel.value}-{config.num_warps}w-{config.maxnreg or 'any'}reg{stages}{persistent}{after}"


@pytest.mark.parametrize(("kernel", "config"), [
    pytest.param(kernel, config, id=config_id(kernel, config))
    for kernel, configs in tca_launch_configs.LAUNCH_CONFIGS.items() for config in configs])
def test_each_autotuned_config_launches_its_kernel(monkeypatch, kernel, config):
    """An explicit config reaches the kernel with its constexprs (the folded kernel's HEAD_STAGES: the
    interpreter runs a pipelined loop like a plain one, so this checks the plumbing; the GPU test below
    checks each build)."""
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, kernel.value)
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, 2, 4, 2)
    got = tca_triton._launch(x, mf, *params.tensors(), 2, 4, 2, False, config=config)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kernel", list(tca_choices.KernelChoice))
def test_the_autotuner_times_4_warps_for_half_precision_and_wider_blocks_for_fp32(kernel):
    configs = [c.triton_config() for c in tca_launch_configs.LAUNCH_CONFIGS[kernel]]
    for dtype, want_4_warps in ((torch.float16, True), (torch.bfloat16, True), (torch.float32, False)):
        kept = tca_launch_configs.configs_for_dtype(configs, {"x_ptr": torch.empty(0, dtype=dtype)})
        assert kept and all((c.num_warps == 4) == want_4_warps for c in kept), (dtype, kept)
        assert len(kept) == sum((c.num_warps == 4) == want_4_warps for c in configs)
    autotuner = tca_triton._autotuned_kernel(kernel, 0)
    assert autotuner.early_config_prune is tca_launch_configs.configs_for_dtype


def test_a_config_of_the_other_kernel_is_one_clear_error(monkeypatch):
    x, mf = random_inputs(1, 8, 8, 16, 3)
    params = random_params(16, 3, 2)
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "direct")
    with pytest.raises(ValueError, match="only the folded one has head_stages"):
        tca_triton._launch(x, mf, *params.tensors(), 2, 4, 2, False, config=tca_launch_configs.LaunchConfig(4, None, 2))
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, "folded")
    with pytest.raises(ValueError, match="does not fit the folded kernel"):
        tca_triton._launch(x, mf, *params.tensors(), 2, 4, 2, False, config=tca_launch_configs.LaunchConfig(4))


# The paper preset's latent shape: B=2, 64x64 latent, C=96, 3 heads, window 8, 9 map channels.
PAPER = dict(B=2, H=64, W=64, C=96, Cm=9, heads=3, window=8)
@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("shift", [0, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_gpu_paper_shape_forward_and_backward(dtype, shift):
    p = PAPER
    x, mf = random_inputs(p["B"], p["H"], p["W"], p["C"], p["Cm"], device="cuda")
    params = random_params(p["C"], p["Cm"], p["heads"], device="cuda")
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, p["heads"], p["window"], shift)

    xh, mfh, ph = x.to(dtype), mf.to(dtype), cast_params(params, dtype)
    kx, kmf, kparams, kernel_leaves = leaf_copies(xh, mfh, ph)
    got = kernel_attention(kx, kmf, kparams, p["heads"], p["window"], shift)
    assert got.dtype == dtype
    err = (got.float() - expected).abs().max().item()
    assert err <= GPU_TOLERANCE[dtype] * expected.abs().max().item(), err

    grad_out = torch.randn_like(got)
    got.backward(grad_out)
    rx, rmf, rparams, ref_leaves = leaf_copies(xh, mfh, ph)
    reference = windowed_sigmoid_cross_attention_reference(rx, rmf, rparams, p["heads"], p["window"], shift)
    reference.backward(grad_out)
    for got_leaf, ref_leaf in zip(kernel_leaves, ref_leaves, strict=True):
        torch.testing.assert_close(got_leaf.grad, ref_leaf.grad)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize(("kernel", "config"), [
    pytest.param(kernel, config, id=config_id(kernel, config))
    for kernel, configs in tca_launch_configs.LAUNCH_CONFIGS.items() for config in configs])
@pytest.mark.parametrize("shift", [0, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_gpu_every_autotuned_config_matches_reference(monkeypatch, dtype, shift, kernel, config):
    """Each grid size may pick another config, so every config the autotuner times must be right, for both
    kernels, with and without the shift (a shifted block carries the Swin mask). Batch 16, so that a
    persistent config's programs loop over several windows (2-4 on an H100's 132 SMs), into an output
    poisoned with NaN: a window no program computed fails."""
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, kernel.value)
    poison_new_tensors(monkeypatch)
    p = PAPER
    x, mf = random_inputs(16, p["H"], p["W"], p["C"], p["Cm"], device="cuda")
    params = random_params(p["C"], p["Cm"], p["heads"], device="cuda")
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, p["heads"], p["window"], shift)
    got = tca_triton._launch(x.to(dtype), mf.to(dtype), *cast_params(params, dtype).tensors(), p["heads"],
                             p["window"], shift, False, config=config)
    err = (got.float() - expected).abs().max().item()
    assert err <= GPU_TOLERANCE[dtype] * expected.abs().max().item(), err


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("shift", [0, 4])
@pytest.mark.parametrize("kernel", list(tca_choices.KernelChoice))
def test_gpu_fast_sigmoid_matches_the_reference(monkeypatch, kernel, shift):
    """Both kernels' tanh form within the fp16 bound of the exact form: the direct one halves the logit
    itself, the folded one has it halved by the fold and its Swin regions masked by a logit of -2^15 or less,
    where tanh.approx.f32 returns exactly -1 (probed on an H100: -1.0 for every z <= -8, and
    0.5 tanh.approx(z) + 0.5 within 3.9e-6 of sigmoid(2 z) on [-12, 12]).

    Against the reference, not the exact form: the folded kernel's two forms round differently folded fp16
    weights (scale 1/2 against -log2 e), so they differ by up to its fp16 error (0.094 of a max |ref| of
    104 on the H100, each 0.12-0.16 from the reference), more than the 0.02 + 1 % this test once held them to.
    """
    monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, kernel.value)
    p = PAPER
    x, mf = random_inputs(p["B"], p["H"], p["W"], p["C"], p["Cm"], device="cuda")
    params = random_params(p["C"], p["Cm"], p["heads"], device="cuda")
    expected = windowed_sigmoid_cross_attention_reference(x, mf, params, p["heads"], p["window"], shift)
    for fast_sigmoid in (True, False):  # tanh: the half-precision default on CUDA (SigmoidChoice); exact
        got = kernel_attention(x.half(), mf.half(), cast_params(params, torch.float16), p["heads"], p["window"],
                               shift, fast_sigmoid=fast_sigmoid)
        err = (got.float() - expected).abs().max().item()
        assert err <= GPU_TOLERANCE[torch.float16] * expected.abs().max().item(), (fast_sigmoid, err)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_gpu_torch_compile_fullgraph_forward_and_backward(dtype):
    """Compiled, the op must still run the build `_launch` makes (on Hopper in half precision: not wgmma)."""
    p = PAPER
    x, mf = random_inputs(p["B"], p["H"], p["W"], p["C"], p["Cm"], device="cuda", dtype=dtype)
    params = random_params(p["C"], p["Cm"], p["heads"], device="cuda", dtype=dtype)
    args = (p["heads"], p["window"], 4)
    compiled = torch.compile(kernel_attention, fullgraph=True)
    kx = x.clone().requires_grad_()
    got = compiled(kx, mf, params, *args)
    rx = x.clone().requires_grad_()
    expected = windowed_sigmoid_cross_attention_reference(rx, mf, params, *args)
    tolerance = GPU_TOLERANCE[dtype]
    torch.testing.assert_close(got, expected, atol=tolerance * expected.abs().max().item(), rtol=0)
    got.float().sum().backward()
    expected.float().sum().backward()
    torch.testing.assert_close(kx.grad, rx.grad, atol=tolerance * rx.grad.abs().max().item(), rtol=0)
