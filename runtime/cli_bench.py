"""`langbrt-bench`: latency, throughput and roofline of each backend that can load the given model(s).

For every (model path, backend, precision, batch size) that loads: `--warmup` untimed calls, then calls
timed one by one for `--seconds`; latency p50/p90/p99 per call (ms), throughput images/s. Rows that cannot
run (no GPU, no TensorRT, fp16 on CPU) are listed as skipped with the reason, never silently dropped. Each
row records the memory format the torch backend ran in (LANGBRT_MEMORY_FORMAT; null for exported models),
so NCHW and channels_last reports can be compared.

Cost model (per image, batch B, written down so the roofline can be checked by hand):
  FLOPs        = FlopCounterMode count of one torch `forward_table` at batch 1 (needs a checkpoint folder;
                 an exported artifact reuses the count of the --model checkpoint its model_hash names)
  bytes moved  = weight_bytes / B + input bytes (3*S*S*e) + output bytes ((3 + 1 + T)*S*S*e),
                 e = 4 (fp32) or 2 (fp16); activations inside the network are assumed to stay on chip
  bound (s)    = max(FLOPs / peak_flops, bytes / peak_bandwidth)   (peak table below; CPU: unknown -> null)
  achieved     = bound / measured seconds per image

Exit status: 0 when at least one row was measured; 1 when every row was skipped (nothing measured, no
report written), or when a backend failed while timed with an error other than out of memory (one line
naming the row, no report written); 2 for a bad input (a model path no backend recognises, a bad number, an
--out that would replace a model or cannot be written: all checked before any work); 4 when the --out report
cannot be written once measured (a full disk: the report is printed all the same, so no measurement is lost);
130 on Ctrl-C (no report written).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langbrt.artifact import ArtifactMetadata
from langbrt.atomic import atomic_write_text
from langbrt.bundled import default_model_path
from langbrt.checkpoint import weights_sha256
from langbrt.cli_args import (
    THREADS_HELP,
    OneLineParser,
    device_arg,
    non_empty,
    non_empty_path,
    non_negative_int,
    positive_int,
    positive_number,
)
from langbrt.cli_errors import fail
from langbrt.cli_pipes import print_out, quiet_on_broken_pipe
from langbrt.console import run_command
from langbrt.errors import LangBRTError, OutputWriteError
from langbrt.exit_codes import EXIT_INTERRUPTED, EXIT_OUTPUT_NOT_WRITTEN, EXIT_USAGE
from langbrt.output_paths import check_output_file

from .backends import load_backend
from .backends.base import PRECISIONS, BackendName, backend_for_path
from .backends.memory_format import MemoryFormat, memory_format_choice

# Dense peaks per device (name substring -> precision -> FLOP/s), and memory bandwidth in bytes/s.
PEAK_FLOPS = {
    "H200": {"fp16": 989e12, "fp32": 67e12},
    "H100": {"fp16": 989e12, "fp32": 67e12},  # SXM; fp32 = non-tensor-core FP32
}
PEAK_BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12}
_ELEMENT_BYTES = {"fp32": 4, "fp16": 2}
PROG = "langbrt-bench"
EXIT_NOTHING_MEASURED = 1
EXIT_BACKEND_FAILED = 1
DEFAULT_BATCH_SIZES = (1, 8, 32)


class BackendFailed(LangBRTError):
    """A backend raised while timed, not for lack of memory (a CUDA fault, an onnxruntime error): the run
    stops there, since a faulted device would fail every later row too."""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="Benchmark LangBRT backends: latency percentiles, "
                "throughput, FLOPs and the device roofline. Prints a table, or JSON with --json.")
    p.add_argument("--model", action="append", metavar="PATH", type=non_empty,
                   help="checkpoint folder, .onnx or .engine (repeat to compare, e.g. a folder and its .onnx); "
                   "default: the bundled model")
    p.add_argument("--backend", default="all", choices=["all"] + [b.value for b in BackendName if b.value != "auto"],
                   help="all: every backend that can load each --model")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=PRECISIONS,
                   help="one row set per precision; rows a backend cannot run (fp16 on CPU) are listed as "
                   "skipped (default fp32)")
    p.add_argument("--batch-sizes", nargs="+", type=positive_int, default=list(DEFAULT_BATCH_SIZES), metavar="N",
                   help=f"images per call, one row each (default {' '.join(map(str, DEFAULT_BATCH_SIZES))})")
    p.add_argument("--warmup", type=non_negative_int, default=5, help="untimed calls before timing (default 5)")
    p.add_argument("--seconds", type=positive_number, default=10.0,
                   help="timed window per row, at least 3 calls (default 10)")
    p.add_argument("--device", type=device_arg, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help=THREADS_HELP + "; the report's environment records the count used")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", type=non_empty_path, help="also write the JSON report here (atomically)")
    return p


def environment() -> dict[str, Any]:
    """Device, driver and library versions: numbers mean nothing without them."""
    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "numpy": np.__version__, "platform": platform.platform(), "cpu": _cpu_name(),
                           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    for module in ("onnxruntime", "tensorrt"):
        try:
            env[module] = __import__(module).__version__
        except ImportError:
            env[module] = None
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
        env["driver"] = _driver_version()
    else:
        env["gpu"] = env["cuda"] = env["driver"] = None
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _driver_version() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def model_cost(path: str) -> dict[str, Any]:
    """FLOPs of one image through `forward_table`, and the weight bytes, from a checkpoint (folder or file)."""
    from torch.utils.flop_counter import FlopCounterMode

    from langbrt.model import LangBRT

    model = LangBRT.from_pretrained(path).eval()
    S = model.config.image_size
    table = model.prompt_table([model.predefined_prompts], 1)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.forward_table(torch.rand(1, 3, S, S), table.embeddings, table.predefined_index, table.weights)
    params = sum(p.numel() for p in model.parameters())
    return {"image_size": S, "flops_per_image": int(counter.get_total_flops()), "parameters": params,
            "num_prompts": len(table.texts), "source": path, "weights_sha256": weights_sha256(path)}


def export_cost(metadata: ArtifactMetadata, costs: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The cost of the checkpoint an exported model came from (its `model_hash` is that checkpoint's weights
    sha256), with the export's extra-prompt maps, which every call returns, counted as output; None when no
    --model checkpoint is that one. Why not any checkpoint of the same size: another model's FLOPs and
    weights would give this one a bound it was never measured against (QA, 2026-11-26)."""
    source = next((cost for cost in costs.values() if cost["weights_sha256"] == metadata.model_hash), None)
    if source is None:
        return None
    return {**source, "num_prompts": source["num_prompts"] + metadata.extra_prompt_slots}


