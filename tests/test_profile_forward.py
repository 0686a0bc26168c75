"""benchmarks/profile_forward.py's --backend-run mode, which runs only on a GPU machine, checked here without
one: the stage ranges `TorchBackend.run` marks reach the table, the table's layout, the flags, and the GPU
to-do list's calls of the script (a device call is too scarce to find a typo in)."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

# The benchmark scripts are top-level modules; appended, so they can never shadow an installed module.
sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))
profile_forward = pytest.importorskip("profile_forward")
from langbrt.runtime.backends.torch_backend import RunStage  # noqa: E402

GPU_SESSION = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_session.sh"


@pytest.fixture(scope="module")
def tiny_backend():
    return profile_forward.random_backend(profile_forward.PRESETS["tiny"](), "cpu", "fp32")


def test_stage_times_has_a_row_for_each_stage_of_run_in_call_order(tiny_backend, one_torch_thread):
    call = profile_forward.end_to_end_call(tiny_backend, batch=2)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    rows = profile_forward.stage_times(prof.events())
    assert [row.name for row in rows] == [profile_forward.CALL_RANGE, *(stage.value for stage in RunStage),
                                          profile_forward.REST_OF_RUN, profile_forward.COPY_BACK_RANGE]
    forward = next(row for row in rows if row.name == RunStage.FORWARD.value)
    assert forward.host_ms > 0
    assert min(row.host_ms for row in rows) >= 0, rows  # the stages nest in the call and never overlap
    assert {row.device_ms for row in rows} == {0.0}  # no CUDA activity recorded


def test_the_backend_run_report_gives_latency_stages_and_the_host_operator_table(tiny_backend, one_torch_thread):
    report = profile_forward.backend_run_report(tiny_backend, "tiny", batch=1, warmup=1, iters=2, rows=5)
    header = report.splitlines()[0]
    assert header.startswith("# CPU, torch ") and "tiny preset, fp32, batch 1" in header
    assert re.search(r"p50 \d+\.\d\d ms, p90 \d+\.\d\d ms over 2 calls", header), header
    for stage in RunStage:
        assert f"  {stage.value} " in report
    assert "operators by host time:" in report
    assert "operators by device time:" not in report  # only with CUDA activity


def test_the_stage_table_puts_the_call_first_and_indents_its_stages():
    rows = [profile_forward.StageTime(profile_forward.CALL_RANGE, 26.5, 12.25),
            profile_forward.StageTime(RunStage.TO_DEVICE.value, 3.125, 1.5)]
    lines = profile_forward.format_stage_table(rows).splitlines()
    assert lines[0].split()[:5] == ["stage", "host", "ms", "device", "ms"]
    assert lines[1].startswith(profile_forward.CALL_RANGE) and " 26.50 " in lines[1] and " 12.25 " in lines[1]
    assert lines[2].startswith(f"  {RunStage.TO_DEVICE.value}") and " 3.12 " in lines[2] and " 1.50 " in lines[2]


@pytest.mark.parametrize("other", ["--compile", "--channels-last"])
def test_backend_run_refuses_the_forward_only_variants(other, capsys):
    with pytest.raises(SystemExit) as exit_info:
        profile_forward.parse_args(["--backend-run", other])
    assert exit_info.value.code == 2
    assert "--backend-run" in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize("flag", ["--batch", "--warmup", "--iters", "--rows"])
def test_a_count_under_one_is_a_usage_line_not_a_traceback(flag, capsys):
    """--iters 0 or --batch 0 ended in an IndexError traceback after the model was built."""
    with pytest.raises(SystemExit) as exit_info:
        profile_forward.parse_args([flag, "0"])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_without_cuda_the_script_exits_2_with_one_line(capsys):
    assert profile_forward.main(["--backend-run", "--preset", "tiny"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def profile_forward_calls() -> list[list[str]]:
    """The argument lists gpu_session.sh passes to profile_forward.py (continued lines joined), one per value
    of `$batch` where a call sits in the script's `for batch in ...` loop."""
    script = GPU_SESSION.read_text().replace("\\\n", " ")
    loop = re.search(r"for batch in ([\d ]+); do", script)
    batches = loop.group(1).split() if loop else []
    calls = []
    for arguments in re.findall(r"benchmarks/profile_forward\.py([^|\n]*?)2>&1", script):
        values = batches if '"$batch"' in arguments else [""]
        calls += [shlex.split(arguments.replace('"$batch"', value)) for value in values]
    return calls


def test_gpu_session_calls_of_profile_forward_parse():
    calls = profile_forward_calls()
    assert calls
    for arguments in calls:
        profile_forward.parse_args(arguments)


def test_gpu_session_profiles_the_backend_run_at_batch_32_and_8():
    batches = {int(args[args.index("--batch") + 1]) for args in profile_forward_calls() if "--backend-run" in args}
    assert batches == {8, 32}
