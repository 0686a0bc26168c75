"""The TCA attention as ONE ONNX node, `langbrt::tca_attention`, that TensorRT runs as a plugin.

Selected with `LANGBRT_ATTENTION=plugin-node` (the exporter does this for `--attention plugin`). Run
eagerly it is the PyTorch reference; traced by `torch.onnx.export` it becomes a single node in the
`langbrt` domain instead of the reference's MatMul/Sigmoid subgraph. TensorRT's ONNX parser maps a node
whose op type is a registered plugin's name and whose `plugin_namespace` attribute is its namespace to
that plugin, and `aot=1` asks for its ahead-of-time implementation: the fused Triton kernel compiled to
PTX (`export/tensorrt_plugin.py`), so the engine runs without Python.

Node contract (shared with the plugin): inputs x (B, H, W, C), map_features (B, H, W, Cm), then
`TCAParams.tensors()` in order (Wq, bq, Wk, bk, Wv, bv, Wo, bo, alpha); one output (B, H, W, C);
int attributes num_heads, window_size, shift, channels (C), map_channels (Cm). ONNX Runtime does not know
this op: such a file is for TensorRT only.
"""

from __future__ import annotations

import torch

from .reference import TCAParams, windowed_sigmoid_cross_attention_reference

PLUGIN_NAMESPACE = "langbrt"
PLUGIN_NAME = "tca_attention"
PLUGIN_DOMAIN_VERSION = 1
NODE_INPUTS = ("x", "map_features", "q_weight", "q_bias", "k_weight", "k_bias", "v_weight", "v_bias",
               "out_weight", "out_bias", "alpha")


class _TCAPluginNode(torch.autograd.Function):
    """Reference maths when run, one `langbrt::tca_attention` node when exported (legacy ONNX exporter)."""

    @staticmethod
    def forward(ctx, x, map_features, num_heads, window_size, shift, *tensors):
        return windowed_sigmoid_cross_attention_reference(x, map_features, TCAParams(*tensors), num_heads,
                                                          window_size, shift)  # (B, H, W, C)

    @staticmethod
    def symbolic(g, x, map_features, num_heads, window_size, shift, *tensors):
        channels = tensors[0].type().sizes()[0]  # Wq is (C, C)
        map_channels = tensors[2].type().sizes()[1]  # Wk is (C, Cm)
        out = g.op(f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}", x, map_features, *tensors,
                   num_heads_i=num_heads, window_size_i=window_size, shift_i=shift,
                   channels_i=channels, map_channels_i=map_channels,
                   plugin_namespace_s=PLUGIN_NAMESPACE, aot_i=1)
        out.setType(x.type())
        return out


def windowed_sigmoid_cross_attention_plugin_node(
    x: torch.Tensor, map_features: torch.Tensor, params: TCAParams, num_heads: int, window_size: int,
    shift: int,
) -> torch.Tensor:
    """Same contract as the reference; exports as one plugin node. Inference only (no backward)."""
    return _TCAPluginNode.apply(x, map_features, num_heads, window_size, shift, *params.tensors())
