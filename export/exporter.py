"""One export verb: `export_model(model_dir, format, output, ...)`, driven by the format table.

Shared preparation (validating options, checking TensorRT when a format needs it, loading the
checkpoint) happens once, before anything is written, so a bad input never leaves a partial output.
Then one method per format writes its artifact and returns the path; each is timed and logged in one line.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from langbrt.errors import LangBRTInputError
from langbrt.model import LangBRT
from langbrt.text import normalize_prompt

from .graph import DEFAULT_EXTRA_PROMPT_SLOTS
from .onnx_export import ATTENTION_EXPORTS, DEFAULT_OPSET, MIN_OPSET, export_onnx
from .tensorrt_export import DEFAULT_BATCH_SIZES, build_engine, require_tensorrt
from .triton_repo import RepoKind, write_triton_repository

LOGGER = logging.getLogger("langbrt.export")


@dataclass(frozen=True)
class ExportFormat:
    """One row of the format table: the CLI name, what it writes, and whether it needs TensorRT + a GPU."""

    name: str
    suffix: str  # of the artifact written ("" for a folder)
    needs_tensorrt: bool
    description: str


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("onnx", ".onnx", False, "one ONNX file (runs on ONNX Runtime; --fp16 also builds an engine)"),
    ExportFormat("engine", ".plan", True, "TensorRT engine (fp16 with --fp16) + .json sidecar, via ONNX"),
    ExportFormat("triton-repo", "", False, "Triton Inference Server model repository (ONNX, or engine with --fp16)"),
)
FORMAT_NAMES = tuple(f.name for f in FORMATS)


def export_format(name: str) -> ExportFormat:
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise LangBRTInputError(f"unknown export format {name!r}; choose one of: {', '.join(FORMAT_NAMES)}")


@dataclass(frozen=True)
class ExportOptions:
    """Every export option with its default; the CLI maps its flags onto these one to one."""

    fp16: bool = False
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    opset: int = DEFAULT_OPSET
    extra_prompt_slots: int = DEFAULT_EXTRA_PROMPT_SLOTS
    prompts: tuple[str, ...] = field(default_factory=tuple)
    timing_cache: Path | None = None
    attention: str = "subgraph"  # a key of ATTENTION_EXPORTS: standard ops, or TensorRT plugin nodes


@dataclass(frozen=True)
class ExportResult:
    path: Path  # the artifact the user asked for
    written: list[Path]  # everything written, in order
    next_command: str


def _timed(label: str) -> Callable[[Callable[..., Path]], Callable[..., Path]]:
    """Time an export method and log one line with the path and its size."""

    def wrap(method: Callable[..., Path]) -> Callable[..., Path]:
        @functools.wraps(method)
        def run(self: Exporter, *args: object, **kwargs: object) -> Path:
            start = time.perf_counter()
            path = method(self, *args, **kwargs)
            size = sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size
            LOGGER.info("%s: wrote %s (%.1f MB) in %.1f s", label, path, size / 1e6, time.perf_counter() - start)
            self.written.append(path)
            return path

        return run

    return wrap


class Exporter:
    """Loads a checkpoint once; `export_<format>(output)` methods each write one artifact and return it."""

    def __init__(self, model_dir: str | Path, options: ExportOptions) -> None:
        self.model_dir = Path(model_dir)
        self.options = options
        self.written: list[Path] = []
        self.model = LangBRT.from_pretrained(self.model_dir)

    @_timed("ONNX")
    def export_onnx(self, output: Path, *, extra_prompt_slots: int | None = None) -> Path:
        slots = self.options.extra_prompt_slots if extra_prompt_slots is None else extra_prompt_slots
        return export_onnx(self.model, output, opset=self.options.opset, extra_prompt_slots=slots,
                           prompts=list(self.options.prompts), checkpoint_dir=self.model_dir,
                           attention=self.options.attention)

    @_timed("TensorRT")
    def export_engine(self, output: Path, *, onnx_path: Path | None = None,
                      extra_prompt_slots: int | None = None) -> Path:
        """Build `output` from `onnx_path`, exporting that ONNX beside the engine first when not given."""
        if onnx_path is None:
            onnx_path = self.export_onnx(output.with_suffix(".onnx"), extra_prompt_slots=extra_prompt_slots)
        return build_engine(onnx_path, output, fp16=self.options.fp16, batch_sizes=self.options.batch_sizes,
                            timing_cache=self.options.timing_cache, model_dir=self.model_dir)

    @_timed("Triton repository")
    def export_triton_repo(self, output: Path) -> Path:
        """ONNX (or, with --fp16, an engine) without extra prompt slots: Triton batches every input."""
        artifact_dir = output.parent / f".{output.name}.artifacts"
        artifact_dir.mkdir(exist_ok=True)
        try:
            onnx_path = self.export_onnx(artifact_dir / "model.onnx", extra_prompt_slots=0)
            kind = RepoKind.ONNX
            artifact = onnx_path
            if self.options.fp16:
                artifact = self.export_engine(artifact_dir / "model.plan", onnx_path=onnx_path)
                kind = RepoKind.ENGINE
            max_batch = max(self.options.batch_sizes) if kind is RepoKind.ENGINE else 32
            preferred = tuple(b for b in (4, 8, 16) if b <= max_batch) or (max_batch,)
            path = write_triton_repository(artifact, output, kind=kind, max_batch_size=max_batch,
                                           preferred_batch_sizes=preferred)
        finally:
            for leftover in artifact_dir.glob("*"):
                leftover.unlink()
            artifact_dir.rmdir()
        self.written = [p for p in self.written if not str(p).startswith(str(artifact_dir))]
        return path


def export_model(model_dir: str | Path, format: str, output: str | Path,
                 options: ExportOptions | None = None) -> ExportResult:
    """Export the checkpoint in `model_dir` to `output` in `format` (a name from `FORMATS`)."""
    options = options or ExportOptions()
    fmt = export_format(format)
    output = Path(output)
    _validate(options, fmt, output)
    if fmt.needs_tensorrt or options.fp16:
        require_tensorrt()  # before loading or writing anything
    exporter = Exporter(model_dir, options)
    if fmt.name == "onnx":
        path = exporter.export_onnx(output)
        next_command = f"langbrt-infer photo.jpg --model {path} --backend onnxruntime"
        if options.attention == "plugin":
            next_command = (f"langbrt-export --model {model_dir} --format engine --output "
                            f"{output.with_suffix('.plan')} --attention plugin --fp16   # on a GPU with TensorRT")
        if options.fp16:
            engine = exporter.export_engine(output.with_suffix(".plan"), onnx_path=path)
            next_command = f"langbrt-infer photo.jpg --model {engine} --backend tensorrt"
    elif fmt.name == "engine":
        path = exporter.export_engine(output)
        next_command = f"langbrt-infer photo.jpg --model {path} --backend tensorrt"
    else:
        path = exporter.export_triton_repo(output)
        next_command = (f"tritonserver --model-repository {path}   "
                        f"# then: perf_analyzer -m langbrt --concurrency-range 1:8 --percentile=95")
    return ExportResult(path=path, written=list(exporter.written), next_command=next_command)


def _validate(options: ExportOptions, fmt: ExportFormat, output: Path) -> None:
    """Reject bad options and unwritable outputs with one line, before any work."""
    for prompt in options.prompts:
        normalize_prompt(prompt)  # raises LangBRTInputError for an empty or over-long prompt
    if options.opset < MIN_OPSET:
        raise LangBRTInputError(f"--opset {options.opset} is too old: LangBRT exports need opset >= {MIN_OPSET}")
    if options.extra_prompt_slots < 0:
        raise LangBRTInputError(f"--extra-prompt-slots must be >= 0, got {options.extra_prompt_slots}")
    if options.attention not in ATTENTION_EXPORTS:
        raise LangBRTInputError(f"--attention {options.attention!r} is not one of: {', '.join(ATTENTION_EXPORTS)}")
    if options.attention == "plugin" and fmt.name != "onnx" and not options.fp16:
        raise LangBRTInputError(f"--attention plugin runs only in a TensorRT fp16 engine: add --fp16 to "
                                f"--format {fmt.name}")
    if not options.batch_sizes or min(options.batch_sizes) < 1:
        raise LangBRTInputError(f"--batch-sizes must be positive integers, got {list(options.batch_sizes)}")
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise LangBRTInputError(f"cannot write {output}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise LangBRTInputError(f"cannot write {output}: folder {folder} is not writable")
    if fmt.suffix and output.is_dir():
        raise LangBRTInputError(f"cannot write {output}: it is a folder, give a file name ending in {fmt.suffix}")
