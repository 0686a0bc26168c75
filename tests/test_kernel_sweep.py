"""benchmarks/kernel_sweep.py's parent side, which runs only on a GPU machine, checked here without one:
which variants it sweeps and that a sweep cut short still leaves its results (GPU time is scarce)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed")
# The benchmark scripts import each other as top-level modules (kernel_sweep -> bench_attention); appended,
# so they can never shadow an installed module.
sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))
kernel_sweep = pytest.importorskip("kernel_sweep")
tca_choices = pytest.importorskip("langbrt.kernels.tca_choices")
tca_launch_configs = pytest.importorskip("langbrt.kernels.tca_launch_configs")
KernelChoice = tca_choices.KernelChoice


def test_the_sweep_covers_every_autotuned_config_and_marks_the_candidates():
    variants = kernel_sweep.variants()
    assert len(set(variants)) == len(variants)
    for kernel, configs in tca_launch_configs.LAUNCH_CONFIGS.items():
        for config in configs:
            dtypes = ("fp32",) if config.num_warps >= 8 else ("fp16", "bf16")
            for dtype in dtypes:
                for mma in tca_choices.MMA_PATHS[kernel] if dtype != "fp32" else (tca_choices.MmaChoice.MMA,):
                    variant = kernel_sweep.Variant.of(kernel.value, mma.value, dtype, config)
                    assert variant in variants, (config, dtype, mma)
    assert not [v for v in variants if v.kernel == "direct" and v.mma == "wgmma"]  # refused: it builds wrong
    candidates = [v for v in variants if not kernel_sweep.autotuned(v)]
    assert {v.launch_config() for v in candidates} == {
        c for configs in kernel_sweep.CANDIDATE_CONFIGS.values() for c in configs}
    assert {v.mma for v in candidates} == {"mma", "wgmma"}


def test_a_sweep_can_be_narrowed_to_some_kernels_and_dtypes():
    """--kernels / --dtypes: a device call has 10 minutes; the narrowed sweep keeps every variant it names."""
    narrowed = kernel_sweep.variants(("folded",), ("fp16",))
    assert narrowed == [v for v in kernel_sweep.variants() if v.kernel == "folded" and v.dtype == "fp16"]
    assert narrowed and any(not kernel_sweep.autotuned(v) for v in narrowed)


def test_each_report_holds_every_variant_and_the_timings_so_far(monkeypatch):
    todo = kernel_sweep.variants()[:3]
    sigmoids = set()

    def fake_child(variant, batches, time_it, sigmoid, cold_l2=False):
        sigmoids.add(sigmoid)
        status = "wrong" if variant is todo[1] else "ok"
        return kernel_sweep.Outcome(variant, status, 0.0, 1.0, {b: 10.0 for b in batches} if time_it else None)

    monkeypatch.setattr(kernel_sweep, "run_child", fake_child)
    reports = []
    outcomes = kernel_sweep.sweep(todo, [8, 32], jobs=2, report=lambda rows: reports.append(list(rows)),
                                  sigmoid="tanh")
    assert sigmoids == {"tanh"}
    assert [o.variant for o in outcomes] == todo
    assert len(reports) == 1 + len(todo)  # after the checks, then after each variant's timing
    for report in reports:
        assert [o.variant for o in report] == todo
    timed = [[o.median_us is not None for o in report] for report in reports]
    assert timed == [[False, False, False], [True, False, False], [True, False, False], [True, False, True]]


def test_main_rewrites_the_json_after_each_step(monkeypatch, tmp_path):
    """The parent process's JSON: every variant in every rewrite, timed ones with their medians."""
    todo = kernel_sweep.variants()[:2]
    monkeypatch.setattr(kernel_sweep, "variants", lambda *narrowed: todo)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    out = tmp_path / "sweep.json"
    seen = []

    def fake_child(variant, batches, time_it, sigmoid, cold_l2=False):
        if out.exists():
            seen.append(json.loads(out.read_text()))
        return kernel_sweep.Outcome(variant, "ok", 0.0, 1.0, {b: 10.0 for b in batches} if time_it else None)

    monkeypatch.setattr(kernel_sweep, "run_child", fake_child)
    assert kernel_sweep.main(["--batch", "8", "--jobs", "1", "--out", str(out)]) == 0
    assert [[row["median_us"] for row in report["rows"]] for report in seen] == [[None, None], [{"8": 10.0}, None]]
    final = json.loads(out.read_text())
    assert final["card"] == "Test GPU" and [row["median_us"] for row in final["rows"]] == [{"8": 10.0}] * 2
    assert final["sigmoid"] == "auto"  # the model's default form, recorded with the timings
    assert all(row["autotuned"] for row in final["rows"])
    assert [(f["dtype"], f["batch"], f["median_us"]) for f in final["fastest"]] == [("fp16", 8, 10.0)]