def roofline(cost: dict[str, Any] | None, precision: str, batch: int, seconds_per_image: float,
             gpu: str | None) -> dict[str, Any]:
    """Bytes per image, the device bound and the achieved fraction (null where a number is unknown).

    Every row gets the same fields, null where unknown: one without a cost used to lack three of them, and a
    script reading them from each row of the report failed on it (QA)."""
    key = next((k for k in PEAK_FLOPS if gpu and k in gpu), None)
    peak_flops = PEAK_FLOPS[key][precision] if key else None
    peak_bandwidth = PEAK_BANDWIDTH[key] if key else None
    row: dict[str, Any] = {"flops_per_image": None, "bytes_per_image": None, "achieved_tflops": None,
                           "peak_flops": peak_flops, "peak_bandwidth": peak_bandwidth, "bound_ms": None,
                           "achieved_fraction": None}
    if cost is None:
        return row
    e, S = _ELEMENT_BYTES[precision], cost["image_size"]
    moved = cost["parameters"] * e / batch + 3 * S * S * e + (4 + cost["num_prompts"]) * S * S * e
    row.update(flops_per_image=cost["flops_per_image"], bytes_per_image=int(moved))
    if seconds_per_image:
        row["achieved_tflops"] = cost["flops_per_image"] / seconds_per_image / 1e12
    if peak_flops is not None and peak_bandwidth is not None:
        bound = max(cost["flops_per_image"] / peak_flops, moved / peak_bandwidth)
        row["bound_ms"] = bound * 1e3
        row["achieved_fraction"] = bound / seconds_per_image if seconds_per_image else None
    return row


def time_backend(backend: Any, batch: int, warmup: int, seconds: float) -> dict[str, Any]:
    """Warm up, then time single calls for `seconds` (at least 3 calls); percentiles over the calls."""
    S = backend.image_size
    images = torch.rand(batch, 3, S, S, generator=torch.Generator().manual_seed(0))
    prompts = [backend.predefined_prompts] * batch
    for _ in range(warmup):
        backend.run(images, prompts).image.cpu()
    latencies: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(latencies) < 3:
        t0 = time.perf_counter()
        backend.run(images, prompts).image.cpu()  # .cpu() waits for the device
        latencies.append(time.perf_counter() - t0)
    elapsed = sum(latencies)
    ms = np.array(latencies) * 1e3
    return {"calls": len(latencies), "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "images_per_s": batch * len(latencies) / elapsed,
            "seconds_per_image": elapsed / (batch * len(latencies))}


def _backends_for(path: str, choice: str) -> list[str]:
    """The backend(s) to try on `path`; `all` is the one its kind names (`main` refused paths of no kind)."""
    return [choice] if choice != "all" else [backend_for_path(path).value]


def _once_each(paths: list[str]) -> list[str]:
    """`paths` without a repeat of a file or folder, however spelled (first spelling kept): like a batch size
    given twice, a model given twice was timed and reported twice."""
    first: dict[Path, str] = {}
    for path in paths:
        first.setdefault(Path(path).resolve(), path)
    return list(first.values())


def _is_checkpoint(path: str) -> bool:
    try:
        return backend_for_path(path) is BackendName.TORCH
    except LangBRTError:
        return False


