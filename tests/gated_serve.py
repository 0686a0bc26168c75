"""`langbrt-serve` as a subprocess with a stand-in model that holds each request until the test lets it go.

    python tests/gated_serve.py GATE_FILE [--hold-reply] [langbrt-serve flags...]

The real CLI (flags, socket, uvicorn, signal handling, exit status) runs unchanged; only the model is a
stand-in, so a test can keep a request in flight for as long as it needs without timing anything: the model
prints `request entered the model` when a request's image reaches it and returns once GATE_FILE exists.
With --hold-reply the model returns at once and the request waits while its reply is encoded instead
(`request is encoding its reply`): past the batcher, whose --timeout-s answers 504, so only the server's
graceful-shutdown time limit ends it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from langbrt.console import run_command
from langbrt.runtime import RetouchResult, cli_serve, serve_app

ENTERED = "request entered the model"
REPLYING = "request is encoding its reply"
_WARMUP_SIZE = 64  # serve_state's dummy image: not a request


class GatedRetoucher:
    """Returns the image unchanged; a request's batch waits in `retouch` until the gate file exists (with no
    gate: at once)."""

    prompts = ["acne on the cheeks"]
    device = "cpu"

    def __init__(self, gate: Path | None) -> None:
        self.gate = gate

    def retouch(self, images: list[torch.Tensor], prompts: list[list[str]] | None = None) -> list[Any]:
        if images[0].shape[-1] != _WARMUP_SIZE and self.gate is not None:
            print(ENTERED, flush=True)
            _wait_for(self.gate)
        blanks = [torch.zeros(1, *img.shape[1:]) for img in images]  # (1, H, W): nothing changed
        return [RetouchResult(image=img, mask=blank, maps=blank, prompts=self.prompts)
                for img, blank in zip(images, blanks, strict=True)]


def held(gate: Path, render: Callable[..., Any]) -> Callable[..., Any]:
    """`serve_app.render_response`, waiting for the gate file first."""
    def render_once_open(*args: Any) -> Any:
        print(REPLYING, flush=True)
        _wait_for(gate)
        return render(*args)

    return render_once_open


def _wait_for(gate: Path) -> None:
    while not gate.exists():
        time.sleep(0.05)


def main() -> int:
    gate, flags = Path(sys.argv[1]), sys.argv[2:]
    if flags[:1] == ["--hold-reply"]:
        flags = flags[1:]
        serve_app.render_response = held(gate, serve_app.render_response)  # type: ignore[assignment]
        gate_of_the_model = None
    else:
        gate_of_the_model = gate
    serve_app.default_loader = lambda config: lambda: GatedRetoucher(gate_of_the_model)  # type: ignore[assignment]
    return run_command(lambda: cli_serve.main(flags))


if __name__ == "__main__":
    sys.exit(main())
