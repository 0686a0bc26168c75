"""`langbrt-serve` as a subprocess with a stand-in model that holds each request until the test lets it go.

    python tests/gated_serve.py GATE_FILE [langbrt-serve flags...]

The real CLI (flags, socket, uvicorn, signal handling, exit status) runs unchanged; only the model is a
stand-in, so a test can keep a request in flight for as long as it needs without timing anything: the model
prints `request entered the model` when a request's image reaches it and returns once GATE_FILE exists.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from langbrt.console import run_command
from langbrt.runtime import RetouchResult, cli_serve, serve_app

ENTERED = "request entered the model"
_WARMUP_SIZE = 64  # serve_state's dummy image: not a request


class GatedRetoucher:
    """Returns the image unchanged; a request's batch waits in `retouch` until the gate file exists."""

    prompts = ["acne on the cheeks"]
    device = "cpu"

    def __init__(self, gate: Path) -> None:
        self.gate = gate

    def retouch(self, images: list[torch.Tensor], prompts: list[list[str]] | None = None) -> list[Any]:
        if images[0].shape[-1] != _WARMUP_SIZE:
            print(ENTERED, flush=True)
            while not self.gate.exists():
                time.sleep(0.05)
        blanks = [torch.zeros(1, *img.shape[1:]) for img in images]  # (1, H, W): nothing changed
        return [RetouchResult(image=img, mask=blank, maps=blank, prompts=self.prompts)
                for img, blank in zip(images, blanks, strict=True)]


def main() -> int:
    gate = Path(sys.argv[1])
    serve_app.default_loader = lambda config: lambda: GatedRetoucher(gate)  # type: ignore[assignment]
    return run_command(lambda: cli_serve.main(sys.argv[2:]))


if __name__ == "__main__":
    sys.exit(main())
