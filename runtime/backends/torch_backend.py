"""Eager PyTorch backend: a LangBRT checkpoint folder, on CPU or CUDA.

On CUDA the model's attention dispatch (`config.attention="auto"`) already picks the fused kernel; this
backend adds what eager mode leaves on the table for small batches: batch-1 calls are replayed from a CUDA
graph (one per prompt-table size), and host images go through pinned memory so the copy is asynchronous.
On CPU weights and batches run in NHWC by default (LANGBRT_MEMORY_FORMAT or `memory_format=`: `MemoryFormat`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import torch
from torch.profiler import record_function

from langbrt.devices import default_device, require_device
from langbrt.errors import LangBRTInputError
from langbrt.kernels.dispatch import check_impl_runs, cuda_device_guard
from langbrt.kernels.tca_fold import live_folds
from langbrt.model import LangBRT, PromptTable
from langbrt.prompt_maps import regroup_maps
from langbrt.text.prompts import normalize_prompt_lists

from .base import BackendName, BackendOutput, as_float_tensor, check_square
from .memory_format import MemoryFormat, memory_format_choice

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class RunStage(str, Enum):
    """The torch.profiler ranges `TorchBackend.run` marks, in call order.

    Why the runtime carries them: on the H100 half or more of a call's time was outside the network, and
    `benchmarks/profile_forward.py --backend-run` needs the call's own stages to say where (no copy of `run`
    to drift from it). A range costs a few microseconds when no profiler records.
    """

    PROMPT_TABLE = "torch_backend.prompt_table"
    TO_DEVICE = "torch_backend.to_device"
    FORWARD = "torch_backend.forward"
    FLOAT_OUTPUTS = "torch_backend.float_outputs"
    REGROUP_MAPS = "torch_backend.regroup_maps"


@dataclass
class _Graph:
    """One captured batch-1 forward: static inputs are overwritten, then the graph is replayed."""

    graph: torch.cuda.CUDAGraph
    images: torch.Tensor  # (1, 3, S, S) static input, in the backend's memory format
    embeddings: torch.Tensor  # (T, D)
    predefined_index: torch.Tensor  # (T,)
    weights: torch.Tensor  # (1, T)
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # image, mask, maps (static)
    kept: tuple[object, ...] = ()  # what the graph reads but only a cache holds (tca_fold.live_folds)


class TorchBackend:
    """Runs `LangBRT.forward_table`; unknown prompts are encoded by the checkpoint's text encoder.

    `load` freezes the loaded model's prompt bank: `prompts` stays the checkpoint's own, and prompts callers
    add are cached in a bounded LRU (a server must not list one client's prompts to another, nor grow with
    them). A model passed in directly (a training run's) is left as it is, but for its memory format.

    `memory_format` (None: LANGBRT_MEMORY_FORMAT, default auto: NHWC on CPU, NCHW on CUDA) is the layout the
    network runs in, resolved for `device` (`MemoryFormat.resolve`): the model's 4-D parameters are converted
    in place when the backend is built (backends sharing one model must share its format: a CUDA graph reads
    the parameters by address), and every batch is converted on the device. Outputs are NCHW-contiguous
    either way, so callers never see the difference.
    """

    name = BackendName.TORCH.value

    def __init__(self, model: LangBRT, device: str = "cpu", precision: str = "fp32",
                 cuda_graphs: bool = True, memory_format: MemoryFormat | str | None = None) -> None:
        chosen = MemoryFormat(memory_format) if memory_format is not None else memory_format_choice()
        self.memory_format = chosen.resolve(torch.device(device))
        self.model = model.to(memory_format=self.memory_format.torch_format)  # 4-D parameters, in place
        self.device = device
        self.precision = precision
        self.dtype = _DTYPES[precision]
        self.image_size = model.config.image_size
        self._on_cuda = torch.device(device).type == "cuda"
        self._cuda_graphs = cuda_graphs and self._on_cuda
        self._graphs: dict[int, _Graph] = {}  # keyed by the prompt-table size T

    @staticmethod
    def check(path: str | Path, device: str | None = None, precision: str | None = "fp32") -> None:
        """Raise LangBRTInputError if this machine cannot run `device` and `precision`, without loading `path`.

        Why apart from `load`: `langbrt-serve` asks before it binds its port (`backends.check_backend`), so a
        flag this machine cannot honour is exit 2 there as in `langbrt-infer`, not a model that failed to load.
        """
        device, precision = device or default_device(), precision or "fp32"
        if precision not in _DTYPES:
            raise LangBRTInputError(f"unknown precision {precision!r}; use fp32 or fp16")
        memory_format_choice()  # LANGBRT_MEMORY_FORMAT: a bad value, now
        require_device(device)
        if precision == "fp16" and torch.device(device).type != "cuda":
            raise LangBRTInputError("fp16 with the torch backend needs a CUDA device; use fp32 on CPU")

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, precision: str | None = "fp32",
             memory_format: MemoryFormat | str | None = None) -> TorchBackend:
        """Load a checkpoint folder or .safetensors file; fp16 needs CUDA (CPU half kernels are slower than fp32).
        `precision=None` is fp32; `memory_format=None` is LANGBRT_MEMORY_FORMAT's."""
        precision = precision or "fp32"
        cls.check(path, device, precision)
        device = device or default_device()
        model = LangBRT.from_pretrained(path, map_location=device).to(_DTYPES[precision]).eval()
        check_impl_runs(model.config.attention, torch.device(device))  # once here, not once per image
        model.prompt_bank.freeze()
        return cls(model, device, precision, memory_format=memory_format)

    @property
    def prompts(self) -> list[str]:
        return list(dict.fromkeys(self.model.predefined_prompts + self.model.prompt_bank.texts))

    @property
    def predefined_prompts(self) -> list[str]:
        return self.model.predefined_prompts

    @torch.inference_mode()
    def prepare_prompts(self, prompts: Sequence[Sequence[str]]) -> None:
        self.model.prompt_table(prompts, len(prompts))  # encodes new prompts into the model's cache

    @torch.inference_mode()
    def run(self, images: torch.Tensor | np.ndarray, prompts: Sequence[Sequence[str]]) -> BackendOutput:
        images = as_float_tensor(images)  # (B, 3, S, S)
        check_square(images, self.image_size)
        with record_function(RunStage.PROMPT_TABLE.value):
            table = self.model.prompt_table(normalize_prompt_lists(prompts, images.shape[0]), images.shape[0])
        with record_function(RunStage.TO_DEVICE.value):
            x = self._to_device(images)
        # the model's GPU current while it runs
        with cuda_device_guard(x.device), record_function(RunStage.FORWARD.value):
            if self._cuda_graphs and x.shape[0] == 1:
                image, mask, maps = self._run_graph(x, table)
            else:
                out = self.model.forward_table(x, table.embeddings, table.predefined_index, table.weights)
                image, mask, maps = out.image, out.mask, out.maps
        with record_function(RunStage.FLOAT_OUTPUTS.value):
            image, mask, maps = _nchw_float(image), _nchw_float(mask), _nchw_float(maps)
        with record_function(RunStage.REGROUP_MAPS.value):
            maps = regroup_maps(maps, table.per_image)  # (B, K, S, S)
        return BackendOutput(image=image, mask=mask, maps=maps)

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        """Host -> device through pinned memory (asynchronous copy), then the dtype and memory format on the
        device in one copy; on CPU only that last step."""
        layout = self.memory_format.torch_format
        if not self._on_cuda:
            return images.to(self.dtype, memory_format=layout)
        if images.device.type == "cpu":
            images = images.pin_memory()
        return images.to(self.device, non_blocking=True).to(self.dtype, memory_format=layout)

    def _run_graph(self, x: torch.Tensor, table: PromptTable) -> tuple[torch.Tensor, ...]:
        """Replay (capturing on first use) the batch-1 graph for this table size; eager if capture fails."""
        T = len(table.texts)
        entry = self._graphs.get(T)
        if entry is None:
            try:
                entry = self._capture(x, table)
            except RuntimeError as err:  # e.g. an op that cannot be captured: keep working, eagerly
                warnings.warn(f"CUDA graph capture failed, running eagerly: {err}", stacklevel=2)
                self._cuda_graphs = False
                out = self.model.forward_table(x, table.embeddings, table.predefined_index, table.weights)
                return out.image, out.mask, out.maps
            self._graphs[T] = entry
        entry.images.copy_(x)
        entry.embeddings.copy_(table.embeddings)
        entry.predefined_index.copy_(table.predefined_index)
        entry.weights.copy_(table.weights)
        entry.graph.replay()
        return tuple(t.clone() for t in entry.outputs)

    def _capture(self, x: torch.Tensor, table: PromptTable) -> _Graph:
        dev = torch.device(self.device)
        static = (
            x.clone(memory_format=self.memory_format.torch_format),  # (1, 3, S, S)
            table.embeddings.to(dev, self.dtype),
            table.predefined_index.to(dev),
            table.weights.to(dev, self.dtype),
        )
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the capture stream, as torch.cuda.graphs requires
            for _ in range(2):
                self.model.forward_table(*static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=torch.cuda.Stream(dev)):  # the default capture stream is GPU 0's
            out = self.model.forward_table(*static)
        return _Graph(graph, *static, outputs=(out.image, out.mask, out.maps), kept=live_folds())


def _nchw_float(t: torch.Tensor) -> torch.Tensor:
    """float32 NCHW-contiguous (one copy, none if it already is): channels_last outputs are strided, and
    callers (the retoucher, the servers, `regroup_maps`) take the layout the backends have always returned."""
    return t.to(torch.float32, memory_format=torch.contiguous_format)  # (B, C, S, S)
