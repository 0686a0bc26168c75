"""benchmarks/bench_attention.py and its cold-L2 timing (benchmarks/cold_l2.py), checked on CPU: how many
input sets a cold graph cycles through, in which order, which rows each implementation gets and how the
speed-ups read them. The GPU timing itself runs only on a device machine (benchmarks/gpu_session.sh)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed")
# The benchmark scripts import each other as top-level modules; appended, so they never shadow an installed one.
sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench_attention = pytest.importorskip("bench_attention")
cold_l2 = pytest.importorskip("cold_l2")

L2 = 50 * 2**20  # the H100's


@pytest.mark.parametrize("batch", [1, 8, 32, 128])
@pytest.mark.parametrize("element_size", [2, 4])
def test_the_input_sets_touch_four_l2s_with_the_fewest_copies(batch, element_size):
    per_call = bench_attention.bytes_moved(bench_attention.Shape.paper(), batch, element_size)
    sets = cold_l2.input_sets(per_call, L2)
    assert sets * per_call >= 4 * L2
    assert sets == 1 or (sets - 1) * per_call < 4 * L2


def test_the_paper_shape_cycles_more_sets_at_small_batches():
    """fp16: 1.7 MB a call at batch 1, 13 MB at batch 8, 53 MB at batch 32, against 4 x 50 MB."""
    shape = bench_attention.Shape.paper()
    assert [cold_l2.input_sets(bench_attention.bytes_moved(shape, b, 2), L2) for b in (1, 8, 32)] == [125, 16, 4]


def test_the_input_sets_are_capped():
    assert cold_l2.input_sets(1, L2) == cold_l2.MAX_INPUT_SETS
    assert cold_l2.input_sets(1000, L2, max_sets=7) == 7


def test_the_l2_size_is_the_devices_or_50_mb_where_it_reports_none():
    assert cold_l2.l2_cache_bytes(SimpleNamespace(L2_cache_size=60 * 2**20)) == 60 * 2**20
    assert cold_l2.l2_cache_bytes(SimpleNamespace()) == cold_l2.DEFAULT_L2_BYTES == L2
    assert cold_l2.l2_cache_bytes(SimpleNamespace(L2_cache_size=0)) == L2


@pytest.mark.parametrize(("calls_per_graph", "sets", "calls"), [(10, 4, 12), (10, 16, 16), (10, 5, 10), (1, 1, 1),
                                                                 (10, 1, 10), (1, 125, 125)])
def test_a_cold_graph_holds_whole_cycles_of_at_least_the_calls_asked_for(calls_per_graph, sets, calls):
    assert cold_l2.graph_calls(calls_per_graph, sets) == calls


def test_call_i_uses_set_i_modulo_the_sets():
    assert cold_l2.rotation(["a", "b", "c"], 7) == ["a", "b", "c", "a", "b", "c", "a"]


def test_a_rotating_callable_cycles_through_its_argument_sets():
    calls = []
    rotating = cold_l2.Rotating(lambda *args: calls.append(args), [(0, "x"), (1, "y"), (2, "z")])
    for _ in range(5):
        rotating()
    assert calls == [(0, "x"), (1, "y"), (2, "z"), (0, "x"), (1, "y")]


def test_cold_sets_copy_x_and_the_map_features_and_share_the_weights():
    shape = bench_attention.Shape.paper()
    x, mf, params = bench_attention.make_inputs(shape, 8, torch.float16, device="cpu")
    call_args = (x, mf, params, shape.heads, shape.window, shape.shift)
    per_call = bench_attention.bytes_moved(shape, 8, 2)
    sets = bench_attention.cold_input_sets(call_args, per_call, L2)
    assert len(sets) == cold_l2.input_sets(per_call, L2) == 16
    assert sets[0] == call_args
    assert len({s[0].data_ptr() for s in sets}) == len({s[1].data_ptr() for s in sets}) == len(sets)
    for copy in sets[1:]:
        assert torch.equal(copy[0], x) and torch.equal(copy[1], mf)
        assert copy[2] is params and copy[3:] == call_args[3:]


def timing_args(calls_per_graph: int = 10) -> argparse.Namespace:
    return argparse.Namespace(warmup=1, iters=2, calls_per_graph=calls_per_graph)


@pytest.fixture
def recorded_timers(monkeypatch):
    """The GPU timers replaced by recorders of what each was asked to time: row -> (timer, arguments, calls)."""
    asked = []

    def events(fn, fn_args, warmup, iters):
        asked.append(("events", fn_args, None))
        return [1.0]

    def graph(fn, arg_sets, warmup, iters, calls_per_graph=1):
        asked.append(("graph", arg_sets, calls_per_graph))
        return [0.5]

    monkeypatch.setattr(bench_attention, "cuda_event_times_ms", events)
    monkeypatch.setattr(bench_attention, "cuda_graph_times_ms", graph)
    return asked


def test_without_cold_l2_each_implementation_keeps_its_two_rows(recorded_timers):
    call_args = ("x", "mf")
    timings = bench_attention.time_all_ways("eager", print, call_args, [], timing_args())
    assert list(timings) == ["eager", "eager+graph"]
    assert recorded_timers == [("events", call_args, None), ("graph", [call_args], 10)]


def test_the_cold_row_cycles_through_the_sets_in_whole_cycles(recorded_timers):
    cold_sets = [("x0", "mf0"), ("x1", "mf1"), ("x2", "mf2"), ("x3", "mf3")]
    timings = bench_attention.time_all_ways("triton", print, cold_sets[0], cold_sets, timing_args(10))
    assert list(timings) == ["triton", "triton+graph", "triton+graph-cold"]
    assert recorded_timers[2] == ("graph", cold_sets, 12)


def test_the_speed_ups_compare_cold_rows_with_cold_rows(capsys):
    """A "+graph-cold" row was read as "+graph": the cold kernel against the warm baselines, named as the
    warm line."""
    times = {"": (100.0, 400.0, 200.0), "+graph": (10.0, 100.0, 50.0), "+graph-cold": (20.0, 80.0, 40.0)}
    rows = [{"impl": impl + mode, "batch": 8, "dtype": "fp16", "median_ms": ms} for mode, all_ms in times.items()
            for impl, ms in zip(("triton", "eager", "compile"), all_ms, strict=True)]
    bench_attention.print_speedups(rows)
    lines = capsys.readouterr().out.splitlines()
    assert "speed-up of triton+graph-cold at batch 8 fp16: eager: 4.00x, compile: 2.00x" in lines
    assert "speed-up of triton+graph at batch 8 fp16: eager: 10.00x, compile: 5.00x" in lines
    assert len(lines) == 3


def test_cold_l2_is_a_flag_of_the_command(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench_attention, "run", lambda args: seen.append(args.cold_l2) or 0)
    assert bench_attention.main(["--cold-l2"]) == 0 and bench_attention.main([]) == 0
    assert seen == [True, False]