def test_child_arguments_round_trip_for_every_variant():
    for variant in kernel_sweep.variants():
        args = variant.child_args()
        assert len(args) == len(kernel_sweep.CHILD_FIELDS)
        assert kernel_sweep.Variant.from_child_args(args) == variant


def test_gpu_session_profiles_variants_the_child_accepts():
    """gpu_session.sh's ncu step calls the child by hand: its argument lists must still parse."""
    script = (Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_session.sh").read_text()
    script = script.replace("\\\n", " ")  # a loop continued over several lines is one command
    loop = next(line for line in script.splitlines() if "for variant in" in line)
    profiled = [kernel_sweep.Variant.from_child_args(args.split()) for args in loop.split('"')[1::2]]
    detailed = next(line for line in script.splitlines() if line.strip().startswith("default="))
    profiled.append(kernel_sweep.Variant.from_child_args(detailed.split('"')[1].split()))
    assert kernel_sweep.autotuned(profiled[-1])  # the detailed profile is of a launch the autotuner may pick
    assert {v.kernel for v in profiled} == {"direct", "folded"}
    folded_default = tca_choices.DEFAULT_MMA[tca_choices.KernelChoice.FOLDED].value
    assert any(v.kernel == "folded" and v.mma == folded_default for v in profiled)


def test_gpu_session_gives_each_ncu_option_once_per_call():
    """ncu refuses an option given twice ("option '--metrics' cannot be specified more than once"): the fifth
    H100 session lost the stall-reason profile that way. --section and -k may repeat; the others may not."""
    script = (Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_session.sh").read_text()
    calls = [line for line in script.replace("\\\n", " ").splitlines() if '"$ncu"' in line]
    assert len(calls) >= 3
    for call in calls:
        options = [word for word in call.split() if word.startswith("--")]
        repeated = {o for o in options if options.count(o) > 1} - {"--section"}
        assert not repeated, call


def test_the_fastest_correct_variant_per_dtype_and_batch_against_the_roofline():
    fp16 = [v for v in kernel_sweep.variants() if v.dtype == "fp16"][:3]
    outcomes = [
        kernel_sweep.Outcome(fp16[0], "ok", 0.0, 1.0, {8: 12.0, 32: 40.0}),
        kernel_sweep.Outcome(fp16[1], "wrong", 9.0, 1.0, {8: 1.0, 32: 1.0}),  # faster, but wrong: never best
        kernel_sweep.Outcome(fp16[2], "ok", 0.0, 1.0, {8: 14.0, 32: 31.0}),
    ]
    best = kernel_sweep.best_variants(outcomes, [8, 32], "NVIDIA H100 80GB HBM3")
    assert [(b.batch, b.variant) for b in best] == [(8, fp16[0]), (32, fp16[2])]
    shape = kernel_sweep.Shape.paper()
    expected = kernel_sweep.bytes_moved(shape, 32, 2) / 31e-6
    assert best[1].gb_per_s == pytest.approx(expected / 1e9)
    assert best[1].fraction_peak_bandwidth == pytest.approx(expected / 3.35e12)
    unknown = kernel_sweep.best_variants(outcomes, [8], "Some Other GPU")
    assert unknown[0].fraction_peak_bandwidth is None


def test_the_child_computes_the_sigmoid_form_the_sweep_was_asked_for(monkeypatch):
    """run_child hands --sigmoid to the child process, whose timings are of that form."""
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        result = {"status": "ok", "max_error": 0.0, "bound": 1.0, "mma_instructions": None}
        return type("Done", (), {"returncode": 0, "stdout": kernel_sweep.RESULT_PREFIX + json.dumps(result),
                                 "stderr": ""})()

    monkeypatch.setattr(kernel_sweep.subprocess, "run", fake_run)
    variant = kernel_sweep.variants(("folded",), ("fp16",))[0]
    assert kernel_sweep.run_child(variant, [8], False, "tanh").status == "ok"
    assert commands[0][commands[0].index("--sigmoid") + 1] == "tanh"
    args = commands[0][commands[0].index("--child") + 1:][:len(kernel_sweep.CHILD_FIELDS)]
    assert kernel_sweep.Variant.from_child_args(args) == variant


@pytest.mark.parametrize("size", [pytest.param(None, id="paper-whole-windows"), pytest.param(60, id="padded")])
def test_the_child_counts_mmas_in_the_build_it_launches(monkeypatch, size):
    """The child's PTX line is read as the launched build's: its AOT spec must give the constexprs `_launch`
    passes at the same shape (not TCAKernelSpec's default padded build, TensorRT's), but PTX_MATH (a CUDA
    build's inline PTX sigmoid, off in this interpreter run)."""
    from langbrt.kernels import tca_triton

    launches = []

    class Recorder:
        """Stands in for a jit kernel: `kernel[grid](*args, **kwargs)` records the keyword arguments."""

        def __getitem__(self, grid):
            return lambda *args, **kwargs: launches.append(kwargs)

    monkeypatch.setattr(tca_triton, "_autotuned_kernel", lambda *args: None)  # a config is launched as given
    for kernel in KernelChoice:
        monkeypatch.setitem(tca_triton._JIT_KERNELS, kernel, Recorder())
    shape = kernel_sweep.Shape.paper()
    if size is not None:
        shape = dataclasses.replace(shape, height=size, width=size)
    for variant in kernel_sweep.variants(("direct", "folded"), ("fp16",))[::3]:
        monkeypatch.setenv(tca_choices.KERNEL_ENV_VAR, variant.kernel)
        x, mf, params = kernel_sweep.make_inputs(shape, 1, torch.float16, device="cpu")
        tca_triton._launch(x, mf, *params.tensors(), shape.heads, shape.window, shape.shift, True,
                           config=variant.launch_config())
        spec = kernel_sweep.child_spec(variant, shape, fast_sigmoid=True)
        built = tca_triton.kernel_constants(spec.channels, spec.map_channels, spec.num_heads, spec.window_size,
                                            spec.shift, low_precision_dot=True, fast_sigmoid=spec.fast_sigmoid,
                                            padded=spec.padded, kernel=spec.kernel)
        built = {k: v for k, v in built.items() if k != "PTX_MATH"} | spec.launch_config().kernel_arguments()
        launched = launches[-1]
        assert {k: v for k, v in launched.items() if k in built} == built, variant
        assert (spec.mma_path.value, spec.num_warps, spec.maxnreg) == (variant.mma, launched["num_warps"],
                                                                      launched["maxnreg"])


def test_cold_l2_reaches_the_timing_children_only(monkeypatch):
    """The checks run in parallel and time nothing: only the one-at-a-time timing pass times cold inputs."""
    todo = kernel_sweep.variants()[:2]
    calls = []

    def fake_child(variant, batches, time_it, sigmoid, cold_l2=False):
        calls.append((time_it, cold_l2))
        timed = {b: 10.0 for b in batches} if time_it else None
        return kernel_sweep.Outcome(variant, "ok", 0.0, 1.0, timed, cold_median_us=timed and {8: 12.0})

    monkeypatch.setattr(kernel_sweep, "run_child", fake_child)
    outcomes = kernel_sweep.sweep(todo, [8], jobs=1, report=lambda rows: None, sigmoid="auto", cold_l2=True)
    assert sorted(calls) == [(False, False)] * 2 + [(True, True)] * 2
    assert [o.cold_median_us for o in outcomes] == [{8: 12.0}] * 2


@pytest.mark.parametrize(("time_it", "cold_l2", "passed"), [(True, True, True), (True, False, False),
                                                             (False, True, False)])
def test_the_child_is_asked_for_cold_timings_and_its_answer_read(monkeypatch, time_it, cold_l2, passed):
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        result = {"status": "ok", "max_error": 0.0, "bound": 1.0, "mma_instructions": None,
                  "median_us": {"8": 9.0}, "cold_median_us": {"8": 11.0}, "input_sets": {"8": 16}}
        return type("Done", (), {"returncode": 0, "stdout": kernel_sweep.RESULT_PREFIX + json.dumps(result),
                                 "stderr": ""})()

    monkeypatch.setattr(kernel_sweep.subprocess, "run", fake_run)
    variant = kernel_sweep.variants(("folded",), ("fp16",))[0]
    outcome = kernel_sweep.run_child(variant, [8], time_it, "auto", cold_l2)
    assert ("--cold-l2" in commands[0]) == passed
    assert (outcome.median_us, outcome.cold_median_us, outcome.input_sets) == ({8: 9.0}, {8: 11.0}, {8: 16})


def test_the_child_process_parses_cold_l2_after_its_variant(monkeypatch, capsys):
    """`--child KERNEL ... OUTPUT_AFTER_HEADS` keeps its positional list; --cold-l2 is one more option."""
    variant = kernel_sweep.variants(("folded",), ("fp16",))[0]
    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(kernel_sweep, "child", lambda *args: seen.append(args) or {"status": "ok"})
    argv = ["--child", *variant.child_args(), "--batch", "8", "32", "--time"]
    assert kernel_sweep.main([*argv, "--cold-l2"]) == 0 and kernel_sweep.main(argv) == 0
    assert seen == [(variant, [8, 32], True, True), (variant, [8, 32], True, False)]
    assert capsys.readouterr().out.startswith(kernel_sweep.RESULT_PREFIX)


def test_the_table_has_a_cold_column_per_batch(capsys):
    variant = kernel_sweep.variants(("folded",), ("fp16",))[0]
    outcome = kernel_sweep.Outcome(variant, "ok", 0.0, 1.0, {8: 9.25, 32: 31.5}, cold_median_us={8: 11.5, 32: 33.75})
    kernel_sweep.print_table([outcome], [8, 32], cold=True)
    header, row = capsys.readouterr().out.splitlines()
    assert header.index("us @32") < header.index("cold @8") < header.index("cold @32") < header.index("mma instr")
    assert "9.25     31.50     11.50     33.75" in row
    kernel_sweep.print_table([outcome], [8, 32])
    assert "cold" not in capsys.readouterr().out


def test_the_fastest_variant_carries_its_cold_time_against_the_roofline():
    fp16 = [v for v in kernel_sweep.variants() if v.dtype == "fp16"][:2]
    outcomes = [kernel_sweep.Outcome(fp16[0], "ok", 0.0, 1.0, {32: 31.0}, cold_median_us={32: 33.0}),
                kernel_sweep.Outcome(fp16[1], "ok", 0.0, 1.0, {32: 32.0}, cold_median_us={32: 32.5})]
    best, = kernel_sweep.best_variants(outcomes, [32], "NVIDIA H100 80GB HBM3")
    assert (best.variant, best.median_us, best.cold_median_us) == (fp16[0], 31.0, 33.0)  # picked on warm times
    expected = kernel_sweep.bytes_moved(kernel_sweep.Shape.paper(), 32, 2) / 33e-6 / 3.35e12
    assert best.cold_fraction_peak_bandwidth == pytest.approx(expected)
    warm_only, = kernel_sweep.best_variants([kernel_sweep.Outcome(fp16[0], "ok", 0.0, 1.0, {32: 31.0})], [32],
                                            "NVIDIA H100 80GB HBM3")
    assert warm_only.cold_median_us is None and warm_only.cold_fraction_peak_bandwidth is None


def test_main_writes_cold_timings_and_the_l2_size_with_cold_l2(monkeypatch, tmp_path):
    todo = kernel_sweep.variants()[:1]
    monkeypatch.setattr(kernel_sweep, "variants", lambda *narrowed: todo)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a: SimpleNamespace(L2_cache_size=50 * 2**20))

    def fake_child(variant, batches, time_it, sigmoid, cold_l2=False):
        timed = {b: 10.0 for b in batches} if time_it else None
        return kernel_sweep.Outcome(variant, "ok", 0.0, 1.0, timed, cold_median_us=timed and cold_l2 and {8: 12.0},
                                    input_sets=timed and cold_l2 and {8: 16})

    monkeypatch.setattr(kernel_sweep, "run_child", fake_child)
    out = tmp_path / "sweep.json"
    assert kernel_sweep.main(["--batch", "8", "--jobs", "1", "--out", str(out), "--cold-l2"]) == 0
    report = json.loads(out.read_text())
    assert report["cold_l2"] is True and report["l2_cache_bytes"] == 50 * 2**20
    assert [(r["median_us"], r["cold_median_us"], r["input_sets"]) for r in report["rows"]] == [
        ({"8": 10.0}, {"8": 12.0}, {"8": 16})]
    assert report["fastest"][0]["cold_median_us"] == 12.0
