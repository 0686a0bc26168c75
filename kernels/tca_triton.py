"""The fused TCA attention for PyTorch: the launch of the chosen Triton kernel, the custom op and a
recompute-based backward.

The kernels (`tca_direct_jit.py`, `tca_folded_jit.py`): one program per (window, image) computes the whole
windowed sigmoid cross-attention of that window, from the unpartitioned (B, H, W, C) tensors to the output
projection, in one launch per TCA block (a persistent launch of the folded kernel,
`LaunchConfig.programs_per_sm`: a program per group of an image's windows). `tca_fwd_kernel` reads the nine
TCA tensors as the reference does; `tca_folded_fwd_kernel` (LANGBRT_TCA_KERNEL=folded) reads weights folded
through the narrow map features (tca_fold.py). Which kernel, MMA path and sigmoid form run is `tca_choices.py`
(on Hopper the folded kernel's half-precision dots are wgmma, the direct kernel's mma.sync only; in half
precision on CUDA the sigmoid is the tanh form by default); the launch configs the autotuner times are
`tca_launch_configs.py`.

Backward recomputes: `_TCAFunction.backward` re-runs the PyTorch reference and differentiates it with
`torch.func.vjp` (grad-enabled whatever the ambient mode, like `torch.enable_grad()` + `autograd.grad`, but
traceable by dynamo, so `torch.compile(fullgraph=True)` of a training step keeps one graph). Training thus
pays the reference's memory during backward only, and the forward saves nothing beyond its inputs; a fused
backward kernel can replace it later behind the same API.

Importing this module imports triton and registers the op `langbrt::tca_attention`; it never probes a
device. On CPU the kernel runs only in Triton's interpreter (`TRITON_INTERPRET=1` before this import).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from types import MappingProxyType

import torch
import triton

from . import tca_choices
from .dispatch import MAX_KERNEL_WINDOW, cuda_device_guard
from .reference import TCAParams, logit_bias, windowed_sigmoid_cross_attention_reference
from .tca_choices import KernelChoice, check_device, fast_sigmoid_for, kernel_choice, mma_build_scope, mma_choice
from .tca_direct_jit import tca_fwd_kernel
from .tca_fold import LogitFold, folded_weights
from .tca_folded_jit import tca_folded_fwd_kernel
from .tca_launch_configs import (
    LAUNCH_CONFIGS,
    NUM_STAGES,
    LaunchConfig,
    configs_for_dtype,
    grid_bucket,
    persistent_programs,
)
from .windows import padded_size

OP_NAME = "langbrt::tca_attention"
MIN_DOT_EXTENT = 16  # tl.dot needs every matmul dimension >= 16
# The folded kernel of a shifted block carries the Swin region of each token in this many channels past
# the map channels and the ones channel: per axis its band bit and its complement (tca_folded_jit._folded_window).
REGION_CHANNELS = 4
SUPPORTED_DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


@functools.cache
def _sm_count(device: torch.device) -> int:
    """The SMs a persistent launch fills: the GPU's; 1 under the interpreter, so a CPU test's programs
    each loop over several windows."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _autotune_configs(kernel: KernelChoice) -> list[triton.Config]:
    """The launch configs the autotuner times; the first alone under the interpreter, where timing is slow."""
    configs = LAUNCH_CONFIGS[kernel][:1] if tca_choices.INTERPRETING else LAUNCH_CONFIGS[kernel]
    return [config.triton_config() for config in configs]


_JIT_KERNELS = {KernelChoice.DIRECT: tca_fwd_kernel, KernelChoice.FOLDED: tca_folded_fwd_kernel}
# Tensor arguments that are fp32 whatever the inputs' dtype (tca_fold keeps the folded biases in fp32);
# every other one has the inputs' dtype. Ahead-of-time builds (tca_aot) type the pointers from this.
FP32_ARGUMENTS = {KernelChoice.DIRECT: (), KernelChoice.FOLDED: ("qk_bias_ptr", "bo_ptr")}


@functools.cache
def _autotuned_kernel(kernel: KernelChoice, bucket: int) -> triton.runtime.Autotuner:
    """The autotuner of `kernel` for one `grid_bucket`, built on first use; it times `_autotune_configs`
    once per key."""
    del bucket  # only the cache key: every bucket tunes the same configs
    return triton.autotune(configs=_autotune_configs(kernel), key=["H", "W", "C", "CM", "NUM_HEADS", "WINDOW", "SHIFT"],
                           prune_configs_by={"early_config_prune": configs_for_dtype})(_JIT_KERNELS[kernel])


