"""The fused Triton TCA kernel as TensorRT's quickly deployable plugin `langbrt::tca_attention` (AOT).

`register_tca_plugin()` must run before TensorRT parses an ONNX file exported with `--attention plugin`
(`build_engine` calls it). It declares the plugin to `tensorrt.plugin` (TensorRT >= 10.9):
- `@trtp.register`: the output is shaped and typed like x (B, H, W, C);
- `@trtp.autotune`: every input and the output in fp16, one tactic per warp count in `NUM_WARPS_CHOICES`;
  TensorRT times each at build time and keeps the fastest;
- `@trtp.aot_impl`: the kernel compiled for the build GPU by `kernels.tca_aot` (PTX), one program per
  (window, image): grid (windows per image, B), H and W as the int32 scalars, exactly the launch
  `tca_triton._launch` makes. The PTX lives in the engine, which then runs without Python.

fp16 only: the fp32 build needs ~61 KiB of shared memory per block, over the 48 KiB TensorRT's AOT launcher
gives a kernel (`tca_aot.check_tensorrt_contract` rejects it), and engines are built with --fp16.

NOT verified: no session so far had TensorRT and a GPU (TensorRT's wheels cannot be installed offline).
What was verified on CPU: the plugin node's ONNX wiring, by running the file with the fused kernel (in
Triton's interpreter) as that node against the PyTorch model (tests/test_export_plugin.py), and the AOT
build for sm_80/sm_90 against the launcher's contract (tests/test_tca_aot.py).

This module deliberately has no `from __future__ import annotations`: `tensorrt.plugin` reads the
decorated functions' annotations as objects (TensorDesc, int, tuple[TensorDesc]) to build the plugin's
signature. The node's `plugin_namespace` and `aot` attributes are the ONNX parser's, not the plugin's.
"""

import functools
from typing import Any

from langbrt.kernels.plugin_node import NODE_INPUTS, PLUGIN_NAME, PLUGIN_NAMESPACE

PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"
NUM_IO = len(NODE_INPUTS) + 1  # the node's inputs and its one output
# The widest window the plugin's kernel builds for: up to 8 (64 tokens) the fp16 direct kernel needs 33 KB of
# shared memory per block; from 9 on (81 tokens, padded to 128) 51 KB, past the 48 KiB TensorRT's AOT launcher
# gives a kernel (sm_90, triton 3.8, `benchmarks/kernel_resources.py --windows 8 9`), so the engine build would
# fail on the GPU. `onnx_export` refuses such a model before writing anything.
PLUGIN_MAX_WINDOW = 8


def tactic_warps() -> dict[int, int]:
    """TensorRT tactic id -> num_warps; ids start at 1 (0 is TensorRT's 'default tactic')."""
    from langbrt.kernels.tca_launch_configs import NUM_WARPS_CHOICES

    return {i + 1: warps for i, warps in enumerate(NUM_WARPS_CHOICES)}


def plugin_kernel_spec(num_heads: int, window_size: int, shift: int, channels: int, map_channels: int,
                       tactic: int) -> Any:
    """The `TCAKernelSpec` one plugin node and tactic ask for (fp16, fast sigmoid); imports triton."""
    from langbrt.kernels.tca_aot import TCAKernelSpec

    warps = tactic_warps().get(tactic)
    if warps is None:
        raise ValueError(f"unknown {PLUGIN_ID} tactic {tactic}; known: {sorted(tactic_warps())}")
    return TCAKernelSpec("fp16", channels, map_channels, num_heads, window_size, shift, num_warps=warps,
                         fast_sigmoid=True)


@functools.cache
def register_tca_plugin() -> None:
    """Declare `langbrt::tca_attention` to TensorRT (once per process); needs tensorrt >= 10.9."""
    import tensorrt.plugin as trtp

    @trtp.register(PLUGIN_ID)
    def describe(x: trtp.TensorDesc, map_features: trtp.TensorDesc, q_weight: trtp.TensorDesc,
                 q_bias: trtp.TensorDesc, k_weight: trtp.TensorDesc, k_bias: trtp.TensorDesc,
                 v_weight: trtp.TensorDesc, v_bias: trtp.TensorDesc, out_weight: trtp.TensorDesc,
                 out_bias: trtp.TensorDesc, alpha: trtp.TensorDesc, num_heads: int, window_size: int,
                 shift: int, channels: int, map_channels: int) -> trtp.TensorDesc:
        return x.like()  # (B, H, W, C)

    @trtp.autotune(PLUGIN_ID)
    def formats(x: trtp.TensorDesc, map_features: trtp.TensorDesc, q_weight: trtp.TensorDesc,
                q_bias: trtp.TensorDesc, k_weight: trtp.TensorDesc, k_bias: trtp.TensorDesc,
                v_weight: trtp.TensorDesc, v_bias: trtp.TensorDesc, out_weight: trtp.TensorDesc,
                out_bias: trtp.TensorDesc, alpha: trtp.TensorDesc, num_heads: int, window_size: int,
                shift: int, channels: int, map_channels: int,
                outputs: tuple[trtp.TensorDesc]) -> list[trtp.AutoTuneCombination]:
        combination = trtp.AutoTuneCombination()
        combination.pos(list(range(NUM_IO)), "FP16")
        combination.tactics(sorted(tactic_warps()))
        return [combination]

    @trtp.aot_impl(PLUGIN_ID)
    def build(x: trtp.TensorDesc, map_features: trtp.TensorDesc, q_weight: trtp.TensorDesc,
              q_bias: trtp.TensorDesc, k_weight: trtp.TensorDesc, k_bias: trtp.TensorDesc,
              v_weight: trtp.TensorDesc, v_bias: trtp.TensorDesc, out_weight: trtp.TensorDesc,
              out_bias: trtp.TensorDesc, alpha: trtp.TensorDesc, num_heads: int, window_size: int,
              shift: int, channels: int, map_channels: int, outputs: tuple[trtp.TensorDesc], tactic: int
              ) -> tuple[bytes, bytes, trtp.KernelLaunchParams, trtp.SymExprs]:
        from langbrt.kernels.tca_aot import check_tensorrt_contract, compile_tca_kernel, tensorrt_ptx

        compiled = compile_tca_kernel(plugin_kernel_spec(num_heads, window_size, shift, channels,
                                                         map_channels, tactic))  # for the build GPU
        check_tensorrt_contract(compiled)
        batch, height, width = x.shape_expr[0], x.shape_expr[1], x.shape_expr[2]
        launch = trtp.KernelLaunchParams()
        launch.grid_x = trtp.cdiv(height, window_size) * trtp.cdiv(width, window_size)  # windows per image
        launch.grid_y = batch
        launch.block_x = compiled.block_threads
        launch.shared_mem = compiled.shared_bytes
        scalars = trtp.SymIntExprs(2)  # the kernel's H, W
        scalars[0] = trtp.SymInt32(height)
        scalars[1] = trtp.SymInt32(width)
        return compiled.name.encode(), tensorrt_ptx(compiled).encode(), launch, scalars


def plugin_layers(network: Any) -> int:
    """How many plugin (v3) layers a parsed TensorRT network holds; LangBRT's only plugin is tca_attention."""
    import tensorrt as trt

    return sum(1 for i in range(network.num_layers) if network.get_layer(i).type == trt.LayerType.PLUGIN_V3)
