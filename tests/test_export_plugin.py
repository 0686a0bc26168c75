"""`langbrt-export --attention plugin`: one TensorRT plugin node per TCA block, checked without TensorRT.

TensorRT cannot be installed offline, so the engine build itself is untested here. What TensorRT would do
with the file is: run every `langbrt::tca_attention` node with the fused Triton kernel, fed the node's
inputs and attributes. This test does exactly that with ONNX's reference evaluator, the node implemented
by the kernel (in Triton's interpreter), and compares the result with the PyTorch model. A deliberately
wrong node implementation (ignoring the shift) must fail the same comparison, so the check can fail.
"""

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from langbrt import LangBRT, LangBRTConfig
from langbrt.errors import CheckpointError
from langbrt.export.cli import main
from langbrt.export.graph import ExportableLangBRT, baked_table
from langbrt.export.onnx_export import ATTENTION_KEY, export_onnx, read_onnx_metadata
from langbrt.kernels import TCAParams
from langbrt.kernels.plugin_node import NODE_INPUTS, PLUGIN_NAME, PLUGIN_NAMESPACE
from langbrt.kernels.tca_triton import windowed_sigmoid_cross_attention_triton
from langbrt.runtime import Retoucher
from langbrt.text import default_text_encoder


def _kernel_node(ignore_shift: bool = False) -> type[OpRun]:
    """An ONNX reference-evaluator op that runs `langbrt::tca_attention` with the fused kernel."""

    def _run(self, x, map_features, *tensors, num_heads, window_size, shift, channels, map_channels,
             plugin_namespace, aot):
        assert x.shape[-1] == channels and map_features.shape[-1] == map_channels
        params = TCAParams(*(torch.from_numpy(np.array(t)) for t in tensors))
        out = windowed_sigmoid_cross_attention_triton(
            torch.from_numpy(np.array(x)), torch.from_numpy(np.array(map_features)), params, num_heads,
            window_size, 0 if ignore_shift else shift)  # (B, H, W, C)
        return (out.numpy(),)

    return type(PLUGIN_NAME, (OpRun,), {"op_domain": PLUGIN_NAMESPACE, "_run": _run})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder()).eval()
    model.embed_prompts(model.predefined_prompts)
    return model


@pytest.fixture(scope="module")
def plugin_onnx(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("plugin") / "tiny-plugin.onnx", attention="plugin")


def test_every_tca_block_becomes_one_plugin_node_with_its_attributes(model, plugin_onnx):
    proto = onnx.load(str(plugin_onnx))
    nodes = [n for n in proto.graph.node if n.domain == PLUGIN_NAMESPACE]
    blocks = [b.attn for b in model.transformer.blocks]
    assert len(nodes) == len(blocks) > 0
    for node, attn in zip(nodes, blocks, strict=True):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert node.op_type == PLUGIN_NAME and len(node.input) == len(NODE_INPUTS)
        assert attrs == {"num_heads": attn.num_heads, "window_size": attn.window_size, "shift": attn.shift,
                         "channels": attn.q.in_features, "map_channels": attn.k.in_features,
                         "plugin_namespace": PLUGIN_NAMESPACE.encode(), "aot": 1}
    assert any(op.domain == PLUGIN_NAMESPACE for op in proto.opset_import)
    assert read_onnx_metadata(plugin_onnx).extras[ATTENTION_KEY] == "plugin"


def _feeds(model, metadata):
    rng = np.random.default_rng(1)
    B, T, E, D = 2, len(metadata.prompts), metadata.extra_prompt_slots, model.config.text_dim
    S = model.config.image_size
    index = np.tile(np.arange(T, dtype=np.int32), (B, 1))  # every prompt on: an untrained model's maps are
    weights = np.ones((B, T), np.float32)  # then well above 0
    weights[1, 0] = 0.0
    return {"images": rng.random((B, 3, S, S), dtype=np.float32), "prompt_index": index, "prompt_weights": weights,
            "extra_embeddings": np.zeros((E, D), np.float32), "extra_weights": np.zeros((B, E), np.float32)}


def test_plugin_file_run_with_the_fused_kernel_matches_the_torch_model(model, plugin_onnx):
    metadata = read_onnx_metadata(plugin_onnx)
    feeds = _feeds(model, metadata)
    graph = ExportableLangBRT(model, baked_table(model), metadata.extra_prompt_slots).eval()
    with torch.no_grad():
        expected = [t.numpy() for t in graph(*(torch.from_numpy(v) for v in feeds.values()))]
    assert float(expected[1].max()) > 0.1  # the maps are on, so the attention shapes the output

    got = ReferenceEvaluator(str(plugin_onnx), new_ops=[_kernel_node()]).run(None, feeds)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=2e-5, rtol=0)

    wrong = ReferenceEvaluator(str(plugin_onnx), new_ops=[_kernel_node(ignore_shift=True)]).run(None, feeds)
    assert float(np.abs(wrong[0] - expected[0]).max()) > 1e-3


def test_onnxruntime_refuses_a_plugin_file_with_the_way_out(plugin_onnx):
    with pytest.raises(CheckpointError, match="--attention subgraph"):
        Retoucher.load(plugin_onnx, backend="onnxruntime")


def test_cli_writes_a_plugin_onnx_and_points_at_the_engine_build(model, tmp_path, capsys):
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "m.onnx"
    assert main(["--model", str(ckpt), "--output", str(out), "--attention", "plugin"]) == 0
    printed = capsys.readouterr().out
    assert f"--format engine --output {out.with_suffix('.plan')} --attention plugin --fp16" in printed
    assert read_onnx_metadata(out).extras[ATTENTION_KEY] == "plugin"


@pytest.mark.parametrize("fmt", ["engine", "triton-repo"])
def test_plugin_attention_without_fp16_is_refused_in_one_line_before_anything_is_written(model, tmp_path, capsys,
                                                                                        fmt):
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / ("m.plan" if fmt == "engine" else "repo")
    assert main(["--model", str(ckpt), "--format", fmt, "--output", str(out), "--attention", "plugin"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--fp16" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_window_wider_than_the_plugins_kernel_is_refused_before_anything_is_written(tmp_path, capsys):
    """The plugin's fp16 direct kernel fits TensorRT's 48 KiB of shared memory per kernel up to window 8; a
    window-9 model's plugin file was written, and its engine build would have failed later, on the GPU."""
    config = dataclasses.replace(LangBRTConfig.tiny(), window_size=9)
    ckpt = LangBRT(config, text_encoder=default_text_encoder()).eval().save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "m.onnx"
    assert main(["--model", str(ckpt), "--output", str(out), "--attention", "plugin"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "window is 9" in err and "--attention subgraph" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert main(["--model", str(ckpt), "--output", str(out)]) == 0  # the subgraph export of the same model

