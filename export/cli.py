"""`langbrt-export`: checkpoint folder -> ONNX file, TensorRT engine, or Triton model repository.

    langbrt-export --model runs/langbrt/final --format onnx --output langbrt.onnx
    langbrt-export --model runs/langbrt/final --format engine --output langbrt.plan --fp16 --batch-sizes 1 8 32
    langbrt-export --model runs/langbrt/final --format engine --output langbrt-plugin.plan --fp16 --attention plugin

Exit status: 0 on success; 2 for a bad input (missing or corrupt checkpoint, unwritable output, an output
that would replace an input, an output named for another format, empty prompt, bad option); 1 when TensorRT
or a GPU is missing for --fp16 / --format engine; 4 when an output that passed those checks cannot be written
while exporting (a full disk, an I/O error); 130 on Ctrl-C. Every error is one `langbrt-export: error:
...` line on stderr, and nothing is written (after a failed write or Ctrl-C, only files already complete are
kept; Ctrl-C's line names them).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from langbrt.artifact import MAX_EXTRA_PROMPT_SLOTS
from langbrt.bundled import default_model_path
from langbrt.cli_args import OneLineParser, non_empty_path
from langbrt.cli_errors import fail
from langbrt.cli_pipes import print_out, quiet_on_broken_pipe
from langbrt.console import run_command
from langbrt.errors import LangBRTError, OutputWriteError
from langbrt.exit_codes import EXIT_INTERRUPTED, EXIT_OUTPUT_NOT_WRITTEN, EXIT_USAGE

from .exporter import FORMATS, ExportInterrupted, ExportOptions, export_model
from .graph import DEFAULT_EXTRA_PROMPT_SLOTS
from .onnx_export import DEFAULT_OPSET, MIN_OPSET
from .tensorrt_export import DEFAULT_BATCH_SIZES, TensorRTUnavailable
from .triton_repo import InstanceKind

PROG = "langbrt-export"
EXIT_NO_TENSORRT = 1
ENGINE_ONLY_FLAGS = ("--batch-sizes", "--timing-cache")


def build_parser() -> argparse.ArgumentParser:
    formats = "; ".join(f"{f.name}: {f.description}" for f in FORMATS)
    parser = OneLineParser(prog=PROG, description="Export a trained LangBRT checkpoint for deployment.")
    parser.add_argument("--model", type=non_empty_path,
                        help="checkpoint folder (config.json + model.safetensors) or single .safetensors file; "
                             "default: the bundled model")
    parser.add_argument("--format", choices=[f.name for f in FORMATS], default="onnx", help=formats)
    parser.add_argument("--output", type=non_empty_path, required=True,
                        help="file (onnx, engine) or folder (triton-repo)")
    parser.add_argument("--fp16", action="store_true",
                        help="build a TensorRT fp16 engine (needs TensorRT and a CUDA GPU)")
    parser.add_argument("--batch-sizes", type=int, nargs="+",
                        help="TensorRT engine batch sizes to tune for: the middle one is the optimum, the "
                             "largest the limit; the engine runs every batch from 1 up to it (default: "
                             f"{' '.join(map(str, DEFAULT_BATCH_SIZES))}; only with --format engine or --fp16)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, from {MIN_OPSET} to the newest the installed torch exporter writes "
                             f"(default: {DEFAULT_OPSET})")
    parser.add_argument("--extra-prompt-slots", type=int,
                        help="slots for prompts outside the baked table, encoded at run time, 0.."
                             f"{MAX_EXTRA_PROMPT_SLOTS} (default: {DEFAULT_EXTRA_PROMPT_SLOTS}; a triton-repo has "
                             "none)")
    parser.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                        help="add a prompt to the baked table (repeatable); encoded with the model's text encoder")
    parser.add_argument("--timing-cache", type=non_empty_path,
                        help="TensorRT timing cache file, read and updated (only with --format engine or --fp16)")
    parser.add_argument("--attention", choices=["subgraph", "plugin"], default="subgraph",
                        help="TCA attention as standard ops (subgraph: runs everywhere) or as one TensorRT "
                             "plugin node per block running the fused Triton kernel (plugin: TensorRT fp16 only, "
                             "TCA windows up to 8)")
    parser.add_argument("--instance-kind", choices=[k.value for k in InstanceKind],
                        help="triton-repo only: where Triton runs the model; auto (default): the server's GPU if it "
                             "has one, else its CPU; gpu; cpu (a CPU-only server; not with --fp16: an engine needs "
                             "a GPU)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (output, every file written, the next command) instead of lines")
    return parser


@quiet_on_broken_pipe(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _export(args)
    except ExportInterrupted as interrupted:  # temporary files are gone; what is listed is complete
        kept = ", ".join(str(p) for p in interrupted.written)
        print(f"{PROG}: interrupted; " + (f"export incomplete, kept only the finished {kept}" if kept
                                          else "nothing was written"), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED


def _export(args: argparse.Namespace) -> int:
    builds_engine = args.format == "engine" or args.fp16
    given = [flag for flag, value in zip(ENGINE_ONLY_FLAGS, (args.batch_sizes, args.timing_cache), strict=True)
             if value is not None]
    if given and not builds_engine:  # an error, not a warning: the export would run without what was asked for
        verb = "apply" if len(given) > 1 else "applies"
        return fail(PROG, f"{' and '.join(given)} {verb} only to a TensorRT engine, which --format {args.format} "
                    "does not build without --fp16; add --fp16, use --format engine, or drop them", EXIT_USAGE)
    if args.format == "triton-repo" and args.extra_prompt_slots:  # Triton batches every input: no slots
        return fail(PROG, f"--extra-prompt-slots {args.extra_prompt_slots}: a triton-repo export has no extra prompt "
                    "slots (Triton batches every input); bake new prompts in with --prompt, or drop the flag",
                    EXIT_USAGE)
    if args.instance_kind is not None and args.format != "triton-repo":  # the repository's config says where
        return fail(PROG, f"--instance-kind applies only to --format triton-repo (it sets where Triton runs the "
                    f"model), not to --format {args.format}; drop it", EXIT_USAGE)
    if args.extra_prompt_slots is None:
        args.extra_prompt_slots = DEFAULT_EXTRA_PROMPT_SLOTS
    if args.model is None:
        try:
            args.model = default_model_path()
        except LangBRTError as err:
            return fail(PROG, err, EXIT_USAGE)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    batch_sizes = tuple(args.batch_sizes) if args.batch_sizes is not None else DEFAULT_BATCH_SIZES
    options = ExportOptions(fp16=args.fp16, batch_sizes=batch_sizes, opset=args.opset,
                            extra_prompt_slots=args.extra_prompt_slots, prompts=tuple(args.prompt),
                            timing_cache=args.timing_cache, attention=args.attention,
                            instance_kind=args.instance_kind or InstanceKind.AUTO.value)
    try:
        result = export_model(args.model, args.format, args.output, options)
    except TensorRTUnavailable as err:
        return fail(PROG, err, EXIT_NO_TENSORRT)
    except OutputWriteError as err:
        return fail(PROG, err, EXIT_OUTPUT_NOT_WRITTEN)
    except LangBRTError as err:
        return fail(PROG, err, EXIT_USAGE)
    except OSError as err:  # the outputs were checked before any work: what fails now is the disk
        return fail(PROG, f"cannot write {args.output}: {err.strerror or err}", EXIT_OUTPUT_NOT_WRITTEN)
    if args.json:
        print_out(json.dumps({"output": str(result.path), "written": [str(p) for p in result.written],
                              "next_command": result.next_command}))
        return 0
    for path in result.written:
        print_out(f"wrote {path}")
    print_out(f"next: {result.next_command}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
