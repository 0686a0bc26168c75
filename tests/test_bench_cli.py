"""`langbrt-bench`: one JSON report with environment, per-row latency/throughput/roofline and skipped rows.
A structure check on CPU, not a timed test."""

import json

import pytest
import torch

from langbrt import LangBRT, LangBRTConfig
from langbrt.export.onnx_export import export_onnx
from langbrt.runtime import cli_bench
from langbrt.runtime.cli_bench import format_table, main
from langbrt.text import default_text_encoder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder()).eval()
    model.save_pretrained(root / "ckpt")
    export_onnx(model, root / "tiny.onnx", extra_prompt_slots=1, checkpoint_dir=root / "ckpt")  # as langbrt-export
    return root / "ckpt", root / "tiny.onnx"


def test_bench_json_has_rows_for_each_loadable_backend_and_skips_the_rest(models, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--model", str(models[0]), "--model", str(models[1]), "--precision", "fp32", "fp16",
            "--batch-sizes", "1", "2", "--warmup", "1", "--seconds", "0.5", "--device", "cpu", "--json",
            "--out", str(out)]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == report
    assert set(report) == {"environment", "settings", "models", "rows", "skipped"}
    assert {"torch", "onnxruntime", "gpu", "driver", "cpu"} <= set(report["environment"])
    rows = {(r["backend"], r["precision"], r["batch_size"]): r for r in report["rows"]}
    assert set(rows) == {(b, "fp32", n) for b in ("torch", "onnxruntime") for n in (1, 2)}
    for row in rows.values():
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["images_per_s"] > 0 and row["calls"] >= 3
        assert row["flops_per_image"] > 0 and row["bytes_per_image"] > 0
        if not torch.cuda.is_available():
            assert row["bound_ms"] is None and row["achieved_fraction"] is None  # no CPU peak table
    assert {(s["backend"], s["precision"]) for s in report["skipped"]} == {("torch", "fp16"), ("onnxruntime", "fp16")}
    assert all(s["reason"] for s in report["skipped"])
    # the export is costed as its own checkpoint (model_hash), plus the one extra-prompt map each call returns
    for n in (1, 2):
        torch_row, onnx_row = rows[("torch", "fp32", n)], rows[("onnxruntime", "fp32", n)]
        assert onnx_row["flops_per_image"] == torch_row["flops_per_image"]
        assert onnx_row["bytes_per_image"] == torch_row["bytes_per_image"] + 64 * 64 * 4


