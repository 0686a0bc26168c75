"""`langbrt-eval --suite`: checkpoints and classical baselines side by side, one table, one JSON file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from langbrt.config import LangBRTConfig
from langbrt.model import LangBRT
from langbrt.text import default_text_encoder
from langbrt.training.cli_eval import main
from langbrt.training.datasets import build_dataset
from langbrt.training.evaluate import evaluate
from langbrt.training.suite import TABLE_COLUMNS, parse_suite_specs
from langbrt.training.train_config import TrainConfig

NUM_SAMPLES = 2
ERROR = "langbrt-eval: error: "  # how every error line of the command starts
BASELINES = ("identity", "bilateral-skin", "inpaint-a")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("suite")
    dirs = {}
    for seed, name in enumerate(("a", "b")):
        torch.manual_seed(seed)
        model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder())
        dirs[name] = model.save_pretrained(root / name / "final")
    return dirs


@pytest.fixture(scope="module")
def suite_run(checkpoints, tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("out") / "suite.json"
    args = [arg for name, path in checkpoints.items() for arg in ("--suite", f"{name}={path}")]
    result = CliRunner().invoke(main, [*args, "--data", "synthetic", "--num-samples", str(NUM_SAMPLES),
                                       "--batch-size", "2", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result.output, json.loads(out.read_text())


def test_json_records_the_run_and_every_method(suite_run):
    _, report = suite_run
    assert {"command", "date", "num_samples", "methods", "checkpoints", "notes"} <= report.keys()
    assert report["num_samples"] == NUM_SAMPLES and report["command"]
    assert list(report["methods"]) == ["a", "b", *BASELINES]
    for scores in report["methods"].values():
        assert set(TABLE_COLUMNS) <= scores.keys()
        assert scores["lpips"] is None or scores["lpips"] >= 0


def test_baselines_without_a_detector_have_no_iou_and_inpainting_reuses_the_first_models(suite_run):
    methods = suite_run[1]["methods"]
    assert methods["identity"]["iou"] is None and methods["bilateral-skin"]["iou"] is None
    assert methods["identity"]["iou_per_type"] == {} and methods["bilateral-skin"]["iou_per_type"] == {}
    assert methods["inpaint-a"]["iou"] == methods["a"]["iou"]
    assert methods["inpaint-a"]["iou_per_type"] == methods["a"]["iou_per_type"]
    assert methods["identity"]["specificity_change"] == 0.0


@pytest.mark.parametrize("name", ["a", "b", "inpaint-a"])
def test_every_method_with_maps_has_an_iou_overall_and_per_prompted_type(suite_run, name):
    """mask_iou is a number in [0, 1] for every image (both masks empty scores 1), so a method with maps
    never has a missing IoU: not overall, not for any blemish type its prompts named."""
    scores = suite_run[1]["methods"][name]
    assert isinstance(scores["iou"], float) and 0 <= scores["iou"] <= 1, scores
    assert scores["iou_per_type"], scores  # every synthetic sample names at least one blemish
    for kind, iou in scores["iou_per_type"].items():
        assert isinstance(iou, float) and 0 <= iou <= 1, (kind, scores)


def test_table_has_one_row_per_method_and_the_metric_columns(suite_run):
    table, _ = suite_run
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("method"))
    assert all(col in header for col in TABLE_COLUMNS)
    for name in ("a", "b", *BASELINES):
        assert any(line.split()[:1] == [name] for line in lines), name


def test_identity_row_matches_the_identity_numbers_of_evaluate(checkpoints, suite_run):
    identity = suite_run[1]["methods"]["identity"]
    model = LangBRT.from_pretrained(checkpoints["a"])
    dataset, collate, _ = build_dataset(TrainConfig(data="synthetic", flip=False), 64, split="test",
                                        length=NUM_SAMPLES)
    reference = evaluate(model, dataset, collate, batch_size=2)
    assert identity["psnr_blemish"] == pytest.approx(reference.identity_psnr_blemish, rel=1e-6)
    assert identity["psnr"] == pytest.approx(reference.identity_psnr, rel=1e-6)
    assert identity["ssim"] == pytest.approx(reference.identity_ssim, rel=1e-6)


def test_a_malformed_suite_entry_is_one_error_line(checkpoints):
    result = CliRunner().invoke(main, ["--suite", "no-equals-sign", "--num-samples", "2"])
    assert result.exit_code == 2 and result.output.startswith(ERROR) and result.output.count("\n") == 1


def test_suite_with_a_paired_folder_is_one_error_line_before_any_model_loads(checkpoints, tmp_path, monkeypatch):
    """The baselines need the synthetic set's exact masks: a folder of pairs is refused up front."""
    import langbrt.training.suite as suite

    for side in ("source", "target"):
        (tmp_path / side).mkdir()
    monkeypatch.setattr(suite, "evaluate_suite", lambda *a, **k: pytest.fail("the suite ran"))
    result = CliRunner().invoke(main, ["--suite", f"a={checkpoints['a']}", "--data", str(tmp_path),
                                       "--num-samples", "2", "--device", "cpu"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"{ERROR}--suite needs --data synthetic"), result.output


def test_a_repeated_suite_name_is_one_error_line_naming_it(checkpoints, monkeypatch):
    import langbrt.training.suite as suite

    monkeypatch.setattr(suite, "evaluate_suite", lambda *a, **k: pytest.fail("the suite ran"))
    result = CliRunner().invoke(main, ["--suite", f"a={checkpoints['a']}", "--suite", f"a={checkpoints['b']}",
                                       "--num-samples", "2", "--device", "cpu"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"{ERROR}--suite name 'a' is repeated"), result.output


def test_suite_names_may_not_shadow_a_baseline():
    with pytest.raises(ValueError, match="taken by a baseline"):
        parse_suite_specs(["identity=/tmp/x"])


def test_out_inside_an_evaluated_checkpoint_is_refused_and_the_checkpoint_kept(checkpoints):
    config = (checkpoints["b"] / "config.json").read_bytes()
    result = CliRunner().invoke(main, ["--suite", f"a={checkpoints['a']}", "--suite", f"b={checkpoints['b']}",
                                       "--num-samples", "2", "--out", str(checkpoints["b"] / "config.json")])
    assert result.exit_code == 2 and result.output.startswith(f"{ERROR}--out ") and result.output.count("\n") == 1
    assert (checkpoints["b"] / "config.json").read_bytes() == config


def test_an_unreadable_train_config_beside_a_checkpoint_is_one_line_naming_it(tmp_path):
    from langbrt.errors import LangBRTInputError
    from langbrt.training.suite import checkpoint_info

    (tmp_path / "final").mkdir()
    (tmp_path / "train_config.json").write_text("[" * 100_000)
    with pytest.raises(LangBRTInputError, match=f"^{tmp_path / 'train_config.json'}: unreadable train config "
                                                "\\(nested too deeply\\)$"):
        checkpoint_info(tmp_path / "final")


def test_ctrl_c_in_a_variant_stops_the_benchmark_script(tmp_path):
    """QA: langbrt-train exits 130 on Ctrl-C rather than dying by SIGINT, so bash took it for a failed variant and
    trained the next one (seven Ctrl-Cs to stop `bash benchmarks/quality_suite.sh`), then ran the scoring."""
    calls = tmp_path / "calls"
    for tool, status in (("langbrt-train", 130), ("langbrt-eval", 0)):
        script = tmp_path / tool
        script.write_text(f'#!/bin/sh\necho "{tool}" >> "{calls}"\necho "Interrupted: ..." >&2\nexit {status}\n')
        script.chmod(0o755)
    env = {**os.environ, "BIN": str(tmp_path), "RUNS": str(tmp_path / "runs"), "OUT": str(tmp_path / "out.json")}
    script = Path(__file__).resolve().parent.parent / "benchmarks/quality_suite.sh"
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert calls.read_text() == "langbrt-train\n"  # no next variant, no scoring
    assert "== full: interrupted" in proc.stdout


def test_a_failed_variant_is_scored_without_and_fails_the_benchmark_script(tmp_path):
    """QA: a variant whose training failed was left out of the table and the script still exited 0, so a
    suite missing three of its rows (a --fraction crash) passed for a whole one."""
    calls = tmp_path / "calls"
    for tool, status in (("langbrt-train", 1), ("langbrt-eval", 0)):
        script = tmp_path / tool
        script.write_text(f'#!/bin/sh\necho "{tool}" >> "{calls}"\nexit {status}\n')
        script.chmod(0o755)
    (tmp_path / "runs" / "full" / "final").mkdir(parents=True)  # trained earlier: kept, scored
    env = {**os.environ, "BIN": str(tmp_path), "RUNS": str(tmp_path / "runs"), "OUT": str(tmp_path / "out.json")}
    script = Path(__file__).resolve().parent.parent / "benchmarks/quality_suite.sh"
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert calls.read_text().splitlines() == ["langbrt-train"] * 6 + ["langbrt-eval"]  # the others still scored
    assert "== failed, not in the results: no-prior no-tbd no-tca frac-0.1 frac-0.01 no-prior-0.01" in proc.stdout


def _stub_tools(folder: Path, calls: Path) -> None:
    folder.mkdir()
    for tool in ("langbrt-train", "langbrt-eval"):
        script = folder / tool
        script.write_text(f'#!/bin/sh\necho "{tool}" >> "{calls}"\nexit 0\n')
        script.chmod(0o755)


def test_the_benchmark_script_finds_langbrt_on_path_without_a_dot_venv(tmp_path):
    """A user whose virtualenv is not the quick start's `.venv` (activated elsewhere, conda) ran
    `bash benchmarks/quality_suite.sh` and every variant failed: `.venv/bin/langbrt-train: No such file or
    directory`. Without BIN the script now takes `.venv/bin` when it is there, else the langbrt-train on PATH."""
    calls, tools = tmp_path / "calls", tmp_path / "env-bin"
    _stub_tools(tools, calls)
    env = {k: v for k, v in os.environ.items() if k != "BIN"}
    env.update(PATH=f"{tools}{os.pathsep}{env['PATH']}", RUNS=str(tmp_path / "runs"), OUT=str(tmp_path / "out.json"))
    script = Path(__file__).resolve().parent.parent / "benchmarks/quality_suite.sh"
    proc = subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "No such file" not in proc.stderr, proc.stderr
    assert calls.read_text().splitlines() == ["langbrt-train"] * 7 + ["langbrt-eval"], proc.stdout + proc.stderr


def test_the_benchmark_script_without_langbrt_anywhere_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "BIN"}
    env.update(PATH="/usr/bin:/bin", RUNS=str(tmp_path / "runs"), OUT=str(tmp_path / "out.json"))
    script = Path(__file__).resolve().parent.parent / "benchmarks/quality_suite.sh"
    proc = subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    assert proc.stderr.startswith("no langbrt-train in .venv/bin or on PATH") and proc.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def no_tbd_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(use_detection=False), text_encoder=default_text_encoder())
    return model.save_pretrained(tmp_path_factory.mktemp("no-tbd") / "final")