def _block(extent: int) -> int:
    """Tile extent for a dimension: the next power of two, at least tl.dot's minimum."""
    return max(MIN_DOT_EXTENT, 1 << (extent - 1).bit_length())


def channel_chunks(channels: int, tokens_per_window: int) -> tuple[int, int]:
    """The folded kernel's two channel tiles (BLOCK_C0, BLOCK_C1), BLOCK_C1 = 0 for none: together they
    cover `channels`, and where C <= 2 * (window tokens) neither is wider than a window's tokens.

    Why two tiles: Triton gives every dot of a chain of dots the warp layout it picks for the first one it
    converts, and for an M x N result with M < N that is the warps side by side along N. One (64, 128)
    output projection (C = 96 padded) thus put the 4 warps across columns for every dot of the kernel,
    and the (64, 16) dots, too narrow for 4 warps, were computed twice (216 instead of 120 MMAs per warp
    and window, sm_90, `benchmarks/kernel_resources.py`). With tiles of at most 64 columns every
    result has M >= N, the warps stack along the window's tokens, and C = 96 needs no padding (64 + 32).
    """
    first = max(MIN_DOT_EXTENT, min(_block(tokens_per_window), 1 << (channels.bit_length() - 1)))
    rest = channels - first
    return first, (_block(rest) if rest > 0 else 0)