def test_an_export_is_not_costed_as_another_checkpoint_of_its_size(models, tmp_path, capsys):
    """The roofline of an export used to borrow any --model checkpoint of the same image size: another model's
    FLOPs and weights. Now only the checkpoint whose weights the export's model_hash names."""
    torch.manual_seed(1)
    other = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder()).eval()
    other.save_pretrained(tmp_path / "other")
    assert main(["--model", str(tmp_path / "other"), "--model", str(models[1]), *FAST, "--json"]) == 0
    rows = {r["backend"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["torch"]["flops_per_image"] > 0
    assert rows["onnxruntime"]["flops_per_image"] is None and rows["onnxruntime"]["bytes_per_image"] is None


def test_every_row_has_the_same_fields_whether_costed_or_not(models, capsys):
    """A row without a cost (an export whose checkpoint was not given) lacked achieved_tflops, peak_flops and
    peak_bandwidth: a script reading them from every row of the report failed on it (QA)."""
    assert main(["--model", str(models[0]), "--model", str(models[1]), "--warmup", "0", "--seconds", "0.2",
                 "--batch-sizes", "1", "--device", "cpu", "--json"]) == 0
    costed = json.loads(capsys.readouterr().out)["rows"][0]
    assert main(["--model", str(models[1]), "--warmup", "0", "--seconds", "0.2", "--batch-sizes", "1",
                 "--device", "cpu", "--json"]) == 0
    uncosted = json.loads(capsys.readouterr().out)["rows"][0]
    assert costed["flops_per_image"] > 0 and uncosted["flops_per_image"] is None
    assert set(uncosted) == set(costed)


@pytest.fixture
def torch_threads_restored():
    """`--threads` sets the process's thread count for real; the rest of the suite keeps its own."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_sets_the_count_the_rows_were_measured_with(models, capsys, torch_threads_restored):
    """On a machine whose cores other jobs share, one thread was 3-10x faster than torch's default (README: CPU
    threads), and a latency number means nothing without the thread count it was measured with."""
    assert main(["--model", str(models[0]), *FAST, "--threads", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["environment"]["torch_threads"] == 1 and len(report["rows"]) == 1


def test_a_missing_model_is_one_line_exit_2(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"langbrt-bench: error: {tmp_path / 'nope'}: no such model file or folder"], err


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


FAST = ["--batch-sizes", "1", "--warmup", "0", "--seconds", "0.05", "--device", "cpu"]


def test_an_out_that_is_the_model_is_refused_and_the_model_is_untouched(models, tmp_path, capsys):
    onnx_copy = tmp_path / "m.onnx"
    onnx_copy.write_bytes(models[1].read_bytes())
    assert main(["--model", str(onnx_copy), *FAST, "--out", str(onnx_copy)]) == 2
    assert "is the input" in _one_line_error(capsys)
    assert onnx_copy.read_bytes() == models[1].read_bytes()


@pytest.mark.parametrize("out, says", [("ckpt/bench.json", "inside the input"), ("absent/bench.json", "does not exist"),
                                       (".", "is a folder")])
def test_a_bad_out_is_refused_before_any_work(models, tmp_path, capsys, monkeypatch, out, says):
    monkeypatch.chdir(models[0].parent)
    monkeypatch.setattr(cli_bench, "run_bench", lambda args: pytest.fail("benchmarked before checking --out"))
    assert main(["--model", "ckpt", *FAST, "--out", out]) == 2
    assert says in _one_line_error(capsys)


def test_ctrl_c_is_one_line_exit_130_and_writes_no_report(models, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_bench, "time_backend", interrupted)
    assert main(["--model", str(models[1]), *FAST, "--out", str(tmp_path / "bench.json")]) == 130
    assert _one_line_error(capsys) == "langbrt-bench: interrupted; no report written"
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_after_a_measured_row_does_not_say_nothing_was_measured(models, capsys, monkeypatch):
    real, calls = cli_bench.time_backend, []

    def interrupted_on_the_second_row(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cli_bench, "time_backend", interrupted_on_the_second_row)
    assert main(["--model", str(models[1]), *FAST, "--batch-sizes", "1", "2"]) == 130
    assert _one_line_error(capsys) == "langbrt-bench: interrupted; no report printed"


def test_a_path_no_backend_recognises_is_refused_up_front(tmp_path, capsys):
    (tmp_path / "small.png").write_bytes(b"\x89PNG")
    assert main(["--model", str(tmp_path / "small.png"), *FAST]) == 2
    assert "cannot tell which backend" in _one_line_error(capsys)


@pytest.mark.parametrize("case", ["corrupt-onnx", "cuda-without-gpu"])
def test_nothing_measured_is_exit_1_with_the_reasons_and_no_report(models, tmp_path, capsys, monkeypatch, case):
    model, device = str(models[0]), "cpu"
    if case == "corrupt-onnx":
        model = str(tmp_path / "corrupt.onnx")
        (tmp_path / "corrupt.onnx").write_bytes(b"not a model")
    else:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        device = "cuda"
    out = tmp_path / "bench.json"
    assert main(["--model", model, *FAST, "--device", device, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("skipped ") and captured.out.count("skipped ") == 1  # the reason, no header
    assert captured.err.strip().splitlines() == [
        f"langbrt-bench: error: nothing was measured: every row was skipped (reasons above); {out} not written"]
    assert not out.exists()


def test_one_row_measured_beside_a_skipped_one_is_success(models, tmp_path, capsys):
    (tmp_path / "corrupt.onnx").write_bytes(b"not a model")
    assert main(["--model", str(models[0]), "--model", str(tmp_path / "corrupt.onnx"), *FAST, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["rows"]) == 1 and [s["model"] for s in report["skipped"]] == [str(tmp_path / "corrupt.onnx")]


def test_a_batch_too_big_for_memory_is_a_skipped_row(models, capsys, monkeypatch):
    """`--batch-sizes 100000`: the CPU allocator's RuntimeError becomes a skipped row, not a traceback."""
    real = cli_bench.time_backend

    def allocate(backend, batch, warmup, seconds):
        if batch > 1:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return real(backend, batch, warmup, seconds)

    monkeypatch.setattr(cli_bench, "time_backend", allocate)
    assert main(["--model", str(models[0]), *FAST, "--batch-sizes", "1", "100000", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["batch_size"] for r in report["rows"]] == [1]
    assert "batch 100000 does not fit" in report["skipped"][0]["reason"]


@pytest.mark.parametrize("flag, value", [("--seconds", "nan"), ("--seconds", "inf"), ("--seconds", "0"),
                                         ("--seconds", "-1"), ("--warmup", "-1"), ("--batch-sizes", "0"),
                                         ("--batch-sizes", "x")])
def test_a_bad_number_is_one_line_exit_2(models, capsys, monkeypatch, flag, value):
    monkeypatch.setattr(cli_bench, "run_bench", lambda args: pytest.fail(f"ran with {flag} {value}"))  # inf: forever
    with pytest.raises(SystemExit) as exit_:
        main(["--model", str(models[1]), flag, value])
    assert exit_.value.code == 2 and flag in _one_line_error(capsys)


def test_a_skipped_row_without_a_precision_reads_without_a_double_space():
    report = {"rows": [], "skipped": [{"model": "m.onnx", "backend": "tensorrt", "reason": "no GPU"}]}
    assert format_table(report).splitlines()[-1] == "skipped tensorrt for m.onnx: no GPU"


def test_precision_and_batch_sizes_have_help_with_their_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default fp32)" in text and "(default 1 8 32)" in text


def test_a_backend_failing_while_timed_is_one_line_exit_1_and_no_report(models, tmp_path, capsys, monkeypatch):
    """Not out of memory (a CUDA fault, an onnxruntime error): the run stops with one line naming the row
    instead of a traceback, and no half-made report is written."""
    real = cli_bench.time_backend

    def failing(backend, batch, warmup, seconds):
        if batch > 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered\n"
                               "CUDA kernel errors might be asynchronously reported at some other API call")
        return real(backend, batch, warmup, seconds)

    monkeypatch.setattr(cli_bench, "time_backend", failing)
    out = tmp_path / "bench.json"
    assert main(["--model", str(models[0]), *FAST, "--batch-sizes", "1", "2", "--out", str(out)]) == 1
    err = _one_line_error(capsys)
    assert err.startswith(f"langbrt-bench: error: {models[0]}: torch fp32 batch 2 failed") and "Traceback" not in err
    assert "illegal memory access" in err and "asynchronously" not in err
    assert not out.exists()


