"""TensorRT backend: a serialized engine plus its sidecar JSON (`ArtifactMetadata`).

An engine is tied to the GPU model and TensorRT version that built it, so loading checks both (from the
sidecar's `extras`) and answers a mismatch with the command that rebuilds it. It also checks that the
sidecar describes these engine bytes (the SHA-256 the exporter recorded): the sidecar says which prompts,
image size and precision the engine has, and a sidecar left over from another export would make the
engine answer the wrong prompts without any error. `tensorrt` and CUDA are
touched only inside `load`: importing this module works on any machine. Buffers are torch CUDA tensors
whose addresses are bound to the engine's I/O tensors (TensorRT >= 10 `execute_async_v3`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langbrt.artifact import (
    ENGINE_DIGEST_KEY,
    INPUT_EXTRA_EMBEDDINGS,
    INPUT_EXTRA_WEIGHTS,
    INPUT_IMAGES,
    INPUT_PROMPT_INDEX,
    INPUT_PROMPT_WEIGHTS,
    OUTPUT_IMAGE,
    OUTPUT_MAPS,
    OUTPUT_MASK,
    ArtifactMetadata,
    engine_digest,
)
from langbrt.errors import CheckpointError, LangBRTError
from langbrt.prompt_maps import regroup_maps
from langbrt.text.prompts import normalize_prompt_lists

from .artifact_backend import ArtifactBackend
from .base import (
    ENGINE_SUFFIXES,
    BackendName,
    BackendOutput,
    as_float_tensor,
    backend_for_path,
    check_square,
    concat_outputs,
)

REBUILD = "langbrt-export --model DIR --format engine --fp16 --output {engine}"


def sidecar_path(engine: Path) -> Path:
    """`model.engine` -> `model.engine.json` (preferred) or `model.json`, whichever exists."""
    for candidate in (engine.with_name(engine.name + ".json"), engine.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"{engine}: no sidecar metadata ({engine.name}.json) beside the engine; rebuild it with "
                          + REBUILD.format(engine=engine))


def _check_digest(engine: Path, sidecar: Path, recorded: object, engine_bytes: bytes, rebuild: str) -> None:
    """Refuse an engine whose sidecar was written for other bytes. A sidecar without a digest (written
    before the exporter recorded one) is trusted, as it was then."""
    if recorded is not None and recorded != engine_digest(engine_bytes):
        raise CheckpointError(f"{engine}: its metadata file {sidecar} describes another engine (two exports to "
                              f"the same path at once, or one file copied without the other); rebuild: {rebuild}")


class TensorRTBackend(ArtifactBackend):
    """Runs a deserialized engine on the current CUDA stream."""

    name = BackendName.TENSORRT.value

    def __init__(self, engine: Any, metadata: ArtifactMetadata, device: str, source: str) -> None:
        prompts_max = engine.get_tensor_profile_shape(INPUT_PROMPT_INDEX, 0)[2]  # (min, opt, max) shapes
        super().__init__(metadata, device, source, max_table_prompts=int(prompts_max[1]))
        self.engine = engine
        self.context = engine.create_execution_context()
        smallest, _, largest = engine.get_tensor_profile_shape(INPUT_IMAGES, 0)
        self.batch_range = (int(smallest[0]), int(largest[0]))

    @staticmethod
    def check(path: str | Path, device: str | None = None, precision: str | None = None) -> None:
        """Raise a LangBRTError if `path` is no engine or this machine lacks TensorRT or a GPU, without reading
        the engine (`TorchBackend.check` says why apart from `load`)."""
        path = Path(path)
        if path.is_dir():
            raise CheckpointError(f"{path} is a folder (a checkpoint?); the tensorrt backend takes a TensorRT engine, "
                                  "a checkpoint runs with --backend torch or auto")
        if not path.is_file():
            raise CheckpointError(f"{path}: no such TensorRT engine")
        if path.suffix.lower() not in ENGINE_SUFFIXES:  # what else could it be: say so, not "rebuild the engine"
            other = backend_for_path(path)
            raise CheckpointError(f"{path} is not a TensorRT engine ({' or '.join(ENGINE_SUFFIXES)}); "
                                  f"it runs with --backend {other.value}")
        # What the machine lacks first: no rebuild helps there, and the sidecar only matters where it can run.
        try:
            import tensorrt  # noqa: F401 - installed is all this asks; `load` uses it
        except ImportError:
            raise LangBRTError("the tensorrt backend needs TensorRT: pip install 'langbrt[gpu]'") from None
        if not torch.cuda.is_available():
            raise LangBRTError("the tensorrt backend needs a CUDA GPU; use --backend onnxruntime or torch")

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, precision: str | None = None) -> TensorRTBackend:
        cls.check(path, device, precision)
        path = Path(path)
        import tensorrt as trt

        rebuild = REBUILD.format(engine=path)
        sidecar = sidecar_path(path)
        try:
            text = sidecar.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{path}: its metadata file {sidecar} is unreadable ({err}); "
                                  f"rebuild: {rebuild}") from None
        metadata = ArtifactMetadata.from_json(text, str(path))
        recorded = metadata.extras.get("rebuild_command")
        if isinstance(recorded, str) and recorded:  # the export's own: this engine's precision, sizes, attention
            rebuild = recorded
        device = device or "cuda"
        gpu = torch.cuda.get_device_name(torch.device(device))
        built = metadata.extras
        for what, want, have in (("TensorRT", built.get("tensorrt"), trt.__version__),
                                 ("GPU", built.get("gpu"), gpu)):
            if want is not None and want != have:
                raise CheckpointError(f"{path} was built for {what} {want}, this machine has {have}; "
                                      f"rebuild: {rebuild}")
        if precision is not None and precision != metadata.precision:
            raise CheckpointError(f"{path} is a {metadata.precision} engine, not {precision}; rebuild: {rebuild}")
        engine_bytes = path.read_bytes()
        _check_digest(path, sidecar, built.get(ENGINE_DIGEST_KEY), engine_bytes, rebuild)
        with torch.cuda.device(torch.device(device)):  # the engine and its context live on that GPU, not GPU 0
            runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
            engine = runtime.deserialize_cuda_engine(engine_bytes)
            if engine is None:
                raise CheckpointError(f"{path}: TensorRT cannot deserialize this engine (other version or GPU?); "
                                      f"rebuild: {rebuild}")
            return cls(engine, metadata, device, str(path))

    @torch.inference_mode()
    def run(self, images: torch.Tensor | np.ndarray, prompts: Sequence[Sequence[str]]) -> BackendOutput:
        """Any batch size: a batch over the engine's largest runs in pieces, one under its smallest (an
        engine built before profiles started at 1) is padded with copies of its last image."""
        x = as_float_tensor(images)  # (B, 3, S, S)
        check_square(x, self.image_size)
        prompt_lists = normalize_prompt_lists(prompts, x.shape[0])
        smallest, largest = self.batch_range
        parts = []
        for start in range(0, x.shape[0], largest):
            piece, piece_prompts = x[start:start + largest], prompt_lists[start:start + largest]
            pad = max(0, smallest - piece.shape[0])
            if pad:
                piece = torch.cat([piece, piece[-1:].expand(pad, -1, -1, -1)])  # (smallest, 3, S, S)
                piece_prompts = piece_prompts + [piece_prompts[-1]] * pad
            out = self._run_batch(piece, piece_prompts)
            keep = piece.shape[0] - pad
            parts.append(BackendOutput(out.image[:keep], out.mask[:keep], out.maps[:keep]))
        return parts[0] if len(parts) == 1 else concat_outputs(parts)

    def _run_batch(self, x: torch.Tensor, prompts: list[list[str]]) -> BackendOutput:
        """One batch within the engine's profile through the engine."""
        B, S = x.shape[0], self.image_size
        prompts_in = self._extras.table(prompts)
        dev = torch.device(self.device)
        feeds = {
            INPUT_IMAGES: x.to(dev).contiguous(),
            INPUT_PROMPT_INDEX: torch.from_numpy(prompts_in.prompt_index).to(dev),
            INPUT_PROMPT_WEIGHTS: torch.from_numpy(prompts_in.prompt_weights).to(dev),
            INPUT_EXTRA_EMBEDDINGS: torch.from_numpy(prompts_in.extra_embeddings).to(dev),
            INPUT_EXTRA_WEIGHTS: torch.from_numpy(prompts_in.extra_weights).to(dev),
        }
        num_maps = prompts_in.prompt_weights.shape[1] + prompts_in.extra_weights.shape[1]  # K + E
        outputs = {
            OUTPUT_IMAGE: torch.empty(B, 3, S, S, device=dev),
            OUTPUT_MASK: torch.empty(B, 1, S, S, device=dev),
            OUTPUT_MAPS: torch.empty(B, num_maps, S, S, device=dev),
        }
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        with torch.cuda.device(dev):  # the engine's GPU current, whichever GPU the calling thread had
            for name, tensor in feeds.items():
                if name in names:  # the extra-prompt inputs exist only when the export has slots
                    if not self.context.set_input_shape(name, tuple(tensor.shape)):
                        raise LangBRTError(f"{self.source}: TensorRT refused input {name} of shape "
                                           f"{tuple(tensor.shape)} (the engine takes batches of "
                                           f"{self.batch_range[0]} to {self.batch_range[1]} images)")
                    self.context.set_tensor_address(name, tensor.data_ptr())
            for name, tensor in outputs.items():
                self.context.set_tensor_address(name, tensor.data_ptr())
            stream = torch.cuda.current_stream(dev)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise LangBRTError(f"TensorRT execution failed for a batch of {B}")
            stream.synchronize()
        return BackendOutput(image=outputs[OUTPUT_IMAGE], mask=outputs[OUTPUT_MASK],
                             maps=regroup_maps(outputs[OUTPUT_MAPS], prompts_in.per_image))
