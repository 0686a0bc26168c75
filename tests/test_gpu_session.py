"""benchmarks/gpu_session.sh, read without a GPU: what its steps would write and set (device time is scarce,
so a mistake found on the machine costs a call)."""

from __future__ import annotations

import re
from pathlib import Path

from langbrt.runtime.backends.memory_format import MEMORY_FORMAT_ENV_VAR, MemoryFormat

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_session.sh"
RETURNED_FILES = 8  # what a device call brings back from $OUT


def _step(name: str) -> str:
    """The body of `if want NAME; then ... fi`, continuation lines joined."""
    script = SCRIPT.read_text().replace("\\\n", " ")
    return re.search(rf"^if want {name}; then\n(.*?)^fi$", script, flags=re.MULTILINE | re.DOTALL).group(1)


def _header_calls() -> list[list[str]]:
    """The steps of each device call the script's header tells a session to make."""
    calls = re.findall(r'run\(command="bash benchmarks/gpu_session\.sh ([a-z0-9 ]+)"', SCRIPT.read_text())
    return [call.split() for call in calls]


def test_each_call_the_header_names_writes_no_more_files_than_a_call_returns():
    """A ninth file under $OUT would not come back: the header's calls split the steps so none writes more
    (e2e alone writes 7 and the log since it profiles the backend's call and benches channels_last)."""
    calls = _header_calls()
    assert ["e2e"] in calls and any("compile" in call for call in calls)
    for steps in calls:
        written = set(re.findall(r'"\$out/[^"]+"', "".join(_step(step) for step in steps)))  # ncu appends to one
        assert len(written) + 1 <= RETURNED_FILES, (steps, written)  # + gpu-session.log
    e2e_outputs = re.findall(r'"\$out/[^"]+"', _step("e2e"))
    assert len(set(e2e_outputs)) == len(e2e_outputs), e2e_outputs  # each run its own name: none overwritten


def test_e2e_benches_the_torch_backend_in_channels_last_under_its_own_name():
    runs = [line for line in _step("e2e").splitlines() if "cli_bench" in line]
    layouts = [re.search(rf"{MEMORY_FORMAT_ENV_VAR}=(\S+)", line) for line in runs]
    chosen = [MemoryFormat(m.group(1)) for m in layouts if m]  # a misspelt value: ValueError here, not exit 2 there
    assert chosen == [MemoryFormat.CHANNELS_LAST]
    [run] = [line for line, m in zip(runs, layouts, strict=True) if m]
    assert "--precision fp16" in run and "--batch-sizes 1 8 32" in run and "channels-last" in run
