"""Build a TensorRT 10 engine from an exported LangBRT ONNX file, with a JSON sidecar that describes it.

The engine is built with fp16 enabled while the normalisation layers (LayerNorm, the GroupNorm that TBD
applies, exported as InstanceNormalization) and reductions (the noisy-OR product) stay fp32: fp16 Swin
models lose accuracy there (maggiez0138/Swin-Transformer-TensorRT). One optimisation profile covers the
batch sizes asked for (min / opt / max). A timing cache is loaded before and saved after each build, so
rebuilding on the same GPU takes seconds instead of minutes. While TensorRT builds, its phases are drawn as
progress bars on a terminal, and Ctrl-C stops the build at its next step (`build_progress.py`).

The TCA attention reaches TensorRT one of two ways, chosen at ONNX export (`--attention`, recorded in the
file's metadata): as the MatMul -> Mul/Add -> Sigmoid -> Mul -> MatMul subgraph of the PyTorch reference
("subgraph", the default; TensorRT's attention layer only normalises with softmax or nothing, so it fuses
this with its generic pointwise/MatMul fusions), or as one `langbrt::tca_attention` plugin node per block
("plugin"), which runs the fused Triton kernel compiled into the engine (`tensorrt_plugin.py`, fp16 only).
Which is faster on a given GPU is for `langbrt-bench` to say: build both and compare.

An engine is tied to one TensorRT version and one GPU compute capability; `check_engine_compatible`
compares the sidecar against the running system and names the command that rebuilds it. The sidecar also
records the engine's SHA-256 (`langbrt.artifact.ENGINE_DIGEST_KEY`): the two files are renamed into place
one after the other, so two exports to the same path at once can leave one's engine beside the other's
sidecar, and the loader (`runtime/backends/tensorrt_backend.py`) refuses such a pair instead of trusting
the wrong metadata.

Without TensorRT (not installed) or without a CUDA GPU nothing is built and nothing is written:
`require_tensorrt()` raises `TensorRTUnavailable` with one line saying which is missing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from langbrt.artifact import (
    ENGINE_DIGEST_KEY,
    MAX_ENGINE_PROMPTS,
    OPT_ENGINE_PROMPTS,
    ArtifactMetadata,
    engine_digest,
)
from langbrt.atomic import atomic_path
from langbrt.errors import CheckpointError, LangBRTError, LangBRTInputError

from .build_progress import build_progress
from .onnx_export import ATTENTION_KEY, read_onnx_metadata
from .tensorrt_plugin import plugin_layers, register_tca_plugin

DEFAULT_BATCH_SIZES = (1, 8, 32)
# The build marks precisions per layer (BuilderFlag.FP16, OBEY_PRECISION_CONSTRAINTS, layers pinned to fp32):
# weak typing, which TensorRT 11 removed (strongly typed networks only); pyproject.toml pins the gpu extra.
SUPPORTED_TENSORRT_MAJOR = 10
DEFAULT_WORKSPACE_GB = 4.0
SIDECAR_SUFFIX = ".json"
FP32_LAYER_TYPES = ("NORMALIZATION", "REDUCE")  # names in trt.LayerType pinned to fp32 in fp16 builds


class TensorRTUnavailable(LangBRTError):
    """TensorRT or a CUDA GPU is missing, so no engine can be built (nothing is written)."""


def tensorrt_unavailable_reason(asked_by: str = "--fp16") -> str | None:
    """One line saying why an engine cannot be built here, or None when TensorRT and a GPU are present.

    `asked_by` names the flag that wants the engine (`--fp16`, `--format engine`), so the line says why.
    """
    if importlib.util.find_spec("tensorrt") is None:
        return (f"{asked_by} builds a TensorRT engine, but TensorRT is not installed "
                "(pip install 'langbrt[gpu]' on a machine with an NVIDIA GPU); nothing was written")
    if not torch.cuda.is_available():
        return f"{asked_by} builds a TensorRT engine, but no CUDA GPU is available on this machine; nothing was written"
    return None


def require_tensorrt(asked_by: str = "--fp16") -> None:
    """Raise `TensorRTUnavailable` unless TensorRT imports and a CUDA GPU is present."""
    reason = tensorrt_unavailable_reason(asked_by)
    if reason is not None:
        raise TensorRTUnavailable(reason)
    try:
        import tensorrt
    except ImportError as err:
        raise TensorRTUnavailable(f"{asked_by} builds a TensorRT engine, but TensorRT fails to import ({err}); "
                                  "nothing was written") from None
    major = int(tensorrt.__version__.split(".")[0])
    if major != SUPPORTED_TENSORRT_MAJOR:
        raise TensorRTUnavailable(
            f"{asked_by} builds with TensorRT {SUPPORTED_TENSORRT_MAJOR}.x, but {tensorrt.__version__} is installed "
            f"(pip install 'tensorrt>=10.9,<11'); nothing was written")


def sidecar_path(engine_path: str | Path) -> Path:
    """Where an engine's metadata lives: `model.plan` -> `model.plan.json`."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + SIDECAR_SUFFIX)


