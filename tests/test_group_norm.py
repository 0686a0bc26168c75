"""The fused GroupNorm(+GELU) (kernels/group_norm.py; LANGBRT_GROUP_NORM, default auto: on CUDA) against
PyTorch's.

On CPU the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1); the GPU test
runs the compiled kernels at the shapes of the paper preset's encoder.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from stand_in_text import HashedTextEncoder

from langbrt.config import LangBRTConfig
from langbrt.errors import LangBRTInputError
from langbrt.model import LangBRT
from langbrt.modules import blocks
from langbrt.text import default_text_encoder

group_norm_kernels = pytest.importorskip("langbrt.kernels.group_norm", reason="triton is not installed")
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def reference(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
              gelu: bool) -> torch.Tensor:
    y = F.group_norm(x.float(), groups, None if weight is None else weight.float(),
                     None if bias is None else bias.float(), 1e-5)
    return F.gelu(y) if gelu else y


@pytest.mark.parametrize(("shape", "groups"), [
    pytest.param((2, 16, 37, 41), 8, id="odd-plane"),
    pytest.param((1, 8, 100, 90), 1, id="one-group-18-chunks"),  # 72 000 elements a row: chunks combined
    pytest.param((3, 12, 5, 7), 4, id="small"),
    pytest.param((2, 6, 50), 3, id="1d"),
])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("gelu", [True, False])
def test_kernels_match_group_norm_and_gelu(shape, groups, affine, gelu):
    torch.manual_seed(0)
    x = torch.randn(shape) * 3 + 5  # a mean far from 0: the statistics must not cancel
    weight, bias = (torch.randn(shape[1]), torch.randn(shape[1])) if affine else (None, None)
    expected = reference(x, groups, weight, bias, gelu)
    got = group_norm_kernels.group_norm_triton(x, groups, weight, bias, 1e-5, gelu=gelu)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    half = [None if t is None else t.half() for t in (weight, bias)]
    got_half = group_norm_kernels.group_norm_triton(x.half(), groups, *half, 1e-5, gelu=gelu)
    assert got_half.dtype == torch.float16
    torch.testing.assert_close(got_half.float(), reference(x.half(), groups, *half, gelu), atol=4e-3, rtol=4e-3)


@pytest.mark.parametrize(("shape", "groups"), [
    pytest.param((2, 16, 37, 41), 8, id="odd-plane"),
    pytest.param((1, 8, 100, 90), 1, id="one-group-several-chunks"),
    pytest.param((2, 24, 9, 7), 4, id="channels-not-a-power-of-two"),
    pytest.param((1, 96, 5, 3), 8, id="wide"),
])
@pytest.mark.parametrize("affine", [True, False])
def test_nhwc_kernels_match_group_norm_and_gelu_and_keep_the_layout(shape, groups, affine):
    """A channels_last map takes the NHWC kernels (whole pixels per program) and comes back channels_last."""
    torch.manual_seed(0)
    x = (torch.randn(shape) * 3 + 5).to(memory_format=torch.channels_last)
    assert group_norm_kernels.is_channels_last(x)
    weight, bias = (torch.randn(shape[1]), torch.randn(shape[1])) if affine else (None, None)
    got = group_norm_kernels.group_norm_triton(x, groups, weight, bias, 1e-5, gelu=True)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, reference(x, groups, weight, bias, True), atol=1e-5, rtol=1e-5)
    half = [None if t is None else t.half() for t in (weight, bias)]
    got_half = group_norm_kernels.group_norm_triton(x.half(), groups, *half, 1e-5, gelu=True)
    torch.testing.assert_close(got_half.float(), reference(x.half(), groups, *half, True), atol=4e-3, rtol=4e-3)


def test_channels_that_do_not_split_into_groups_are_refused():
    with pytest.raises(ValueError, match="do not split"):
        group_norm_kernels.group_norm_triton(torch.zeros(1, 6, 4, 4), 4, None, None, 1e-5)


def test_the_gelu_moved_into_the_norm_keeps_checkpoint_names():
    block = blocks.ResidualConvBlock(16)
    assert list(block.state_dict()) == [f"body.{i}.{p}" for i in (0, 2, 3, 5) for p in ("weight", "bias")]


def spy_on_kernel(monkeypatch) -> list[tuple]:
    calls = []
    real = group_norm_kernels.group_norm_triton
    monkeypatch.setattr(group_norm_kernels, "group_norm_triton", lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")  # the ONNX exporter traces the same way
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_fused_path_runs_only_when_asked_for_and_without_autograd(monkeypatch):
    calls = spy_on_kernel(monkeypatch)
    torch.manual_seed(0)
    block = blocks.ResidualConvBlock(16).eval()
    x = torch.randn(2, 16, 12, 12)
    with torch.no_grad():
        native = block(x)
    assert not calls  # default (auto) on a CPU tensor: native, even with the interpreter available
    monkeypatch.setenv(blocks.GROUP_NORM_ENV_VAR, "triton")
    with torch.no_grad():
        fused = block(x)
    assert len(calls) == 2
    torch.testing.assert_close(fused, native, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(block(x.to(memory_format=torch.channels_last)), native, atol=1e-5, rtol=1e-5)
        assert len(calls) == 4  # channels_last: the NHWC kernels
        norm, view = blocks.group_norm(16, gelu=True), x[:, :, ::2]  # a strided view: neither layout
        assert norm(view).is_contiguous() and len(calls) == 4  # PyTorch's ops, not a copy for the kernels
    block(x.requires_grad_()).sum().backward()  # training: PyTorch's ops, differentiable
    torch.jit.trace(block.requires_grad_(False), x.detach(), check_trace=False)  # export traces PyTorch's ops
    assert len(calls) == 4


def test_bad_env_value_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(blocks.GROUP_NORM_ENV_VAR, "fast")
    with pytest.raises(LangBRTInputError, match="LANGBRT_GROUP_NORM"), torch.no_grad():
        blocks.group_norm(8)(torch.zeros(1, 8, 2, 2))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
def test_tiny_model_output_is_the_same_with_the_fused_group_norm(monkeypatch, memory_format):
    calls = spy_on_kernel(monkeypatch)
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder()).eval().to(memory_format=memory_format)
    images = torch.rand(2, 3, 64, 64).to(memory_format=memory_format)
    prompts = [["acne on the right cheek"], ["dark circles under the eyes"]]
    with torch.inference_mode():
        native = model(images, prompts).image
        monkeypatch.setenv(blocks.GROUP_NORM_ENV_VAR, "triton")
        fused = model(images, prompts).image
    assert calls  # the encoder and decoder blocks took the kernels
    nhwc = [group_norm_kernels.is_channels_last(args[0]) for args in calls]
    assert all(nhwc) if memory_format == torch.channels_last else not any(nhwc)  # the layout flows through
    torch.testing.assert_close(fused, native, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize(("shape", "groups"), [((8, 32, 256, 256), 8), ((2, 96, 64, 64), 1)])
def test_gpu_kernels_match_group_norm_and_gelu(dtype, shape, groups, memory_format):
    torch.manual_seed(0)
    x = (torch.randn(shape, device="cuda") * 3 + 5).to(dtype).to(memory_format=memory_format)
    weight, bias = (torch.randn(shape[1], device="cuda").to(dtype) for _ in range(2))
    got = group_norm_kernels.group_norm_triton(x, groups, weight, bias, 1e-5, gelu=True)
    tolerance = 1e-4 if dtype == torch.float32 else 4e-3
    torch.testing.assert_close(got.float(), reference(x, groups, weight, bias, True), atol=tolerance, rtol=tolerance)


def test_auto_fuses_cuda_tensors_in_inference_only(monkeypatch):
    """The default picks the kernels by device: a CUDA tensor with autograd off, never a CPU one; the
    environment variable forces either way."""
    norm = blocks.group_norm(8, gelu=True)
    cuda_like = type("CudaTensor", (), {"device": torch.device("cuda"), "is_contiguous": lambda self: True,
                                        "shape": (1, 8, 2, 2), "numel": lambda self: 32,
                                        "__getitem__": lambda self, index: torch.zeros(2, 2)})()
    cpu = torch.zeros(1, 8, 2, 2)
    monkeypatch.delenv(blocks.GROUP_NORM_ENV_VAR, raising=False)
    with torch.no_grad():
        assert norm._fused(cuda_like) and not norm._fused(cpu)
    assert not norm._fused(cuda_like)  # autograd on: training takes PyTorch's ops
    monkeypatch.setenv(blocks.GROUP_NORM_ENV_VAR, "native")
    with torch.no_grad():
        assert not norm._fused(cuda_like)
    monkeypatch.setenv(blocks.GROUP_NORM_ENV_VAR, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # a CPU tensor needs the interpreter (read per call)
    with torch.no_grad():
        assert norm._fused(cuda_like) and norm._fused(cpu)


@pytest.mark.gpu
@requires_cuda
def test_gpu_default_model_forward_takes_the_kernels(monkeypatch):
    calls = spy_on_kernel(monkeypatch)
    monkeypatch.delenv(blocks.GROUP_NORM_ENV_VAR, raising=False)
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=HashedTextEncoder()).eval().cuda()
    images, prompts = torch.rand(2, 3, 64, 64, device="cuda"), [["acne"], ["dark circles under the eyes"]]
    with torch.inference_mode():
        fused = model(images, prompts).image
        assert calls
        monkeypatch.setenv(blocks.GROUP_NORM_ENV_VAR, "native")
        native = model(images, prompts).image
    torch.testing.assert_close(fused, native, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("weight_given", [True, False], ids=["weight-alone", "bias-alone"])
def test_weight_or_bias_alone_is_applied_as_f_group_norm_does(weight_given):
    """The kernels applied the affine only with both tensors: a weight alone (or bias alone) was dropped (QA)."""
    torch.manual_seed(0)
    x, param = torch.randn(2, 8, 5, 5), torch.randn(8)
    weight, bias = (param, None) if weight_given else (None, param)
    for layout in (torch.contiguous_format, torch.channels_last):
        got = group_norm_kernels.group_norm_triton(x.to(memory_format=layout), 4, weight, bias, 1e-5)
        torch.testing.assert_close(got, F.group_norm(x, 4, weight, bias, 1e-5), atol=1e-5, rtol=1e-5)


def test_finalize_combines_partials_in_steps(monkeypatch):
    """The finalize kernel reads FINALIZE_BLOCK partials a step; 18 chunks in steps of 4 give the same row."""
    monkeypatch.setattr(group_norm_kernels, "FINALIZE_BLOCK", 4)
    torch.manual_seed(0)
    x = torch.randn(1, 8, 100, 90) * 3 + 5
    for layout in (torch.contiguous_format, torch.channels_last):
        got = group_norm_kernels.group_norm_triton(x.to(memory_format=layout), 1, None, None, 1e-5)
        torch.testing.assert_close(got, reference(x, 1, None, None, False), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("shape", "memory_format"), [
    pytest.param((1, 32, 2048, 2048), torch.channels_last, id="nhwc-2048-squared"),  # 2**17 apply tiles
    pytest.param((1, 8192, 512, 512), torch.contiguous_format, id="nchw-widest"),  # 65 536 chunks a row
])
def test_launch_grids_fit_cuda_limits(monkeypatch, shape, memory_format):
    """CUDA launches at most 65 535 programs on grid axes 1 and 2, and a finalize over every chunk at once
    spilled; these allowed shapes passed both (a launch error on a GPU; the interpreter checks neither).
    Meta tensors: the grids are computed, nothing runs."""
    launches = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            return lambda *args, **constants: launches.append((self.name, grid, constants))

    for name in ("gn_partial_stats_kernel", "gn_finalize_kernel", "gn_apply_kernel",
                 "gn_nhwc_partial_stats_kernel", "gn_nhwc_apply_kernel"):
        monkeypatch.setattr(group_norm_kernels, name, Recorder(name))
    x = torch.empty(shape, dtype=torch.float16, device="meta").to(memory_format=memory_format)
    group_norm_kernels.group_norm_triton(x, 8, None, None, 1e-5, gelu=True)
    assert len(launches) == 3
    for name, grid, constants in launches:
        assert all(programs <= 65535 for programs in grid[1:]), (name, grid)
        assert constants.get("CHUNKS", 1) <= 1024, (name, constants)


@pytest.mark.parametrize(("shape", "memory_format", "fused"), [
    pytest.param((0, 8, 4, 4), torch.contiguous_format, False, id="empty-batch"),  # IndexError in the kernels
    pytest.param((1, 256, 4096, 2048), torch.channels_last, False, id="image-past-int32"),  # pixel * C wraps
    pytest.param((1, 8, 8192, 8192), torch.contiguous_format, False, id="plane-past-grid-axis-1"),
    pytest.param((2, 32, 2048, 2048), torch.channels_last, True, id="largest-stem-of-a-2048-image"),
], ids=str)
def test_maps_the_kernels_cannot_take_fall_back_to_pytorch(monkeypatch, shape, memory_format, fused):
    monkeypatch.setenv(blocks.GROUP_NORM_ENV_VAR, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x = torch.empty(shape, dtype=torch.float16, device="meta").to(memory_format=memory_format)
    with torch.no_grad():
        assert blocks.group_norm(shape[1], gelu=True)._fused(x) is fused


def test_empty_batch_gives_an_empty_map_with_the_kernels_asked_for(monkeypatch):
    monkeypatch.setenv(blocks.GROUP_NORM_ENV_VAR, "triton")
    with torch.no_grad():
        assert blocks.group_norm(8, gelu=True)(torch.zeros(0, 8, 4, 4)).shape == (0, 8, 4, 4)


def float64_error(got: torch.Tensor, x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor) -> float:
    """Largest |got - GroupNorm(x)|, the reference computed in float64 from the same fp32 inputs."""
    expected = F.group_norm(x.double(), groups, weight.double(), bias.double(), 1e-5)
    return (got.double() - expected).abs().max().item()


@pytest.mark.parametrize(("offset", "spread"), [(1e3, 1.0), (1e4, 1.0), (1e5, 1.0), (300.0, 0.01)],
                         ids=["1e3", "1e4", "1e5", "300-spread-0.01"])
@pytest.mark.parametrize(("shape", "groups"), [
    pytest.param((2, 8, 9, 7), 4, id="small"),
    pytest.param((1, 8, 100, 90), 1, id="one-group-18-chunks"),
])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
def test_a_mean_far_from_zero_costs_no_accuracy(offset, spread, shape, groups, memory_format):
    """GroupNorm does not see a constant added to a group, and neither may the kernels' fp32 error: at
    x = offset + spread * N(0, 1) it stays within 8 times PyTorch's error on spread * N(0, 1) alone, where
    fp32 rounding is all there is. Chunk sums of x and y = x * scale + shift had made it 360 to 89 000
    times that (1e3 to 1e5; PyTorch's GroupNorm, which rounds the mean to fp32, 180 to 40 000 times);
    measuring from a pivot, about 2."""
    torch.manual_seed(0)
    noise = spread * torch.randn(shape)
    x = offset + noise
    weight, bias = torch.randn(shape[1]), torch.randn(shape[1])
    fp32_rounding = float64_error(F.group_norm(noise, groups, weight, bias, 1e-5), noise, groups, weight, bias)
    got = group_norm_kernels.group_norm_triton(x.to(memory_format=memory_format), groups, weight, bias, 1e-5)
    assert float64_error(got, x, groups, weight, bias) <= 8 * fp32_rounding


@pytest.mark.parametrize("pivot", [-1e4, 1e6], ids=["2e4-below-the-mean", "1e6"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
def test_a_group_whose_first_element_is_far_from_the_rest_keeps_pytorchs_accuracy(pivot, memory_format):
    """The kernels measure a group from its first element (x[n, g * C / G, 0, 0]); far from the rest it
    makes every x - pivot large, which costs a few fp32 roundings of that size, not more: within 8 times
    PyTorch's own error on the map (about 2 measured)."""
    torch.manual_seed(0)
    x = 1e4 + torch.randn(2, 8, 9, 7)
    x[:, ::2, 0, 0] = pivot  # each of the 4 groups' first element
    weight, bias = torch.randn(8), torch.randn(8)
    pytorch = float64_error(F.group_norm(x, 4, weight, bias, 1e-5), x, 4, weight, bias)
    got = group_norm_kernels.group_norm_triton(x.to(memory_format=memory_format), 4, weight, bias, 1e-5)
    assert float64_error(got, x, 4, weight, bias) <= 8 * pytorch
