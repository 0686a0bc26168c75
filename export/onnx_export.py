"""Write a LangBRT as one ONNX file of standard ops, with its metadata embedded.

Exporter: the TorchScript exporter (`torch.onnx.export(..., dynamo=False)`). The dynamo exporter needs
`onnxscript`, which LangBRT does not depend on, and this model traces cleanly: every Python-level shape
is either the fixed image size or the batch, which is marked dynamic.

Precision: the ONNX file is always fp32. fp16 is applied by TensorRT at engine build time
(`tensorrt_export.build_engine`), which keeps LayerNorm/GroupNorm and reductions in fp32; an fp16 ONNX
would run slower on ONNX Runtime's CPU provider and needs a converter LangBRT does not ship.

The TCA attention is exported one of two ways (`attention=`):
- "subgraph" (default): through its PyTorch reference, so each window attention is MatMul -> Mul/Add ->
  Sigmoid -> Mul(keep) -> MatMul of standard ops, which TensorRT fuses on its own and ONNX Runtime runs
  everywhere;
- "plugin": one `langbrt::tca_attention` node per TCA block (`langbrt.kernels.plugin_node`), which only
  TensorRT can run, with the fused Triton kernel as its plugin (`tensorrt_plugin.py`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch

from langbrt.artifact import (
    INPUT_EXTRA_EMBEDDINGS,
    INPUT_EXTRA_WEIGHTS,
    INPUT_IMAGES,
    INPUT_PROMPT_INDEX,
    INPUT_PROMPT_WEIGHTS,
    LEARNED_PROMPTS_KEY,
    MAX_EXTRA_PROMPT_SLOTS,
    METADATA_KEY,
    OUTPUT_IMAGE,
    OUTPUT_MAPS,
    OUTPUT_MASK,
    ArtifactMetadata,
)
from langbrt.atomic import atomic_path
from langbrt.errors import CheckpointError, LangBRTInputError
from langbrt.kernels import AttentionImpl
from langbrt.kernels.plugin_node import PLUGIN_DOMAIN_VERSION, PLUGIN_NAMESPACE
from langbrt.model import LangBRT
from langbrt.modules.tca import TargetAwareCrossAttention

from .graph import (
    DEFAULT_EXTRA_PROMPT_SLOTS,
    ExportableLangBRT,
    baked_table,
    check_exportable,
    model_hash,
    traced_attention,
)
from .tensorrt_plugin import PLUGIN_MAX_WINDOW

MIN_OPSET = 17
DEFAULT_OPSET = 17
BATCH_AXIS = "batch"
PROMPTS_AXIS = "prompts"  # K, the baked prompts per image of a call (prompt_index's second dimension)
MAPS_AXIS = "maps"  # K + E
# How the TCA attention is traced: standard ops, or one TensorRT plugin node per block.
ATTENTION_EXPORTS = {"subgraph": AttentionImpl.REFERENCE, "plugin": AttentionImpl.PLUGIN_NODE}
ATTENTION_KEY = "attention"  # in ArtifactMetadata.extras


def max_opset() -> int:
    """The newest opset both the installed TorchScript exporter and the installed onnx package support."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET as exporter_max  # private, but the exporter's own bound
    except ImportError:
        exporter_max = onnx.defs.onnx_opset_version()
    return min(exporter_max, onnx.defs.onnx_opset_version())


def check_export_options(opset: int, extra_prompt_slots: int) -> None:
    """Raise `LangBRTInputError` (one line naming the flag) for an opset or slot count the export cannot take."""
    newest = max_opset()
    if not MIN_OPSET <= opset <= newest:
        raise LangBRTInputError(f"--opset {opset} is not supported: use {MIN_OPSET}..{newest} ({MIN_OPSET}: the "
                                f"oldest LangBRT needs; {newest}: the newest this torch {torch.__version__} and onnx "
                                f"{onnx.__version__} write)")
    if not 0 <= extra_prompt_slots <= MAX_EXTRA_PROMPT_SLOTS:
        raise LangBRTInputError(f"--extra-prompt-slots must be 0..{MAX_EXTRA_PROMPT_SLOTS}, got {extra_prompt_slots} "
                                "(each slot adds one map per image to every call's output)")


def io_names(extra_prompt_slots: int) -> tuple[list[str], list[str]]:
    """ONNX input and output names, in graph order; the extra-prompt inputs exist only when E > 0."""
    inputs = [INPUT_IMAGES, INPUT_PROMPT_INDEX, INPUT_PROMPT_WEIGHTS]
    if extra_prompt_slots:
        inputs += [INPUT_EXTRA_EMBEDDINGS, INPUT_EXTRA_WEIGHTS]
    return inputs, [OUTPUT_IMAGE, OUTPUT_MASK, OUTPUT_MAPS]