def profile_shapes(shape: Sequence[int], batch_sizes: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """(min, opt, max) shapes of an input whose dim 0 is the batch: every batch from 1 to the largest size,
    tuned for the middle one. Why from 1: whatever the sizes asked for, callers send smaller batches (one
    photo, a last partial batch, a Triton server's dynamic batcher), which a profile starting higher refuses.
    A dynamic dim 1 is the prompts per image (prompt_index, prompt_weights): 1 to MAX_ENGINE_PROMPTS."""
    sizes = sorted(set(int(b) for b in batch_sizes))
    assert sizes and sizes[0] >= 1, batch_sizes
    rest = [int(d) for d in shape[1:]]
    assert all(d > 0 for d in rest[1:]), f"only the batch and prompt dimensions may be dynamic, got {list(shape)}"
    if rest and rest[0] <= 0:
        low, opt, high = [[k, *rest[1:]] for k in (1, OPT_ENGINE_PROMPTS, MAX_ENGINE_PROMPTS)]
    else:
        low = opt = high = rest
    return [1, *low], [sizes[len(sizes) // 2], *opt], [sizes[-1], *high]


def rebuild_command(output: str | Path, model_dir: str | Path | None, batch_sizes: Sequence[int],
                    attention: str = "subgraph", fp16: bool = True, export_format: str = "engine") -> str:
    """The exact `langbrt-export` command that rebuilds this engine, in its precision (an fp32 engine's used to
    say --fp16, and rebuilt an fp16 one); `output` is the engine, or the repository of a triton-repo's. Paths
    are shell-quoted, so the line can be pasted as it is."""
    model = shlex.quote(str(model_dir)) if model_dir is not None else "MODEL_DIR"
    sizes = " ".join(str(b) for b in batch_sizes)
    flags = " --fp16" if fp16 else ""
    flags += " --attention plugin" if attention == "plugin" else ""
    return (f"langbrt-export --model {model} --format {export_format} --output {shlex.quote(str(output))} "
            f"--batch-sizes {sizes}{flags}")


def engine_metadata(metadata: ArtifactMetadata, *, fp16: bool, trt_version: str, gpu_name: str,
                    compute_capability: str, inputs: dict[str, list[int]], outputs: dict[str, list[int]],
                    batch_sizes: Sequence[int], command: str, digest: str) -> ArtifactMetadata:
    """The ONNX file's metadata, extended with what ties an engine to its build machine and its bytes."""
    extras: dict[str, Any] = dict(metadata.extras)
    extras.update(tensorrt=trt_version, gpu=gpu_name, compute_capability=compute_capability,
                  inputs=inputs, outputs=outputs, batch_sizes=[int(b) for b in batch_sizes],
                  fp32_layers=list(FP32_LAYER_TYPES) if fp16 else [], rebuild_command=command)
    extras[ENGINE_DIGEST_KEY] = digest
    return dataclasses.replace(metadata, precision="fp16" if fp16 else "fp32", extras=extras)


def read_engine_sidecar(path: str | Path) -> ArtifactMetadata:
    """Metadata of an engine, from `path` (the sidecar itself or the engine beside it)."""
    path = Path(path)
    side = path if path.name.endswith(SIDECAR_SUFFIX) else sidecar_path(path)
    try:
        text = side.read_text(encoding="utf-8")
    except OSError:
        raise CheckpointError(f"{side}: missing engine metadata; rebuild the engine with langbrt-export") from None
    return ArtifactMetadata.from_json(text, str(side))


def check_engine_compatible(sidecar: str | Path | ArtifactMetadata, trt_version: str,
                            compute_capability: str) -> None:
    """Raise `CheckpointError` naming the mismatch (and the rebuild command) if the engine cannot run here."""
    metadata = sidecar if isinstance(sidecar, ArtifactMetadata) else read_engine_sidecar(sidecar)
    built_version = str(metadata.extras.get("tensorrt", "unknown"))
    built_cc = str(metadata.extras.get("compute_capability", "unknown"))
    command = metadata.extras.get("rebuild_command") or rebuild_command("ENGINE.plan", None, DEFAULT_BATCH_SIZES)
    if built_version != trt_version:
        raise CheckpointError(f"engine was built with TensorRT {built_version}, this machine has {trt_version}; "
                              f"rebuild it: {command}")
    if built_cc != compute_capability:
        raise CheckpointError(f"engine was built for compute capability {built_cc}, this GPU is "
                              f"{compute_capability}; rebuild it: {command}")


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, fp16: bool = True,
                 batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, timing_cache: str | Path | None = None,
                 workspace_gb: float = DEFAULT_WORKSPACE_GB, model_dir: str | Path | None = None,
                 command: str | None = None) -> Path:
    """Build and serialize an engine (atomically) plus its sidecar JSON; return the engine path.

    `command` is the rebuild command the sidecar records, when not `rebuild_command`'s for `engine_path`: a
    triton-repo's engine is built in a temporary folder, and rebuilt by exporting the repository again."""
    require_tensorrt()
    import tensorrt as trt

    if not batch_sizes or min(batch_sizes) < 1:
        raise LangBRTInputError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    metadata = read_onnx_metadata(onnx_path)
    plugin = metadata.extras.get(ATTENTION_KEY) == "plugin"
    if plugin:
        if not fp16:
            raise LangBRTInputError(f"{onnx_path} has TensorRT plugin attention nodes, which run in fp16 only: "
                                    "add --fp16")
        register_tca_plugin()  # before parsing: the parser looks the plugin up by name
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        first = parser.get_error(0) if parser.num_errors else "unknown error"
        raise CheckpointError(f"{onnx_path}: TensorRT cannot parse this ONNX file ({first})")
    if plugin and plugin_layers(network) == 0:
        raise CheckpointError(f"{onnx_path}: TensorRT parsed no plugin layer for its attention nodes")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        _pin_fp32_layers(network, trt)

    profile = builder.create_optimization_profile()
    inputs: dict[str, list[int]] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        inputs[tensor.name] = list(tensor.shape)
        if tensor.shape[0] == -1:
            profile.set_shape(tensor.name, *profile_shapes(tensor.shape, batch_sizes))
    config.add_optimization_profile(profile)
    outputs = {network.get_output(i).name: list(network.get_output(i).shape) for i in range(network.num_outputs)}

    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=True)
    with build_progress(config, trt):  # bars on a terminal; Ctrl-C stops the build and raises KeyboardInterrupt
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise LangBRTError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")

    engine_bytes = bytes(serialized)
    props = torch.cuda.get_device_properties(torch.cuda.current_device())  # the GPU the builder tuned for
    sidecar = engine_metadata(
        metadata, fp16=fp16, trt_version=trt.__version__, gpu_name=props.name,
        compute_capability=f"{props.major}.{props.minor}", inputs=inputs, outputs=outputs,
        batch_sizes=batch_sizes,
        command=command or rebuild_command(engine_path, model_dir, batch_sizes, "plugin" if plugin else "subgraph",
                                           fp16),
        digest=engine_digest(engine_bytes),
    )
    # Both files are written and synced before either is renamed into place, the engine first: a crash or
    # Ctrl-C can split the pair only between two renames, not across a write of the whole engine, and a
    # split pair (or a concurrent export's renames interleaving with these) fails the digest check at load.
    with atomic_path(sidecar_path(engine_path)) as sidecar_tmp, atomic_path(engine_path) as engine_tmp:
        engine_tmp.write_bytes(engine_bytes)
        sidecar_tmp.write_text(sidecar.to_json(), encoding="utf-8")
    if timing_cache:
        with atomic_path(timing_cache) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    return engine_path


def _pin_fp32_layers(network: Any, trt: Any) -> None:
    """Keep normalisation and reduction layers (and their outputs) in fp32 inside an fp16 engine."""
    pinned = {getattr(trt.LayerType, name) for name in FP32_LAYER_TYPES}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in pinned:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