@functools.lru_cache(maxsize=64)
def kernel_constants(channels: int, map_channels: int, num_heads: int, window_size: int, shift: int,
                     low_precision_dot: bool, *, fast_sigmoid: bool, padded: bool = True,
                     kernel: KernelChoice = KernelChoice.DIRECT, ptx_math: bool = True) -> Mapping[str, object]:
    """The constexpr arguments of `kernel`'s jit function, shared by the launch here and the AOT build
    (tca_aot): the window and dot settings both kernels take, plus the tile sizes of its own weights.

    `ptx_math`: a CUDA build, whose sigmoids are inline PTX MUFU instructions; False for the interpreter,
    which evaluates the same forms with Triton's ops.
    `padded`: the map's height or width is not a multiple of the window (`windows.padded_size`); a build
    without it assumes every window is all real pixels and checks no token's validity.
    The MMA path is not among them: whether dots use wgmma Triton takes from its environment at build time
    (`mma_build_scope`). Cached and read-only: every launch needs them, and a model calls the op with a
    handful of shapes.
    """
    block_n = _block(window_size * window_size)
    constants = dict(
        C=channels, CM=map_channels, NUM_HEADS=num_heads, WINDOW=window_size, SHIFT=shift, BLOCK_N=block_n,
        LOW_PRECISION_DOT=low_precision_dot, DOT_PRECISION="tf32" if low_precision_dot else "ieee",
        FAST_SIGMOID=fast_sigmoid, PTX_MATH=ptx_math, PADDED=padded,
    )
    if kernel is KernelChoice.FOLDED:
        block_c0, block_c1 = channel_chunks(channels, block_n)
        constants.update(BLOCK_C0=block_c0, BLOCK_C1=block_c1, BLOCK_K=folded_block_k(map_channels, shift > 0))
    else:
        constants.update(LOGIT_BIAS=logit_bias(window_size), HEAD_DIM=channels // num_heads,
                         BLOCK_C=_block(channels), BLOCK_CM=_block(map_channels),
                         BLOCK_D=_block(channels // num_heads))
    return MappingProxyType(constants)


def folded_block_k(map_channels: int, shifted: bool) -> int:
    """The folded kernel's per-head width: the map channels and the ones channel, padded for tl.dot; a
    shifted block's kernel also carries the Swin mask in `REGION_CHANNELS` more (tca_folded_jit._folded_window)."""
    return _block(map_channels + 1 + (REGION_CHANNELS if shifted else 0))


@functools.lru_cache(maxsize=64)
def folded_logits(map_channels: int, window_size: int, shift: int, fast_sigmoid: bool) -> LogitFold:
    """What `tca_folded_fwd_kernel` expects folded into its logits: the logit bias, and the scale of its
    form of the sigmoid (tca_window_jit.sigmoid_of_folded): 1/2 for 0.5 tanh(s / 2) + 0.5 when `fast_sigmoid`,
    -log2(e) for 1 / (1 + 2^(-s log2 e)) otherwise."""
    scale = 0.5 if fast_sigmoid else -math.log2(math.e)
    return LogitFold(folded_block_k(map_channels, shift > 0), scale=scale, bias=logit_bias(window_size))


def check_arguments(x: torch.Tensor, map_features: torch.Tensor, tensors: tuple[torch.Tensor, ...], num_heads: int,
                    window_size: int, shift: int) -> None:
    """One ValueError naming what does not fit, before any launch. Why: the kernels index the nine tensors
    from x's C and the map's Cm alone, so a mismatched weight was read past its end (silently wrong values,
    or an illegal access on a GPU), no map channel (Cm = 0) crashed the interpreter with a segfault, and
    the asserts these checks replace vanish under `python -O`."""
    if x.dim() != 4 or map_features.dim() != 4 or map_features.shape[:3] != x.shape[:3]:
        raise ValueError(f"the TCA attention takes x (B, H, W, C) and map_features (B, H, W, Cm), got "
                         f"{tuple(x.shape)} and {tuple(map_features.shape)}")
    if not {x.dtype, map_features.dtype} <= SUPPORTED_DTYPES:  # fp8: a RuntimeError from the fold's type promotion
        raise ValueError(f"the TCA attention takes floating-point inputs (float16, bfloat16, float32 or float64), "
                         f"got {x.dtype} and {map_features.dtype}")
    C, Cm = x.shape[-1], map_features.shape[-1]
    if Cm < 1:
        raise ValueError("map_features has no channel: channel 0 is the blemish map the queries are weighted by")
    if num_heads < 1 or C % num_heads:
        raise ValueError(f"{C} channels do not split into {num_heads} heads")
    if window_size < 1 or not 0 <= shift < window_size:
        raise ValueError(f"window {window_size} with shift {shift}: need window >= 1 and 0 <= shift < window")
    if window_size > MAX_KERNEL_WINDOW:  # wider windows outgrow a GPU's shared memory (dispatch.MAX_KERNEL_WINDOW)
        raise ValueError(f"window {window_size}: the Triton TCA kernel takes windows of at most {MAX_KERNEL_WINDOW} "
                         "(one window's scores live on chip); set LANGBRT_ATTENTION=reference or auto")
    names = ("q_weight", "q_bias", "k_weight", "k_bias", "v_weight", "v_bias", "out_weight", "out_bias")
    shapes = ((C, C), (C,), (C, Cm), (C,), (C, Cm), (C,), (C, C), (C,))
    for name, t, shape in zip(names, tensors[:-1], shapes, strict=True):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} is {tuple(t.shape)}, expected {shape} for C={C}, Cm={Cm}, {num_heads} heads")
    if tensors[-1].numel() != num_heads:
        raise ValueError(f"alpha is {tuple(tensors[-1].shape)}, expected one temperature per head ({num_heads})")


def _launch(
    x: torch.Tensor, map_features: torch.Tensor,
    q_weight: torch.Tensor, q_bias: torch.Tensor, k_weight: torch.Tensor, k_bias: torch.Tensor,
    v_weight: torch.Tensor, v_bias: torch.Tensor, out_weight: torch.Tensor, out_bias: torch.Tensor,
    alpha: torch.Tensor, num_heads: int, window_size: int, shift: int, fast_sigmoid: bool | None,
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """Checks arguments, makes inputs contiguous and launches the kernel once; returns (B, H, W, C).

    `fast_sigmoid` None: LANGBRT_TCA_SIGMOID's form for these inputs (`fast_sigmoid_for`), read here at
    each launch like the other switches, inside the op torch.compile leaves opaque (read in traced code,
    a bad value would surface as a dynamo error, not its one line).
    `config` skips the autotuner and launches that config of the kernel that runs (one of its
    LAUNCH_CONFIGS or any other); benchmarks/kernel_sweep.py and the GPU tests try each.
    """
    check_arguments(x, map_features, (q_weight, q_bias, k_weight, k_bias, v_weight, v_bias, out_weight, out_bias,
                                      alpha), num_heads, window_size, shift)
    B, H, W, C = x.shape
    Cm = map_features.shape[-1]
    if B * H * W * max(C, Cm) >= 2**31:
        raise ValueError(f"the Triton TCA kernel indexes with int32: {tuple(x.shape)} is too large, split the batch")
    check_device(x.device)
    half = x.dtype in (torch.float16, torch.bfloat16)
    low_precision_dot = half and not (tca_choices.INTERPRETING and x.dtype == torch.bfloat16)  # no bf16 maths on CPU

    which = kernel_choice()
    ptx_math = x.device.type == "cuda" and not tca_choices.INTERPRETING
    fast = fast_sigmoid_for(x) if fast_sigmoid is None else bool(fast_sigmoid)
    if which is KernelChoice.FOLDED:
        params = TCAParams(q_weight, q_bias, k_weight, k_bias, v_weight, v_bias, out_weight, out_bias, alpha)
        folded = folded_weights(params, num_heads, x.dtype, folded_logits(Cm, window_size, shift, fast))
        if not folded.finite:  # the fold overflowed fp16; the direct kernel divides by alpha in fp32
            which = KernelChoice.DIRECT
    if which is KernelChoice.FOLDED:
        tensors = [x.contiguous(), map_features.contiguous(), *folded.tensors()]
    else:
        tensors = [t.contiguous() for t in (x, map_features, q_weight, q_bias, k_weight, k_bias,
                                            v_weight, v_bias, out_weight, out_bias, alpha)]
    mma = mma_choice(which)  # after the fallback: the direct kernel runs on its own MMA path
    Hp, Wp = padded_size(H, window_size), padded_size(W, window_size)
    constants = kernel_constants(C, Cm, num_heads, window_size, shift, low_precision_dot, fast_sigmoid=fast,
                                 padded=(Hp, Wp) != (H, W), kernel=which, ptx_math=ptx_math)
    out = torch.empty((B, H, W, C), dtype=x.dtype, device=x.device)  # (B, H, W, C)
    n_windows = (Hp // window_size) * (Wp // window_size)
    kernel, launch_options = _autotuned_kernel(which, grid_bucket(n_windows * B)), {}
    if config is not None:
        if (config.head_stages is None) != (which is KernelChoice.DIRECT):
            raise ValueError(f"{config} does not fit the {which.value} kernel: only the folded one has head_stages "
                             "(a folded call whose fold overflows fp16 runs the direct kernel)")
        kernel = _JIT_KERNELS[which]
        launch_options = {"num_warps": config.num_warps, "num_stages": NUM_STAGES, "maxnreg": config.maxnreg,
                          **config.kernel_arguments()}

    def grid(meta: Mapping[str, object]) -> tuple[int, int]:
        """(programs per image, B): one per window, or a persistent launch's count (the config's)."""
        programs_per_sm = meta.get("PROGRAMS_PER_SM", 0)
        if not programs_per_sm:
            return n_windows, B
        return persistent_programs(programs_per_sm, _sm_count(x.device), n_windows, B), B

    with cuda_device_guard(x.device), mma_build_scope(mma):
        kernel[grid](*tensors, H, W, out, **constants, **launch_options)
    return out


def _register_op():
    """Register the forward as the custom op `torch.ops.langbrt.tca_attention`.

    torch.compile and torch.export see one opaque node and call it at run time, so every launch goes through
    `_launch` and its MMA build scope. (A `triton_op` would let inductor build the kernel itself, outside that
    scope: on Hopper the wgmma build, which computes wrong results with triton 3.6; see MmaChoice.)
    """

    @torch.library.custom_op(OP_NAME, mutates_args=())
    def tca_attention(
        x: torch.Tensor, map_features: torch.Tensor,
        q_weight: torch.Tensor, q_bias: torch.Tensor, k_weight: torch.Tensor, k_bias: torch.Tensor,
        v_weight: torch.Tensor, v_bias: torch.Tensor, out_weight: torch.Tensor, out_bias: torch.Tensor,
        alpha: torch.Tensor, num_heads: int, window_size: int, shift: int, fast_sigmoid: bool | None,
    ) -> torch.Tensor:
        return _launch(x, map_features, q_weight, q_bias, k_weight, k_bias, v_weight, v_bias, out_weight,
                       out_bias, alpha, num_heads, window_size, shift, fast_sigmoid)

    @tca_attention.register_fake
    def _(x: torch.Tensor, *_args: object) -> torch.Tensor:
        return x.new_empty(x.shape)  # (B, H, W, C), contiguous like the kernel's output

    return tca_attention


_tca_attention_op = _register_op()


class _TCAFunction(torch.autograd.Function):
    """Fused kernel forward; backward by recomputing the reference (exact sigmoid) and differentiating it."""

    @staticmethod
    def forward(ctx, x, map_features, num_heads, window_size, shift, fast_sigmoid, *tensors):
        ctx.save_for_backward(x, map_features, *tensors)
        ctx.config = (num_heads, window_size, shift)
        # Traced (torch.compile, torch.export), the registered op keeps the launch opaque; eager, calling
        # `_launch` directly skips the op's Python dispatch, ~13 us of CPU per call (2-core CI box).
        launch = _tca_attention_op if torch.compiler.is_compiling() else _launch
        return launch(x, map_features, *tensors, num_heads, window_size, shift, fast_sigmoid)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, map_features, *tensors = ctx.saved_tensors
        needs = ctx.needs_input_grad
        wanted = (needs[0], needs[1], *needs[6:])  # skip num_heads, window_size, shift, fast_sigmoid
        if 0 in x.shape[1:3]:  # no window, no dependence on any input (and the reference cannot partition it)
            saved = (x, map_features, *tensors)
            result = [torch.zeros_like(t) if w else None for t, w in zip(saved, wanted, strict=True)]
            return (result[0], result[1], None, None, None, None, *result[2:])
        alpha = tensors[-1]
        # The reference's 1 / alpha is differentiated as -(1 / alpha)^2, which overflows fp16 for every
        # alpha < 2^-8 (an inf alpha gradient whatever the loss, where the forward is fine): in fp32 here.
        # The recomputed forward is the same: the reference rounds 1 / alpha to the inputs' dtype.
        inputs = (x, map_features, *tensors[:-1], alpha.float() if alpha.dtype == torch.float16 else alpha)
        wanted_idx = [i for i, w in enumerate(wanted) if w]

        def reference_of_wanted(*wanted_inputs: torch.Tensor) -> torch.Tensor:
            full = list(inputs)
            for i, t in zip(wanted_idx, wanted_inputs, strict=True):
                full[i] = t
            return windowed_sigmoid_cross_attention_reference(
                full[0], full[1], TCAParams(*full[2:]), *ctx.config
            )  # (B, H, W, C)

        # torch.func.vjp rather than autograd.grad: dynamo traces it, so torch.compile keeps one graph.
        _, vjp_fn = torch.func.vjp(reference_of_wanted, *(inputs[i] for i in wanted_idx))
        grads = iter(vjp_fn(grad_out))
        result = [next(grads) if w else None for w in wanted]
        if result[-1] is not None:
            result[-1] = result[-1].to(alpha.dtype)
        return (result[0], result[1], None, None, None, None, *result[2:])


def windowed_sigmoid_cross_attention_triton(
    x: torch.Tensor,
    map_features: torch.Tensor,
    params: TCAParams,
    num_heads: int,
    window_size: int,
    shift: int,
    *,
    fast_sigmoid: bool | None = None,
) -> torch.Tensor:
    """Fused TCA attention: x (B, H, W, C), map_features (B, H, W, Cm) -> (B, H, W, C) in x's dtype.

    Same contract as `windowed_sigmoid_cross_attention_reference`; differentiable in x, map_features and
    every tensor of `params` (alpha included) through a recompute-based backward. `fast_sigmoid` computes
    the forward's sigmoid as 0.5 tanh(s / 2) + 0.5 with PTX `tanh.approx.f32` (on CUDA; the interpreter
    evaluates the same form exactly); None: LANGBRT_TCA_SIGMOID's choice for these inputs (`SigmoidChoice`:
    by default the tanh form in half precision on CUDA, the exact one otherwise). float64 inputs run the
    kernels' fp32 maths (outputs ~1e-6 from the reference's), while the backward differentiates the float64
    reference: finite differences of this function need steps of ~1e-3 (gradcheck's 1e-6 sees fp32 noise);
    check float64 gradients on the reference.

    Under autocast every input is cast to the autocast dtype first, as autocast would cast a matmul's: the
    kernel then runs in half precision (an fp32 LayerNorm output would otherwise pick its fp32 build, 8x
    slower), and the backward's recomputed reference, which runs outside autocast, sees one dtype (bf16 maps
    beside an fp32 x and fp32 weights made it fail). The casts are differentiable: gradients come back in
    each input's own dtype.
    """
    tensors = params.tensors()
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, map_features, tensors = x.to(dtype), map_features.to(dtype), tuple(t.to(dtype) for t in tensors)
    return _TCAFunction.apply(x, map_features, num_heads, window_size, shift, fast_sigmoid, *tensors)


__all__ = ["OP_NAME", "windowed_sigmoid_cross_attention_triton"]