def check_plugin_windows(model: LangBRT) -> None:
    """Refuse plugin nodes for TCA windows wider than the plugin's kernel builds for (`PLUGIN_MAX_WINDOW`): the
    ONNX file would be written and its engine build fail later, on the GPU, inside TensorRT."""
    widest = max((m.window_size for m in model.modules() if isinstance(m, TargetAwareCrossAttention)), default=0)
    if widest > PLUGIN_MAX_WINDOW:
        raise LangBRTInputError(f"--attention plugin: this model's TCA window is {widest}, and the TensorRT plugin's "
                                f"kernel takes windows up to {PLUGIN_MAX_WINDOW} (TensorRT's 48 KiB of shared "
                                "memory per kernel); export with --attention subgraph")


def export_onnx(model: LangBRT, path: str | Path, *, opset: int = DEFAULT_OPSET,
                extra_prompt_slots: int = DEFAULT_EXTRA_PROMPT_SLOTS, prompts: Sequence[str] | None = None,
                checkpoint_dir: str | Path | None = None, attention: str = "subgraph") -> Path:
    """Export `model` to `path` (written atomically) and return the path.

    `prompts` are added to the baked table (pre-defined + prompt bank); `checkpoint_dir`, when the model
    was loaded from one, makes `model_hash` the sha256 of its weights file; `attention` is a key of
    `ATTENTION_EXPORTS`. The batch dimension of every input and output is dynamic, and so is the number of
    prompts per image (K: `prompt_index`, `prompt_weights` and `maps`, which has K + E); the image size is
    fixed at `model.config.image_size`.
    """
    if attention not in ATTENTION_EXPORTS:
        raise LangBRTInputError(f"attention export {attention!r} is not one of: {', '.join(ATTENTION_EXPORTS)}")
    if attention == "plugin":
        check_plugin_windows(model)
    check_export_options(opset, extra_prompt_slots)
    check_exportable(model, extra_prompt_slots)
    path = Path(path)
    model = model.eval()
    table = baked_table(model, prompts)
    graph = ExportableLangBRT(model, table, extra_prompt_slots).eval()
    input_names, output_names = io_names(extra_prompt_slots)
    batched = [INPUT_IMAGES, INPUT_PROMPT_INDEX, INPUT_PROMPT_WEIGHTS, INPUT_EXTRA_WEIGHTS, *output_names]
    dynamic_axes = {name: {0: BATCH_AXIS} for name in batched if name in input_names + output_names}
    for name in (INPUT_PROMPT_INDEX, INPUT_PROMPT_WEIGHTS):
        dynamic_axes[name][1] = PROMPTS_AXIS
    dynamic_axes[OUTPUT_MAPS][1] = MAPS_AXIS
    metadata = ArtifactMetadata(
        image_size=model.config.image_size,
        prompts=list(table.texts),
        predefined_index=[int(i) for i in table.predefined_index],
        text_encoder=model.config.text_encoder,
        text_dim=model.config.text_dim,
        model_hash=model_hash(model, checkpoint_dir),
        extra_prompt_slots=extra_prompt_slots,
        precision="fp32",
        opset=opset,
        extras={"exporter": "torchscript", "torch": torch.__version__, "inputs": input_names,
                "outputs": output_names, ATTENTION_KEY: attention, LEARNED_PROMPTS_KEY: bool(model.learned_prompts)},
    )
    custom_opsets = {PLUGIN_NAMESPACE: PLUGIN_DOMAIN_VERSION} if attention == "plugin" else None
    with atomic_path(path) as tmp:
        with torch.no_grad(), traced_attention(ATTENTION_EXPORTS[attention]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(graph, graph.example_inputs(), str(tmp), dynamo=False, opset_version=opset,
                              input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                              do_constant_folding=True, custom_opsets=custom_opsets)
        proto = onnx.load(str(tmp))
        fix_output_shapes(proto, model.config.image_size)
        set_metadata(proto, metadata)
        proto.producer_name = "langbrt-export"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
    return path


def fix_output_shapes(proto: onnx.ModelProto, image_size: int) -> None:
    """Write the output shapes the tracer loses after Resize (Triton and TensorRT configs read them): static
    channels and size, the maps' count named as the dynamic axis it is."""
    channels: dict[str, int | str] = {OUTPUT_IMAGE: 3, OUTPUT_MASK: 1, OUTPUT_MAPS: MAPS_AXIS}
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        for dim, value in zip(dims[1:], (channels[output.name], image_size, image_size), strict=True):
            dim.Clear()
            if isinstance(value, str):
                dim.dim_param = value
            else:
                dim.dim_value = value


def set_metadata(proto: onnx.ModelProto, metadata: ArtifactMetadata) -> None:
    """Put `metadata` under `METADATA_KEY` in the model's metadata_props, replacing any earlier entry."""
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()


def read_onnx_metadata(path: str | Path) -> ArtifactMetadata:
    """The `ArtifactMetadata` embedded in an exported ONNX file; `CheckpointError` if it has none."""
    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such ONNX file") from None
    except Exception as err:  # onnx raises DecodeError or others for a file that is not a model
        raise CheckpointError(f"{path}: not a readable ONNX model ({type(err).__name__})") from None
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            return ArtifactMetadata.from_json(prop.value, str(path))
    raise CheckpointError(f"{path}: not a LangBRT export (no {METADATA_KEY!r} metadata)")
