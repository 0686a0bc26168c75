"""Peak memory per pixel of one server request: decode, retouch (letterbox, model, paste-back), encode.

    python benchmarks/serve_memory.py                        # 16 MP JPEG, the bundled model
    python benchmarks/serve_memory.py --megapixels 48 --format PNG --model runs/langbrt/final

`langbrt-serve --max-inflight-pixels` turns this number into a memory budget: every admitted request holds
its pixels until its reply is encoded. Linux only: each step's peak comes from VmHWM in /proc/self/status,
reset before the step through /proc/self/clear_refs. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from PIL import Image

from langbrt.io import encode_image, load_image_bytes
from langbrt.runtime import Retoucher

T = TypeVar("T")
_STATUS = Path("/proc/self/status")


def _kib(field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+) kB", _STATUS.read_text())
    assert match, f"no {field} in {_STATUS}"
    return int(match.group(1))


def _peak_over(step: Callable[[], T]) -> tuple[T, int, int]:
    """Run `step`; return its result, its peak RSS over the RSS before it, and what it still holds (bytes)."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _kib("VmRSS")
    result = step()
    return result, (_kib("VmHWM") - before) * 1024, (_kib("VmRSS") - before) * 1024


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint folder, .onnx or engine (default: the bundled model)")
    p.add_argument("--megapixels", type=float, default=16.0, help="size of the square test image")
    p.add_argument("--format", choices=("JPEG", "PNG", "WEBP"), default="JPEG")
    args = p.parse_args(argv)

    retoucher = Retoucher.load(args.model)
    side = round((args.megapixels * 1e6) ** 0.5)
    pixels = side * side
    warm = io.BytesIO()
    Image.new("RGB", (64, 64)).save(warm, format="PNG")
    retoucher.retouch([load_image_bytes(warm.getvalue()).rgb])  # allocator and model warm-up, not measured
    upload = io.BytesIO()
    Image.new("RGB", (side, side), (180, 140, 120)).save(upload, format=args.format)
    data = upload.getvalue()

    loaded, decode_peak, decode_held = _peak_over(lambda: load_image_bytes(data))
    result, retouch_peak, retouch_held = _peak_over(lambda: retoucher.retouch([loaded.rgb])[0])
    _, encode_peak, _ = _peak_over(lambda: encode_image(result.image, args.format, None, fast=True))
    # A server request holds the decoded image while it is retouched, and both while the reply is encoded.
    request_peak = max(decode_peak, decode_held + retouch_peak, decode_held + retouch_held + encode_peak)
    report = {
        "model": args.model or "bundled",
        "format": args.format,
        "upload_bytes": len(data),
        "pixels": pixels,
        "prompts": len(result.prompts),
        "bytes_per_pixel": {
            "decode_peak": decode_peak / pixels,
            "retouch_peak": retouch_peak / pixels,
            "encode_peak": encode_peak / pixels,
            "request_peak": request_peak / pixels,
        },
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
