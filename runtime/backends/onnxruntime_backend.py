"""ONNX Runtime backend: an exported .onnx file that carries its own `ArtifactMetadata`.

The prompt table is baked into the file; an image names its prompts through `prompt_index`. Prompts
outside the table go to the `extra_prompt_slots` inputs, encoded here by the text encoder the metadata
names (loaded only when such a prompt appears). onnxruntime is imported on load, never at import time,
and the CUDA provider is touched only when the caller asks for a CUDA device.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langbrt.artifact import (
    INPUT_EXTRA_EMBEDDINGS,
    INPUT_EXTRA_WEIGHTS,
    INPUT_IMAGES,
    INPUT_PROMPT_INDEX,
    INPUT_PROMPT_WEIGHTS,
    METADATA_KEY,
    OUTPUT_IMAGE,
    OUTPUT_MAPS,
    OUTPUT_MASK,
    ArtifactMetadata,
)
from langbrt.errors import CheckpointError, LangBRTError
from langbrt.kernels.plugin_node import PLUGIN_NAME, PLUGIN_NAMESPACE
from langbrt.prompt_maps import regroup_maps
from langbrt.text.prompts import normalize_prompt_lists

from .artifact_backend import ArtifactBackend
from .base import BackendName, BackendOutput, as_float_tensor, check_square


def _on_cuda(device: str | None) -> bool:
    return device is not None and device.startswith("cuda")


def session_metadata(session: Any, source: str) -> ArtifactMetadata:
    """The LangBRT metadata of a loaded session (ONNX `metadata_props` surface as ORT's custom map)."""
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if text is None:
        raise CheckpointError(f"{source}: not a LangBRT export (no '{METADATA_KEY}' metadata); "
                              "export it with langbrt-export")
    return ArtifactMetadata.from_json(text, source)


class OnnxRuntimeBackend(ArtifactBackend):
    """One `onnxruntime.InferenceSession` over an exported LangBRT file."""

    name = BackendName.ONNXRUNTIME.value

    def __init__(self, session: Any, metadata: ArtifactMetadata, device: str, source: str) -> None:
        super().__init__(metadata, device, source)
        self.session = session
        self._input_names = {i.name for i in session.get_inputs()}
        image_type = next(i.type for i in session.get_inputs() if i.name == INPUT_IMAGES)
        self._np_dtype = np.float16 if "float16" in image_type else np.float32

    @staticmethod
    def check(path: str | Path, device: str | None = None, precision: str | None = None) -> None:
        """Raise a LangBRTError if `path` is no ONNX file or this onnxruntime cannot run `device`, without
        opening a session (`TorchBackend.check` says why apart from `load`)."""
        path = Path(path)
        if path.is_dir():
            raise CheckpointError(f"{path} is a folder (a checkpoint?); the onnxruntime backend takes an ONNX file, "
                                  "a checkpoint runs with --backend torch or auto")
        if not path.is_file():
            raise CheckpointError(f"{path}: no such ONNX file")
        import onnxruntime as ort

        # as the torch backend does: a device asked for by name is not silently replaced by the CPU
        if _on_cuda(device) and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise LangBRTError(f"--device {device}: this onnxruntime has no CUDA provider (pip install "
                               "onnxruntime-gpu); use --device cpu")

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, precision: str | None = None) -> OnnxRuntimeBackend:
        """Open `path`; device "cuda[:N]" needs onnxruntime-gpu's CUDA provider (a LangBRTError without it)."""
        cls.check(path, device, precision)
        path = Path(path)
        import onnxruntime as ort

        providers: list[Any] = ["CPUExecutionProvider"]
        actual = "cpu"
        if _on_cuda(device):
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": torch.device(device).index or 0}))
            actual = device
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
        # The CPU threads follow torch's count, which the CLIs' --threads sets (by default both are one per
        # core): on a machine whose cores other jobs share, one flag makes either runtime stop spinning.
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as err:  # ORT raises its own Fail/InvalidGraph types
            if f"{PLUGIN_NAMESPACE}:{PLUGIN_NAME}" in str(err):
                raise CheckpointError(
                    f"{path}: exported with --attention plugin, whose {PLUGIN_NAMESPACE}::{PLUGIN_NAME} nodes only "
                    "TensorRT runs; build an engine from it (langbrt-export --format engine --attention plugin "
                    "--fp16) or export with --attention subgraph for onnxruntime") from None
            raise CheckpointError(f"{path}: onnxruntime cannot load it ({str(err).splitlines()[0]})") from None
        metadata = session_metadata(session, str(path))
        _check_metadata_fits_graph(session, metadata, path)
        if precision is not None and precision != metadata.precision:
            raise CheckpointError(
                f"{path} was exported as {metadata.precision}, not {precision}; the ONNX file is fp32 "
                "(fp16 is a TensorRT engine option): drop --precision or use an fp16 engine"
            )
        return cls(session, metadata, actual, str(path))

    def run(self, images: torch.Tensor | np.ndarray, prompts: Sequence[Sequence[str]]) -> BackendOutput:
        x = as_float_tensor(images)  # (B, 3, S, S)
        check_square(x, self.image_size)
        lists = normalize_prompt_lists(prompts, x.shape[0])
        prompts_in = self._extras.table(lists)
        feeds = {
            INPUT_IMAGES: x.detach().cpu().numpy().astype(self._np_dtype, copy=False),
            INPUT_PROMPT_INDEX: prompts_in.prompt_index,
            INPUT_PROMPT_WEIGHTS: prompts_in.prompt_weights.astype(self._np_dtype),
        }
        if INPUT_EXTRA_EMBEDDINGS in self._input_names:  # only when the export has extra slots
            feeds[INPUT_EXTRA_EMBEDDINGS] = prompts_in.extra_embeddings.astype(self._np_dtype)
            feeds[INPUT_EXTRA_WEIGHTS] = prompts_in.extra_weights.astype(self._np_dtype)
        image, mask, maps = self.session.run([OUTPUT_IMAGE, OUTPUT_MASK, OUTPUT_MAPS], feeds)
        call_maps = torch.from_numpy(maps.astype(np.float32, copy=False))  # (B, K + E, S, S)
        return BackendOutput(
            image=torch.from_numpy(image.astype(np.float32, copy=False)),
            mask=torch.from_numpy(mask.astype(np.float32, copy=False)),
            maps=regroup_maps(call_maps, prompts_in.per_image),
        )