def test_a_model_without_tbd_has_no_detection_scores(checkpoints, no_tbd_checkpoint):
    """w/o TBD has no detector; its constant all-ones map used to score IoU = the blemishes' share of the image."""
    result = CliRunner().invoke(main, ["--suite", f"a={checkpoints['a']}", "--suite", f"no-tbd={no_tbd_checkpoint}",
                                       "--num-samples", str(NUM_SAMPLES), "--batch-size", "2", "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)["methods"]["no-tbd"]
    assert scores["iou"] is None and scores["iou_per_type"] == {}
    assert scores["psnr"] is not None and scores["specificity_change"] is not None


def test_evaluate_gives_a_model_without_tbd_no_detection_scores(no_tbd_checkpoint):
    model = LangBRT.from_pretrained(no_tbd_checkpoint)
    dataset, collate, _ = build_dataset(TrainConfig(data="synthetic", flip=False), 64, split="test", length=2)
    result = evaluate(model, dataset, collate, batch_size=2)
    assert result.detection is None and result.detection_per_type == {}
    assert result.specificity_change is not None and result.prompts is None


def test_a_suite_whose_first_model_has_no_tbd_is_one_error_line(checkpoints, no_tbd_checkpoint):
    result = CliRunner().invoke(main, ["--suite", f"no-tbd={no_tbd_checkpoint}", "--suite", f"a={checkpoints['a']}",
                                       "--num-samples", str(NUM_SAMPLES)])
    assert result.exit_code == 2 and result.output.startswith(ERROR) and result.output.count("\n") == 1
    assert "no-tbd" in result.output and "first" in result.output, result.output
