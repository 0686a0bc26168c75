"""One export verb: `export_model(model_dir, format, output, ...)`, driven by the format table.

Shared preparation (validating options and every path the export will write, checking TensorRT when a
format needs it, loading the checkpoint) happens once, before anything is written, so a bad input never
leaves a partial output and no output can replace the checkpoint. Then one method per format writes its
artifact and returns the path; each is timed and logged in one line. Every file is written atomically and
temporary folders are removed on any error, Ctrl-C included (`ExportInterrupted` lists what was completed).
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from langbrt.atomic import new_staging_folder
from langbrt.errors import LangBRTInputError
from langbrt.model import LangBRT
from langbrt.orphan_cleanup import remove_orphaned_staging, remove_orphaned_temporaries
from langbrt.output_paths import check_name_lengths, check_output_file, overlap
from langbrt.text import normalize_prompt

from .graph import DEFAULT_EXTRA_PROMPT_SLOTS
from .onnx_export import ATTENTION_EXPORTS, DEFAULT_OPSET, check_export_options, export_onnx
from .tensorrt_export import DEFAULT_BATCH_SIZES, build_engine, rebuild_command, require_tensorrt, sidecar_path
from .triton_repo import (
    MODEL_NAME,
    InstanceKind,
    RepoKind,
    check_model_folder,
    instance_group_kind,
    write_triton_repository,
)

LOGGER = logging.getLogger("langbrt.export")


@dataclass(frozen=True)
class ExportFormat:
    """One row of the format table: the CLI name, what it writes, and whether it needs TensorRT + a GPU."""

    name: str
    suffixes: tuple[str, ...]  # the artifact's file name ends in one (the runtime picks its backend by it); () = folder
    needs_tensorrt: bool
    description: str


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("onnx", (".onnx",), False, "one ONNX file (runs on ONNX Runtime; --fp16 also builds an engine)"),
    ExportFormat("engine", (".plan", ".engine"), True,
                 "TensorRT engine (fp16 with --fp16) + .json sidecar, via ONNX"),
    ExportFormat("triton-repo", (), False,
                 "Triton Inference Server model repository (ONNX, or engine with --fp16)"),
)
FORMAT_NAMES = tuple(f.name for f in FORMATS)


def export_format(name: str) -> ExportFormat:
    """The `FORMATS` row for `--format name`; an unknown name is the user's error, listing the choices."""
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
    instance_kind: str = InstanceKind.AUTO.value  # triton-repo: where Triton runs the model (`InstanceKind`)


@dataclass(frozen=True)
class ExportResult:
    """What `export_model` wrote; `next_command` is printed after it so the user sees how to run the artifact."""

    path: Path  # the artifact the user asked for
    written: list[Path]  # everything written, in order
    next_command: str


class ExportInterrupted(KeyboardInterrupt):
    """Ctrl-C during an export, after temporary files were removed; `written` lists the complete files kept."""

    def __init__(self, written: list[Path]) -> None:
        super().__init__()
        self.written = written


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
    """One loaded model; `export_<format>(output)` methods each write one artifact and return it.

    `model_dir` is the checkpoint the model came from: artifacts record its hash, so a runtime can tell
    which weights an engine was built from.
    """

    def __init__(self, model: LangBRT, model_dir: str | Path, options: ExportOptions) -> None:
        self.model = model
        self.model_dir = Path(model_dir)
        self.options = options
        self.written: list[Path] = []

    @classmethod
    def from_checkpoint(cls, model_dir: str | Path, options: ExportOptions) -> Exporter:
        """Load the checkpoint once, for every artifact this exporter writes."""
        return cls(LangBRT.from_pretrained(model_dir), model_dir, options)

    @_timed("ONNX")
    def export_onnx(self, output: Path) -> Path:
        """Write the ONNX graph with the options' prompt table and extra prompt slots to `output`."""
        return self._onnx(output, None)

    @_timed("TensorRT")
    def export_engine(self, output: Path, *, onnx_path: Path | None = None) -> Path:
        """Build `output` from `onnx_path`, exporting that ONNX beside the engine first when not given."""
        if onnx_path is None:
            onnx_path = self.export_onnx(output.with_suffix(".onnx"))
        return self._engine(onnx_path, output)

    @_timed("Triton repository")
    def export_triton_repo(self, output: Path) -> Path:
        """ONNX (or, with --fp16, an engine) without extra prompt slots: Triton batches every input.

        The model file is made in a hidden temporary folder beside `output`, removed whatever happens; only
        the repository is logged and listed as written.
        """
        artifact_dir = new_staging_folder(output)
        try:
            artifact = self._onnx(artifact_dir / "model.onnx", 0)
            kind = RepoKind.ONNX
            if self.options.fp16:
                command = rebuild_command(output, self.model_dir, self.options.batch_sizes, self.options.attention,
                                          export_format="triton-repo")
                artifact = self._engine(artifact, artifact_dir / "model.plan", command)
                kind = RepoKind.ENGINE
            max_batch = max(self.options.batch_sizes) if kind is RepoKind.ENGINE else 32
            preferred = tuple(b for b in (4, 8, 16) if b <= max_batch) or (max_batch,)
            return write_triton_repository(artifact, output, kind=kind, max_batch_size=max_batch,
                                           preferred_batch_sizes=preferred, instance_kind=self.options.instance_kind)
        finally:
            shutil.rmtree(artifact_dir, ignore_errors=True)

    def _onnx(self, output: Path, extra_prompt_slots: int | None) -> Path:
        slots = self.options.extra_prompt_slots if extra_prompt_slots is None else extra_prompt_slots
        return export_onnx(self.model, output, opset=self.options.opset, extra_prompt_slots=slots,
                           prompts=list(self.options.prompts), checkpoint_dir=self.model_dir,
                           attention=self.options.attention)

    def _engine(self, onnx_path: Path, output: Path, command: str | None = None) -> Path:
        return build_engine(onnx_path, output, fp16=self.options.fp16, batch_sizes=self.options.batch_sizes,
                            timing_cache=self.options.timing_cache, model_dir=self.model_dir, command=command)


