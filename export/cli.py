"""`langbrt-export`: checkpoint folder -> ONNX file, TensorRT engine, or Triton model repository.

    langbrt-export --model runs/langbrt --format onnx --output langbrt.onnx
    langbrt-export --model runs/langbrt --format engine --output langbrt.plan --fp16 --batch-sizes 1 8 32
    langbrt-export --model runs/langbrt --format engine --output langbrt-plugin.plan --fp16 --attention plugin

Exit status: 0 on success; 2 for a bad input (missing or corrupt checkpoint, unwritable output, empty
prompt, bad option); 1 when TensorRT or a GPU is missing for --fp16 / --format engine. Every error is
one line on stderr, and nothing is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from langbrt.bundled import default_model_path
from langbrt.errors import LangBRTError

from .exporter import FORMATS, ExportOptions, export_model
from .graph import DEFAULT_EXTRA_PROMPT_SLOTS
from .onnx_export import DEFAULT_OPSET
from .tensorrt_export import DEFAULT_BATCH_SIZES, TensorRTUnavailable

PROG = "langbrt-export"
EXIT_BAD_INPUT = 2
EXIT_NO_TENSORRT = 1


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{PROG}: {message} (see {PROG} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    formats = "; ".join(f"{f.name}: {f.description}" for f in FORMATS)
    parser = _OneLineParser(prog=PROG, description="Export a trained LangBRT checkpoint for deployment.")
    parser.add_argument("--model", type=Path,
                        help="checkpoint folder (config.json + model.safetensors) or single .safetensors file; "
                             "default: the bundled model")
    parser.add_argument("--format", choices=[f.name for f in FORMATS], default="onnx", help=formats)
    parser.add_argument("--output", type=Path, required=True, help="file (onnx, engine) or folder (triton-repo)")
    parser.add_argument("--fp16", action="store_true",
                        help="build a TensorRT fp16 engine (needs TensorRT and a CUDA GPU)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES),
                        help="engine batch sizes: smallest, typical, largest (default: 1 8 32)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset, >= 17 (default: 17)")
    parser.add_argument("--extra-prompt-slots", type=int, default=DEFAULT_EXTRA_PROMPT_SLOTS,
                        help="slots for prompts outside the baked table, encoded at run time (default: 4)")
    parser.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                        help="add a prompt to the baked table (repeatable); encoded with the model's text encoder")
    parser.add_argument("--timing-cache", type=Path, help="TensorRT timing cache file, read and updated")
    parser.add_argument("--attention", choices=["subgraph", "plugin"], default="subgraph",
                        help="TCA attention as standard ops (subgraph: runs everywhere) or as one TensorRT "
                             "plugin node per block running the fused Triton kernel (plugin: TensorRT fp16 only)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.model is None:
        try:
            args.model = default_model_path()
        except LangBRTError as err:
            print(f"{PROG}: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = ExportOptions(fp16=args.fp16, batch_sizes=tuple(args.batch_sizes), opset=args.opset,
                            extra_prompt_slots=args.extra_prompt_slots, prompts=tuple(args.prompt),
                            timing_cache=args.timing_cache, attention=args.attention)
    try:
        result = export_model(args.model, args.format, args.output, options)
    except TensorRTUnavailable as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_NO_TENSORRT
    except LangBRTError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        print(f"{PROG}: cannot write {args.output}: {err.strerror or err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in result.written:
        print(f"wrote {path}")
    print(f"next: {result.next_command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
