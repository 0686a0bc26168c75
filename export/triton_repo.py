"""Lay out a Triton Inference Server model repository around an exported LangBRT.

    <repo>/<model>/config.pbtxt        platform, batching, instance group, tensor specs
    <repo>/<model>/langbrt.json        the artifact's metadata (prompt table in order, sizes, versions)
    <repo>/<model>/1/model.onnx        (kind "onnx")  or  1/model.plan  (kind "engine")

Triton batches requests along dim 0 of EVERY input, so an input without a batch dimension cannot be
served with `max_batch_size > 0`. `extra_embeddings` (E, D) is such an input: a Triton repository is
therefore built from an export with `extra_prompt_slots=0`, and serves only the baked prompt table.
A new prompt needs a re-export (`langbrt-export --format triton-repo --prompt "..."`). A client names each
image's prompts by their row in `langbrt.json`'s table (`prompt_index`, INT32, with `prompt_weights` 1 per
asked prompt and 0 for padding) and gets one map per column back; Triton batches requests whose prompt
counts match.

Where the instances run (`instance_group.kind`, `InstanceKind`): an ONNX model defaults to KIND_AUTO, which
Triton resolves to the GPU on a server that has one and to the CPU otherwise, so one repository loads on both
(KIND_GPU, the old fixed value, failed to load on a CPU-only server). A TensorRT engine runs only on a GPU
(Triton's TensorRT backend refuses any other kind), so its instances are KIND_GPU and asking for the CPU is
refused before anything is written.

CUDA graphs (engine only: the one backend that reads `optimization.cuda`) are captured for exact input
shapes, and a call replays one only when its shapes match exactly. Without `graph_spec` the backend captures
the engine profile's optimum prompt count for a few batch sizes without saying so; the config names those
shapes itself (`cuda_graph_batch_sizes`, OPT_ENGINE_PROMPTS prompts per image), and every other batch size or
prompt count runs the engine without a graph. The ONNX model's config asks for no execution accelerator:
onnxruntime's TensorRT provider would build its engines on the server at the first call, and again for
shapes outside those it has seen, with a profile and precision this export does not control (`--fp16`
builds the engine ahead of time instead, with the profile `tensorrt_export.profile_shapes` sets).

The model folder is written in a temporary folder beside it and renamed into place, so a server
watching the repository never loads a half-written model.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from enum import Enum
from pathlib import Path

from langbrt.artifact import (
    INPUT_IMAGES,
    INPUT_PROMPT_INDEX,
    INPUT_PROMPT_WEIGHTS,
    OPT_ENGINE_PROMPTS,
    OUTPUT_IMAGE,
    OUTPUT_MAPS,
    OUTPUT_MASK,
    ArtifactMetadata,
)
from langbrt.atomic import atomic_folder
from langbrt.errors import LangBRTInputError

from .onnx_export import read_onnx_metadata
from .tensorrt_export import read_engine_sidecar

METADATA_FILE = "langbrt.json"
MODEL_VERSION = "1"
MODEL_NAME = "langbrt"


class RepoKind(str, Enum):
    ONNX = "onnx"
    ENGINE = "engine"


class InstanceKind(str, Enum):
    """`--instance-kind`: where Triton runs the model (auto: its GPU if the server has one, else its CPU)."""

    AUTO = "auto"
    GPU = "gpu"
    CPU = "cpu"


INSTANCE_GROUP_KINDS = {InstanceKind.AUTO: "KIND_AUTO", InstanceKind.GPU: "KIND_GPU", InstanceKind.CPU: "KIND_CPU"}

PLATFORMS = {RepoKind.ONNX: ("onnxruntime_onnx", "model.onnx"), RepoKind.ENGINE: ("tensorrt_plan", "model.plan")}
# What a model folder of ours holds; the model file is one of PLATFORMS' names.
MODEL_FOLDER_FILES = frozenset({"config.pbtxt", METADATA_FILE, MODEL_VERSION})
MODEL_FILES = frozenset(name for _, name in PLATFORMS.values())


TENSOR_TYPES = {INPUT_PROMPT_INDEX: "TYPE_INT32"}  # every other tensor: TYPE_FP32


def tensor_specs(metadata: ArtifactMetadata) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Input and output dims WITHOUT the batch dim, as Triton wants them with max_batch_size > 0; -1 is the
    prompts per image, which each request chooses."""
    S = metadata.image_size
    inputs = {INPUT_IMAGES: [3, S, S], INPUT_PROMPT_INDEX: [-1], INPUT_PROMPT_WEIGHTS: [-1]}
    outputs = {OUTPUT_IMAGE: [3, S, S], OUTPUT_MASK: [1, S, S], OUTPUT_MAPS: [-1, S, S]}
    return inputs, outputs