def export_model(model_dir: str | Path, format: str, output: str | Path,
                 options: ExportOptions | None = None) -> ExportResult:
    """Export the checkpoint in `model_dir` to `output` in `format` (a name from `FORMATS`)."""
    options = options or ExportOptions()
    fmt = export_format(format)
    output = Path(output)
    _validate(model_dir, options, fmt, output)
    if fmt.needs_tensorrt or options.fp16:
        require_tensorrt(f"--format {fmt.name}" if fmt.needs_tensorrt else "--fp16")  # before loading or writing
    _remove_orphans(fmt, output, options)
    exporter = Exporter.from_checkpoint(model_dir, options)
    try:
        return _run(exporter, fmt, output)
    except KeyboardInterrupt:
        raise ExportInterrupted([p for p in exporter.written if p.exists()]) from None


def _remove_orphans(fmt: ExportFormat, output: Path, options: ExportOptions) -> None:
    """Remove the hidden temporaries an export to `output` killed outright (SIGKILL) left over an hour ago: those of
    the files it writes, or a triton-repo's staging folders beside the repository and in it."""
    for path in planned_files(fmt, output, options):
        remove_orphaned_temporaries(path.parent, [path.name])
    if not fmt.suffixes:
        remove_orphaned_staging(output.parent, output.name)
        remove_orphaned_staging(output, MODEL_NAME)


def _run(exporter: Exporter, fmt: ExportFormat, output: Path) -> ExportResult:
    """Write the format's artifact(s); the next command quotes its paths so it pastes into a shell as printed
    (one with a space, or a shell character, split into several arguments)."""
    model_dir, options = exporter.model_dir, exporter.options
    if fmt.name == "onnx":
        path = exporter.export_onnx(output)
        next_command = f"langbrt-infer photo.jpg --model {_quoted(path)} --backend onnxruntime"
        if options.attention == "plugin":
            next_command = (f"langbrt-export --model {_quoted(model_dir)} --format engine --output "
                            f"{_quoted(output.with_suffix('.plan'))} --attention plugin --fp16"
                            "   # on a GPU with TensorRT")
        if options.fp16:
            engine = exporter.export_engine(output.with_suffix(".plan"), onnx_path=path)
            next_command = f"langbrt-infer photo.jpg --model {_quoted(engine)} --backend tensorrt"
    elif fmt.name == "engine":
        path = exporter.export_engine(output)
        next_command = f"langbrt-infer photo.jpg --model {_quoted(path)} --backend tensorrt"
    else:
        path = exporter.export_triton_repo(output)
        next_command = (f"tritonserver --model-repository {_quoted(path)}   "
                        f"# then: perf_analyzer -m langbrt --concurrency-range 1:8 --percentile=95")
    return ExportResult(path=path, written=list(exporter.written), next_command=next_command)


