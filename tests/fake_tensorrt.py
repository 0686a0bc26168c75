"""A `tensorrt` module for engine-build tests on machines without TensorRT or a GPU (and a stderr for its bars).

It has what `build_engine` calls and no more. Its builder reports to `config.progress_monitor` the way the
TensorRT 10 docs (IProgressMonitor) describe: a phase starts with its parent's name and its number of steps,
each step done is a `step_complete` whose False return cancels the build, every started phase is finished
(also when cancelled), and a cancelled build returns None. The phase names and counts are made up.
"""

import io
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

import torch

from langbrt.artifact import ArtifactMetadata
from langbrt.export import exporter, tensorrt_export


@dataclass(frozen=True)
class Phase:
    name: str
    steps: int
    children: tuple["Phase", ...] = ()  # run inside this phase, before its first step completes


BUILD = Phase("Building engine", 2, (Phase("Graph optimization", 1), Phase("Tactic search", 3)))
ENGINE = b"serialized engine"


def fake_tensorrt(*, progress_monitor: bool = True,
                  before_step: Callable[[str, int], None] = lambda phase, step: None) -> types.SimpleNamespace:
    """The module; `before_step(phase, step)` runs just before each `step_complete` (to send a signal there).

    `calls` on the module lists every monitor call as (method, args, returned), in order. Without
    `progress_monitor` it is a TensorRT before 10: no `IProgressMonitor`, and the config is never asked for one.
    """
    calls: list[tuple[str, tuple, object]] = []

    class Config:
        def set_memory_pool_limit(self, pool: object, size: int) -> None:
            pass

        def set_flag(self, flag: object) -> None:
            pass

        def add_optimization_profile(self, profile: object) -> None:
            pass

        def create_timing_cache(self, data: bytes) -> bytes:
            return data

        def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> None:
            pass

        def get_timing_cache(self) -> types.SimpleNamespace:
            return types.SimpleNamespace(serialize=lambda: b"timing cache")

    def report(monitor: object, method: str, *args: object) -> object:
        returned = getattr(monitor, method)(*args)
        calls.append((method, args, returned))
        return returned

    def run(monitor: object, phase: Phase, parent: str | None) -> bool:
        """One phase and its children; False once a step_complete asked to cancel."""
        report(monitor, "phase_start", phase.name, parent, phase.steps)
        try:
            if not all(run(monitor, child, phase.name) for child in phase.children):
                return False
            for step in range(phase.steps):
                before_step(phase.name, step)
                if not report(monitor, "step_complete", phase.name, step):
                    return False
            return True
        finally:
            report(monitor, "phase_finish", phase.name)

    class Builder:
        def __init__(self, logger: object) -> None:
            pass

        def create_network(self, flags: int) -> types.SimpleNamespace:
            return types.SimpleNamespace(num_inputs=0, num_outputs=0, num_layers=0)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> object:
            return object()

        def build_serialized_network(self, network: object, config: Config) -> bytes | None:
            monitor = getattr(config, "progress_monitor", None)
            if monitor is None:
                return ENGINE
            return ENGINE if run(monitor, BUILD, None) else None

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: object, logger: object) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            return True

    trt = types.SimpleNamespace(
        __version__="10.13.3.9", calls=calls, Builder=Builder, OnnxParser=OnnxParser,
        Logger=Logger, MemoryPoolType=types.SimpleNamespace(WORKSPACE=0),
        BuilderFlag=types.SimpleNamespace(FP16=0, OBEY_PRECISION_CONSTRAINTS=1),
        LayerType=types.SimpleNamespace(NORMALIZATION=0, REDUCE=1), float32="float32")
    if progress_monitor:
        trt.IProgressMonitor = type("IProgressMonitor", (), {})  # stands in for the pybind11 base class
    return trt


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so tqdm draws its bars into it."""

    def isatty(self) -> bool:
        return True


def install(monkeypatch, trt: types.SimpleNamespace) -> None:
    """Make `import tensorrt` give `trt` on a machine with one (fake) GPU, and the ONNX file's metadata a stub."""
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(exporter, "require_tensorrt", lambda asked_by="--fp16": None)
    monkeypatch.setattr(tensorrt_export, "require_tensorrt", lambda asked_by="--fp16": None)
    monkeypatch.setattr(tensorrt_export, "read_onnx_metadata",
                        lambda path: ArtifactMetadata(64, ["acne"], [-1], "x", 4, "0", 0))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: types.SimpleNamespace(name="Fake GPU", major=9, minor=0))