def instance_group_kind(kind: RepoKind, instance_kind: InstanceKind) -> str:
    """The `instance_group.kind` of a model of `kind`: an engine's is KIND_GPU, whatever the server has."""
    if kind is not RepoKind.ENGINE:
        return INSTANCE_GROUP_KINDS[instance_kind]
    if instance_kind is InstanceKind.CPU:
        raise LangBRTInputError("--instance-kind cpu: a TensorRT engine (--fp16) runs only on a GPU; drop --fp16 to "
                                "serve the ONNX model on a CPU, or use --instance-kind auto or gpu")
    return INSTANCE_GROUP_KINDS[InstanceKind.GPU]


def cuda_graph_batch_sizes(max_batch_size: int, preferred_batch_sizes: Sequence[int]) -> list[int]:
    """The batch sizes an engine's CUDA graphs are captured for: 1, the preferred ones and the largest, as
    Triton's TensorRT backend chooses them when the config names none."""
    return sorted({1, *preferred_batch_sizes, max_batch_size})


def config_pbtxt(metadata: ArtifactMetadata, *, model_name: str, kind: RepoKind, max_batch_size: int,
                 preferred_batch_sizes: Sequence[int], max_queue_delay_us: int, instances: int,
                 instance_kind: InstanceKind = InstanceKind.AUTO) -> str:
    """The text of config.pbtxt (protobuf text format) for one LangBRT model."""
    inputs, outputs = tensor_specs(metadata)

    def specs(tensors: dict[str, list[int]]) -> str:
        items = [f'  {{\n    name: "{name}"\n    data_type: {TENSOR_TYPES.get(name, "TYPE_FP32")}\n'
                 f'    dims: [ {", ".join(map(str, dims))} ]\n  }}'
                 for name, dims in tensors.items()]
        return ",\n".join(items)

    preferred = ", ".join(str(b) for b in preferred_batch_sizes)
    text = (
        f'name: "{model_name}"\n'
        f'platform: "{PLATFORMS[kind][0]}"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{specs(inputs)}\n]\n"
        f"output [\n{specs(outputs)}\n]\n"
        f"dynamic_batching {{\n  preferred_batch_size: [ {preferred} ]\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {instance_group_kind(kind, instance_kind)}\n"
        f"  }}\n]\n"
    )
    if kind is RepoKind.ENGINE:
        text += _cuda_graphs(metadata, cuda_graph_batch_sizes(max_batch_size, preferred_batch_sizes))
    return text


def graph_input_shapes(metadata: ArtifactMetadata) -> dict[str, list[int]]:
    """Every input's shape (without the batch dim) in an engine's CUDA graphs: the prompts-per-image dim at
    the engine profile's optimum, OPT_ENGINE_PROMPTS. The backend needs a shape for every input of a spec."""
    inputs, _ = tensor_specs(metadata)
    return {name: [OPT_ENGINE_PROMPTS if d < 0 else d for d in dims] for name, dims in inputs.items()}


def _cuda_graphs(metadata: ArtifactMetadata, batch_sizes: Sequence[int]) -> str:
    """`optimization.cuda` naming every graph the backend captures, with a comment saying which calls replay one."""
    shapes = "".join(f'        input {{ key: "{name}" value {{ dim: [ {", ".join(map(str, dims))} ] }} }}\n'
                     for name, dims in graph_input_shapes(metadata).items())
    specs = ",\n".join(f"      {{\n        batch_size: {batch}\n{shapes}      }}" for batch in batch_sizes)
    return (f"# CUDA graphs replay only these shapes: batches of {', '.join(map(str, batch_sizes))} images with "
            f"{OPT_ENGINE_PROMPTS} prompts each (the\n# engine's tuned count); other batch sizes and prompt counts "
            f"run without a graph.\n"
            f"optimization {{\n  cuda {{\n    graphs: true\n    graph_spec [\n{specs}\n    ]\n  }}\n}}\n")


