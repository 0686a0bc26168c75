"""Progress bars and Ctrl-C during a TensorRT build (`export/build_progress.py`), with TensorRT faked
(`fake_tensorrt.py`): no session so far had TensorRT, so what is checked is the contract in its docs."""

import signal

import pytest
from fake_tensorrt import ENGINE, Terminal, fake_tensorrt, install

from langbrt.export.build_progress import BuildProgress
from langbrt.export.tensorrt_export import build_engine, sidecar_path


class RecordedBar:
    """Stands in for tqdm: keeps what a bar was made with and where it got to."""

    def __init__(self, **kwargs: object) -> None:
        self.kwargs = kwargs
        self.n = 0
        self.closed = False

    def update(self, steps: int) -> None:
        self.n += steps

    def close(self) -> None:
        self.closed = True


@pytest.fixture()
def bars() -> list[RecordedBar]:
    return []


@pytest.fixture()
def progress(bars) -> BuildProgress:
    def factory(**kwargs: object) -> RecordedBar:
        bars.append(RecordedBar(**kwargs))
        return bars[-1]

    return BuildProgress(factory)


# ------------------------------------------------------------------------------------------ the bars


def test_each_phase_gets_a_bar_that_counts_its_steps(progress, bars):
    progress.phase_start("Building engine", None, 2)
    progress.phase_start("Tactic search", "Building engine", 3)
    for step in range(3):
        progress.step_complete("Tactic search", step)
    progress.step_complete("Building engine", 0)
    assert [(b.kwargs["total"], b.n) for b in bars] == [(2, 1), (3, 3)]


def test_a_nested_phase_is_indented_below_its_parent_and_vanishes_when_done(progress, bars):
    progress.phase_start("Building engine", None, 1)
    progress.phase_start("Tactic search", "Building engine", 1)
    progress.phase_start("Kernel timing", "Tactic search", 1)
    progress.phase_finish("Kernel timing")
    assert [b.kwargs["desc"] for b in bars] == ["Building engine", "  Tactic search", "    Kernel timing"]
    assert [b.kwargs["leave"] for b in bars] == [True, False, False]
    assert [b.closed for b in bars] == [False, False, True]


def test_close_ends_the_bars_of_phases_tensorrt_left_open(progress, bars):
    progress.phase_start("Building engine", None, 1)
    progress.phase_start("Tactic search", "Building engine", 1)
    progress.close()
    assert all(b.closed for b in bars)


def test_bars_go_to_stderr_and_only_to_a_terminal(monkeypatch, capsys):
    """Like langbrt-infer's bar: tqdm's disable=None, so a piped or --json run prints nothing more."""
    progress = BuildProgress()
    progress.phase_start("Building engine", None, 1)
    progress.step_complete("Building engine", 0)
    progress.phase_finish("Building engine")
    assert capsys.readouterr() == ("", "")
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    progress.phase_start("Building engine", None, 1)
    progress.step_complete("Building engine", 0)
    progress.phase_finish("Building engine")
    assert "Building engine" in terminal.getvalue() and "1/1" in terminal.getvalue()
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------------------------------ cancelling


def test_once_cancelled_the_next_step_asks_tensorrt_to_stop(progress, bars):
    progress.phase_start("Tactic search", None, 3)
    assert progress.step_complete("Tactic search", 0) is True
    progress.cancel(signal.SIGINT, None)
    assert progress.step_complete("Tactic search", 1) is False
    assert bars[0].n == 1  # the bar shows where the build stopped


# ------------------------------------------------------------------------------------------ in a build


def test_a_build_draws_tensorrts_phases_and_writes_the_engine(monkeypatch, tmp_path):
    trt = fake_tensorrt()
    install(monkeypatch, trt)
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", fp16=False)
    drawn = terminal.getvalue()  # tqdm redraws at most every 0.1 s: a bar's first and last states show
    assert all(f"{name}:" in drawn for name in ("Building engine", "  Graph optimization", "  Tactic search"))
    assert "Building engine: 100%" in drawn.splitlines()[-1]  # the top-level bar stays, complete
    assert (tmp_path / "m.plan").read_bytes() == ENGINE
    assert all(returned is not False for _, _, returned in trt.calls)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_during_a_build_cancels_it_at_the_next_step_and_writes_nothing(monkeypatch, tmp_path, signum):
    """The signal lands while TensorRT runs (here: just before a step completes); TensorRT is told to stop at
    that step, and KeyboardInterrupt comes after the build call returned. SIGTERM raises KeyboardInterrupt
    under the console scripts (langbrt/console.py), so it cancels too."""
    def ctrl_c(phase: str, step: int) -> None:
        if (phase, step) == ("Tactic search", 1):
            signal.raise_signal(signum)

    trt = fake_tensorrt(before_step=ctrl_c)
    install(monkeypatch, trt)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as langbrt/console.py sets it
    try:
        with pytest.raises(KeyboardInterrupt):
            build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", fp16=False)
        assert signal.getsignal(signum) is signal.default_int_handler  # the build's handler is gone again
    finally:
        signal.signal(signal.SIGTERM, previous)
    steps = [(args, returned) for method, args, returned in trt.calls if method == "step_complete"]
    assert steps[-1] == (("Tactic search", 1), False)  # no step after the one that stopped the build
    finished = [args[0] for method, args, _ in trt.calls if method == "phase_finish"]
    assert finished == ["Graph optimization", "Tactic search", "Building engine"]
    assert list(tmp_path.iterdir()) == []  # no engine, no sidecar, no temporary file


def test_a_tensorrt_without_a_progress_monitor_still_builds(monkeypatch, tmp_path):
    trt = fake_tensorrt(progress_monitor=False)
    install(monkeypatch, trt)
    build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", fp16=False)
    assert (tmp_path / "m.plan").read_bytes() == ENGINE and sidecar_path(tmp_path / "m.plan").is_file()
    assert trt.calls == []