def _out_of_memory(err: BaseException) -> bool:
    """A batch too large for the device: CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    text = str(err)
    return isinstance(err, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in text \
        or "out of memory" in text


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    env = environment()
    costs = {path: model_cost(path) for path in args.model if _is_checkpoint(path)}
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for path in args.model:
        for name in _backends_for(path, args.backend):
            for precision in args.precision:
                try:
                    backend = load_backend(path, name, args.device, precision)
                except LangBRTError as err:
                    skipped.append({"model": path, "backend": name, "precision": precision, "reason": str(err)})
                    continue
                metadata = getattr(backend, "metadata", None)  # an exported model's (ArtifactBackend)
                cost = export_cost(metadata, costs) if metadata is not None else costs.get(path)
                for batch in args.batch_sizes:
                    try:
                        timing = time_backend(backend, batch, args.warmup, args.seconds)
                    except (RuntimeError, MemoryError) as err:
                        if not _out_of_memory(err):
                            first = (str(err).strip().splitlines() or ["(no message)"])[0]
                            raise BackendFailed(f"{path}: {name} {precision} batch {batch} failed while timed: "
                                                f"{type(err).__name__}: {first}") from err
                        skipped.append({"model": path, "backend": name, "precision": precision,
                                        "reason": f"batch {batch} does not fit in this machine's memory"})
                        continue
                    rows.append({"model": path, "backend": name, "precision": precision, "batch_size": batch,
                                 "device": backend.device, "memory_format": _memory_format(backend), **timing,
                                 **roofline(cost, precision, batch, timing["seconds_per_image"], env["gpu"])})
    return {"environment": env, "settings": {"warmup": args.warmup, "seconds": args.seconds,
                                             "batch_sizes": args.batch_sizes, "precisions": args.precision},
            "models": costs, "rows": rows, "skipped": skipped}


def _memory_format(backend: Any) -> str | None:
    """The layout the torch backend ran the network in; None for an exported model (its engine decides)."""
    memory_format = getattr(backend, "memory_format", None)
    return memory_format.value if memory_format is not None else None


def format_table(report: dict[str, Any]) -> str:
    """The measured rows under a header (none when nothing was measured), then one line per skipped row."""
    lines = [f"{'backend':<12}{'prec':<6}{'batch':>6}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'img/s':>10}"
             f"{'of bound':>10}  device"] if report["rows"] else []
    for r in report["rows"]:
        frac = f"{r['achieved_fraction']:.1%}" if r.get("achieved_fraction") is not None else "-"
        layout = r.get("memory_format")
        where = r["device"] if layout in (None, MemoryFormat.CONTIGUOUS.value) else f"{r['device']}, {layout}"
        lines.append(f"{r['backend']:<12}{r['precision']:<6}{r['batch_size']:>6}{r['p50_ms']:>10.2f}"
                     f"{r['p90_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['images_per_s']:>10.1f}{frac:>10}  {where}")
    lines += [f"skipped {' '.join(filter(None, (s['backend'], s.get('precision'))))} for {s['model']}: "
              f"{s['reason']}" for s in report["skipped"]]
    return "\n".join(lines)


@quiet_on_broken_pipe(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A size or precision given twice would be measured and reported twice (QA, 2026-11-26): once each.
    args.batch_sizes, args.precision = list(dict.fromkeys(args.batch_sizes)), list(dict.fromkeys(args.precision))
    try:
        return _bench(args)
    except KeyboardInterrupt:  # the report is written atomically at the end: nothing half-written is left
        # "nothing measured" was said after rows had been measured too; what is true either way: no report
        print(f"{PROG}: interrupted; " + ("no report written" if args.out is not None else "no report printed"),
              file=sys.stderr)
        return EXIT_INTERRUPTED


def _bench(args: argparse.Namespace) -> int:
    try:
        if not args.model:
            args.model = [str(default_model_path())]
        args.model = _once_each(args.model)
        for model in args.model:
            if not Path(model).exists():
                return fail(PROG, f"{model}: no such model file or folder", EXIT_USAGE)
            if args.backend == "all":
                backend_for_path(model)  # a path of no known kind is a slip, refused like a missing one
        if args.out is not None:
            check_output_file(args.out, args.model, flag="--out")
        memory_format_choice()  # LANGBRT_MEMORY_FORMAT: a bad value, refused before any model is costed
    except LangBRTError as err:
        return fail(PROG, err, EXIT_USAGE)
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # before the backends load: ONNX Runtime's sessions take it too
    try:
        report = run_bench(args)
    except BackendFailed as err:
        return fail(PROG, err, EXIT_BACKEND_FAILED)
    except LangBRTError as err:
        return fail(PROG, err, EXIT_USAGE)
    not_written = None
    if report["rows"] and args.out is not None:
        try:
            atomic_write_text(args.out, json.dumps(report, indent=2))
        except OutputWriteError as err:  # still printed below: a full disk loses no measurement
            not_written = err
    print_out(json.dumps(report, indent=2) if args.json else format_table(report))
    if not_written is not None:
        return fail(PROG, not_written, EXIT_OUTPUT_NOT_WRITTEN)
    if not report["rows"]:
        written = f"; {args.out} not written" if args.out is not None else ""
        return fail(PROG, f"nothing was measured: every row was skipped (reasons above){written}",
                    EXIT_NOTHING_MEASURED)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