def test_a_batch_size_or_precision_given_twice_is_measured_once(models, capsys):
    argv = ["--model", str(models[0]), "--precision", "fp32", "fp32", "--batch-sizes", "1", "1", "--warmup", "0",
            "--seconds", "0.2", "--device", "cpu", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["precision"], r["batch_size"]) for r in report["rows"]] == [("fp32", 1)]
    assert report["settings"]["batch_sizes"] == [1]


def test_a_model_given_twice_is_measured_once(models, capsys, monkeypatch):
    """As a batch size or precision given twice: the same file under two spellings was timed and reported twice."""
    monkeypatch.chdir(models[1].parent)
    argv = ["--model", str(models[1]), "--model", models[1].name, "--batch-sizes", "1", "--warmup", "0",
            "--seconds", "0.2", "--device", "cpu", "--json"]
    assert main(argv) == 0
    assert [r["model"] for r in json.loads(capsys.readouterr().out)["rows"]] == [str(models[1])]


@pytest.mark.parametrize("flag", ["--model", "--out"])
def test_an_empty_model_or_out_is_a_usage_error(tmp_path, capsys, monkeypatch, flag):
    """QA: `--out ""` was refused as ". is a folder" and `--model ""` as ".: not a LangBRT checkpoint", both
    naming a folder the user never typed: an empty name (an unset variable) is reported as empty."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_bench, "run_bench", lambda args: pytest.fail("benchmarked an empty name"))
    with pytest.raises(SystemExit) as exited:
        main([flag, ""])
    assert exited.value.code == 2
    assert _one_line_error(capsys).startswith(f"langbrt-bench: error: argument {flag}: is empty")


@pytest.mark.parametrize("value, recorded", [(None, "channels_last"), ("contiguous", "contiguous"),
                                             ("channels_last", "channels_last")])
def test_each_row_records_the_memory_format_it_ran_in(models, capsys, monkeypatch, value, recorded):
    """NCHW and channels_last runs of the torch backend are told apart in the report (null for an export,
    whose engine chooses its own layout), and a channels_last row says so in the table too."""
    if value is None:
        monkeypatch.delenv("LANGBRT_MEMORY_FORMAT", raising=False)
    else:
        monkeypatch.setenv("LANGBRT_MEMORY_FORMAT", value)
    argv = ["--model", str(models[0]), "--model", str(models[1]), *FAST]
    assert main([*argv, "--json"]) == 0
    rows = {r["backend"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["torch"]["memory_format"] == recorded and rows["onnxruntime"]["memory_format"] is None
    table = format_table({"rows": list(rows.values()), "skipped": []}).splitlines()
    nhwc = recorded == "channels_last"  # the default on CPU (auto)
    assert table[1].endswith("  cpu, channels_last" if nhwc else "  cpu") and table[2].endswith("  cpu")


def test_a_bad_memory_format_is_one_line_exit_2_before_any_work(models, capsys, monkeypatch):
    monkeypatch.setenv("LANGBRT_MEMORY_FORMAT", "nhwc")
    monkeypatch.setattr(cli_bench, "run_bench", lambda args: pytest.fail("benchmarked with a bad memory format"))
    assert main(["--model", str(models[0]), *FAST]) == 2
    assert _one_line_error(capsys) == ("langbrt-bench: error: LANGBRT_MEMORY_FORMAT='nhwc' is not one of: "
                                       "auto, contiguous, channels_last")