def check_model_folder(model_dir: Path) -> None:
    """Refuse a `<repo>/<model>` in the way that is not a model folder this export writes.

    Why: the export replaces that folder whole (`atomic_folder`), so whatever else it held (a user's files, a
    version 2 added by hand, a file of that name) was deleted without a word (QA). A folder holding only
    config.pbtxt, langbrt.json and 1/model.onnx or 1/model.plan is an earlier export's, and is replaced.
    """
    version = model_dir / MODEL_VERSION
    ours = _folder_of(model_dir, MODEL_FOLDER_FILES) and (not os.path.lexists(version)
                                                          or _folder_of(version, MODEL_FILES))
    if os.path.lexists(model_dir) and not ours:
        raise LangBRTInputError(f"{model_dir} exists and is not a model folder langbrt-export wrote, and the export "
                                "replaces that folder whole: move it away or choose another --output")


def _folder_of(folder: Path, names: frozenset[str]) -> bool:
    """`folder` is a real folder (not a link) whose entries all have names in `names`; False if unreadable."""
    try:
        return folder.is_dir() and not folder.is_symlink() and {p.name for p in folder.iterdir()} <= names
    except OSError:
        return False


def write_triton_repository(artifact_path: str | Path, repo_dir: str | Path, *, model_name: str = MODEL_NAME,
                            max_batch_size: int = 32, preferred_batch_sizes: Sequence[int] = (4, 8, 16),
                            max_queue_delay_us: int = 2000, instances: int = 1,
                            kind: str | RepoKind = RepoKind.ONNX,
                            instance_kind: str | InstanceKind = InstanceKind.AUTO) -> Path:
    """Copy `artifact_path` into `<repo_dir>/<model_name>/1/` with its config; return `repo_dir`."""
    kind, instance_kind = RepoKind(kind), InstanceKind(instance_kind)
    artifact_path, repo_dir = Path(artifact_path), Path(repo_dir)
    instance_group_kind(kind, instance_kind)  # an engine on the CPU is refused before reading anything
    metadata = read_onnx_metadata(artifact_path) if kind is RepoKind.ONNX else read_engine_sidecar(artifact_path)
    _check_options(metadata, kind, max_batch_size, preferred_batch_sizes, instances)
    check_model_folder(repo_dir / model_name)
    text = config_pbtxt(metadata, model_name=model_name, kind=kind, max_batch_size=max_batch_size,
                        preferred_batch_sizes=preferred_batch_sizes, max_queue_delay_us=max_queue_delay_us,
                        instances=instances, instance_kind=instance_kind)
    created = not repo_dir.exists()
    repo_dir.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_folder(repo_dir / model_name) as staging:
            (staging / MODEL_VERSION).mkdir()
            shutil.copyfile(artifact_path, staging / MODEL_VERSION / PLATFORMS[kind][1])
            (staging / "config.pbtxt").write_text(text, encoding="utf-8")
            (staging / METADATA_FILE).write_text(metadata.to_json(), encoding="utf-8")
    except BaseException:  # Ctrl-C included: atomic_folder removed its staging; remove a folder made for it
        if created:
            shutil.rmtree(repo_dir, ignore_errors=True)
        raise
    return repo_dir


def _check_options(metadata: ArtifactMetadata, kind: RepoKind, max_batch_size: int,
                   preferred_batch_sizes: Sequence[int], instances: int) -> None:
    if metadata.extra_prompt_slots:
        raise LangBRTInputError(
            f"a Triton repository needs an export without extra prompt slots (this one has "
            f"{metadata.extra_prompt_slots}): re-export with --extra-prompt-slots 0"
        )
    if max_batch_size < 1 or instances < 1:
        raise LangBRTInputError(f"max batch size and instances must be >= 1, got {max_batch_size}, {instances}")
    if any(b < 1 or b > max_batch_size for b in preferred_batch_sizes):
        raise LangBRTInputError(f"preferred batch sizes {list(preferred_batch_sizes)} must lie in "
                                f"1..{max_batch_size} (max batch size)")
    built = metadata.extras.get("batch_sizes")
    if kind is RepoKind.ENGINE and built and max_batch_size > max(built):
        raise LangBRTInputError(f"the engine's largest batch is {max(built)}, below max batch size "
                                f"{max_batch_size}: rebuild with --batch-sizes ... {max_batch_size}")