def _quoted(path: Path) -> str:
    return shlex.quote(str(path))


def planned_files(fmt: ExportFormat, output: Path, options: ExportOptions) -> dict[Path, str]:
    """Every file an export to `output` writes besides temporary ones, with how an error line names it."""
    if fmt.name == "onnx" and not options.fp16:
        return {output: "--output"}
    if fmt.name == "onnx":
        engine = output.with_suffix(".plan")
        return {output: "--output", engine: "the --fp16 engine", sidecar_path(engine): "the engine's metadata"}
    if fmt.name == "engine":
        return {output.with_suffix(".onnx"): "the ONNX file written beside --output", output: "--output",
                sidecar_path(output): "the engine's metadata"}
    return {}  # triton-repo: a folder, checked by `check_repository_folder`


def check_repository_folder(output: Path, inputs: list[Path], flag: str = "--output") -> Path:
    """Like `check_output_file`, for a folder the export fills: refuse one that is, holds or lies inside an input,
    an existing file, one whose parent is missing or not writable, or one whose model folder holds what the
    export did not write (`check_model_folder`)."""
    check_name_lengths(output, flag)
    resolved = output.resolve()
    for given in inputs:
        where = overlap(resolved, given, contains=True)
        if where:
            raise LangBRTInputError(f"{flag} {output} {where} the input {given}; choose another folder")
    if output.exists() and not output.is_dir():
        raise LangBRTInputError(f"{flag} {output} is a file; a Triton repository is a folder: give a folder path")
    for folder in (resolved, resolved.parent):
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise LangBRTInputError(f"{flag} {output}: the folder {folder} is not writable")
    if not resolved.parent.is_dir():
        what = "is not a folder" if resolved.parent.exists() else "does not exist"
        raise LangBRTInputError(f"{flag} {output}: the folder {resolved.parent} {what}")
    check_model_folder(output / MODEL_NAME)
    return output


def _check_name(fmt: ExportFormat, output: Path) -> None:
    """The runtime picks a backend by suffix, so an artifact named like another format would load wrongly."""
    if not fmt.suffixes or output.suffix.lower() in fmt.suffixes:
        return
    other = next((f for f in FORMATS if output.suffix.lower() in f.suffixes), None)
    hint = f", or use --format {other.name} for a {output.suffix} file" if other else ""
    raise LangBRTInputError(f"--output {output}: --format {fmt.name} writes a {' or '.join(fmt.suffixes)} file; "
                            f"name it so{hint}")


def _check_instance_kind(options: ExportOptions) -> None:
    """A known `--instance-kind`, and one the repository's model can run on (an engine: a GPU only)."""
    try:
        kind = InstanceKind(options.instance_kind)
    except ValueError:
        raise LangBRTInputError(f"--instance-kind {options.instance_kind!r} is not one of: "
                                f"{', '.join(k.value for k in InstanceKind)}") from None
    instance_group_kind(RepoKind.ENGINE if options.fp16 else RepoKind.ONNX, kind)


def _validate(model_dir: str | Path, options: ExportOptions, fmt: ExportFormat, output: Path) -> None:
    """Reject bad options and outputs that cannot be written or would replace an input, with one line, before
    any work."""
    for prompt in options.prompts:
        normalize_prompt(prompt)  # raises LangBRTInputError for an empty or over-long prompt
    check_export_options(options.opset, options.extra_prompt_slots)
    if options.attention not in ATTENTION_EXPORTS:
        raise LangBRTInputError(f"--attention {options.attention!r} is not one of: {', '.join(ATTENTION_EXPORTS)}")
    if options.attention == "plugin" and fmt.name != "onnx" and not options.fp16:
        raise LangBRTInputError(f"--attention plugin runs only in a TensorRT fp16 engine: add --fp16 to "
                                f"--format {fmt.name}")
    if not options.batch_sizes or min(options.batch_sizes) < 1:
        raise LangBRTInputError(f"--batch-sizes must be positive integers, got {list(options.batch_sizes)}")
    inputs = [Path(model_dir)]
    if options.timing_cache is not None:  # read and rewritten by design, but never the checkpoint
        check_output_file(options.timing_cache, inputs, flag="--timing-cache")
        inputs.append(options.timing_cache)
    if not fmt.suffixes:
        _check_instance_kind(options)
        check_repository_folder(output, inputs)
        return
    for path, flag in planned_files(fmt, output, options).items():
        check_output_file(path, inputs, flag=flag)
    _check_name(fmt, output)
