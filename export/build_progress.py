"""Progress bars for a TensorRT engine build, and a Ctrl-C that cancels the build instead of waiting it out.

A build spends minutes in tactic search and prints nothing. TensorRT >= 10 reports its phases (each may name a
parent phase) and their steps to an `IProgressMonitor`; `BuildProgress` draws one tqdm bar per open phase on
stderr, a nested phase indented below its parent. Top-level bars stay on screen when their phase ends, nested
ones vanish. As with langbrt-infer's bar, nothing is drawn unless stderr is a terminal (tqdm's `disable=None`),
so a log file or CI gets nothing more, and stdout (where `--json` prints its object) is never touched.

Ctrl-C: the build runs in C++, and Python handles a signal only when it next runs Python code, which during a
build is one of these callbacks. A KeyboardInterrupt raised there cannot be caught by the callback itself
(CPython raises a pending signal's exception on entry to the function, before its `try` runs: measured with
a C-called callback on 3.11, none of ~3000 were caught) and would cross into TensorRT. So for the build,
a signal that would raise KeyboardInterrupt (SIGINT; SIGTERM under the console scripts, `langbrt/console.py`)
only sets `BuildProgress.cancelled`; the next `step_complete` returns False, which makes TensorRT stop and
return no engine, and the KeyboardInterrupt is raised once the build call has returned, before anything is
written. Signals are Python's to handle in the main thread only: a build started from another thread, or one
whose callbacks all come from TensorRT's own threads while the main thread waits in C++, sees Ctrl-C only when
TensorRT returns.

A TensorRT without `IProgressMonitor` (older than the 10.x `require_tensorrt` asks for, so only a caller that
skips that check meets one) builds as before: no bars, and Ctrl-C is seen when the build returns.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from tqdm import tqdm

BarFactory = Callable[..., Any]  # called like tqdm(desc=..., total=..., ...); returns an object with n, update, close
INDENT = "  "  # per nesting level, before a phase's name


class BuildProgress:
    """The three IProgressMonitor callbacks, drawn as bars; `cancelled` makes `step_complete` stop the build.

    TensorRT may call from several of its threads, so every change to the open bars holds one lock.
    """

    def __init__(self, bar_factory: BarFactory = tqdm) -> None:
        self._bar_factory = bar_factory
        self._bars: dict[str, Any] = {}  # open phases by name (unique among open phases), in opening order
        self._depth: dict[str, int] = {}
        self._lock = threading.Lock()
        self.cancelled = False

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        with self._lock:
            depth = self._depth.get(parent_phase, -1) + 1  # 0 at the top level (no parent, or one not seen)
            self._depth[phase_name] = depth
            self._bars[phase_name] = self._bar_factory(
                desc=INDENT * depth + phase_name, total=num_steps, unit="step", leave=depth == 0,
                file=sys.stderr, disable=None, dynamic_ncols=True)

    def step_complete(self, phase_name: str, step: int) -> bool:
        """Step `step` (0-based) of the phase is done; False asks TensorRT to cancel the build."""
        with self._lock:
            bar = self._bars.get(phase_name)
            if bar is not None and not self.cancelled:
                bar.update(step + 1 - bar.n)
        return not self.cancelled

    def phase_finish(self, phase_name: str) -> None:
        with self._lock:
            self._depth.pop(phase_name, None)
            bar = self._bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    def close(self) -> None:
        """Close the bars of phases TensorRT left open (a failed build), innermost first."""
        with self._lock:
            for bar in reversed(self._bars.values()):
                bar.close()
            self._bars.clear()
            self._depth.clear()

    def cancel(self, signum: int, frame: object) -> None:
        """A signal handler: stop the build at TensorRT's next step (see the module docstring)."""
        self.cancelled = True


@contextlib.contextmanager
def _deferred_interrupts(handler: Callable[[int, object], None]) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM call `handler` instead of raising KeyboardInterrupt.

    Only signals whose handler is `signal.default_int_handler` change (an ignored SIGINT stays ignored, a
    default SIGTERM still ends the process), and only in the main thread, the one Python delivers them to.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    replaced = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is signal.default_int_handler]
    for signum in replaced:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum in replaced:
            signal.signal(signum, signal.default_int_handler)


def _monitor_class(trt: Any) -> type | None:
    """A subclass of this TensorRT's `IProgressMonitor` that hands each call to a `BuildProgress`; None without."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Monitor(base):
        def __init__(self, progress: BuildProgress) -> None:
            super().__init__()  # pybind11: the C++ object TensorRT calls must be constructed explicitly
            self.progress = progress

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return self.progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            self.progress.phase_finish(phase_name)

    return Monitor


@contextlib.contextmanager
def build_progress(config: Any, trt: Any) -> Iterator[BuildProgress]:
    """Show the progress of the build run in the block (`builder.build_serialized_network(network, config)`).

    Sets `config.progress_monitor`, and keeps the monitor alive for the block: TensorRT requires it to outlive
    the build. Raises KeyboardInterrupt after the block when Ctrl-C cancelled the build, whatever it returned.
    """
    progress = BuildProgress()
    monitor_class = _monitor_class(trt)
    if monitor_class is None:  # nothing can cancel the build early: Ctrl-C works as it did before
        yield progress
        return
    monitor = monitor_class(progress)
    config.progress_monitor = monitor
    try:
        with _deferred_interrupts(progress.cancel):
            yield progress
    finally:
        progress.close()
    if progress.cancelled:
        raise KeyboardInterrupt