def _check_metadata_fits_graph(session: Any, metadata: ArtifactMetadata, path: Path) -> None:
    """The metadata's sizes against the graph's fixed input dimensions (the batch stays dynamic).

    Why: the metadata is a hand-editable string beside the graph; a table size or image size that disagrees
    with the graph would only fail inside onnxruntime on the first call, in its own multi-line words.
    """
    S, T, E, D = metadata.image_size, len(metadata.prompts), metadata.extra_prompt_slots, metadata.text_dim
    expected = {INPUT_IMAGES: (None, 3, S, S), INPUT_PROMPT_INDEX: (None, None), INPUT_PROMPT_WEIGHTS: (None, None)}
    if E:
        expected |= {INPUT_EXTRA_EMBEDDINGS: (E, D), INPUT_EXTRA_WEIGHTS: (None, E)}
    inputs = {i.name: tuple(i.shape) for i in session.get_inputs()}
    for name, dims in expected.items():
        found = inputs.get(name)
        fits = found is not None and len(found) == len(dims) and all(
            want is None or not isinstance(have, int) or have == want for want, have in zip(dims, found, strict=True))
        if not fits:
            raise CheckpointError(f"{path}: its LangBRT metadata (image_size {S}, {T} prompts, {E} extra slots "
                                  f"of dim {D}) does not match the graph's input {name} {found}; re-export it")
    rows = _baked_table_rows(path)
    if rows is not None and rows != max(T, 1):  # an export of extras only keeps one zero row (export.graph)
        raise CheckpointError(f"{path}: its LangBRT metadata ({T} prompts) does not match the graph's prompt table "
                              f"({rows} rows); re-export it")


def _baked_table_rows(path: Path) -> int | None:
    """Rows of the constant `prompt_index` gathers from (the baked prompt vectors), None if the graph holds it
    some other way. Why: the table's size is no input dimension, and an index past it is an error inside
    onnxruntime on every call, or a silently wrong prompt if the table is longer than the metadata says."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    gathers = [n.input[0] for n in graph.node if n.op_type == "Gather" and list(n.input[1:]) == [INPUT_PROMPT_INDEX]]
    if len(gathers) != 1:
        return None
    for tensor in graph.initializer:
        if tensor.name == gathers[0]:
            return int(tensor.dims[0])
    for node in graph.node:
        if node.op_type == "Constant" and list(node.output) == gathers:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            return int(value.dims[0]) if value is not None else None
    return None
