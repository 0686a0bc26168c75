"""`langbrt-eval`: one JSON object (unavailable metrics null, never 0), a table otherwise, clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from langbrt.config import LangBRTConfig
from langbrt.model import LangBRT
from langbrt.text import default_text_encoder
from langbrt.training.cli_eval import main
from langbrt.training.data.paired import DEFAULT_REAL_PROMPTS

BIN = Path(sys.executable).parent
ERROR = "langbrt-eval: error: "  # how every error line of the command starts


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder())
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "final")


def test_console_script_prints_one_json_object(checkpoint):
    proc = subprocess.run([BIN / "langbrt-eval", "--model", str(checkpoint), "--data", "synthetic",
                           "--num-samples", "8", "--json"], capture_output=True, text=True, timeout=90,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert {"psnr", "ssim", "lpips", "identity_psnr", "identity_psnr_blemish", "detection"} <= result.keys()
    assert result["lpips"] is None or result["lpips"] > 0
    assert result["identity_specificity_change"] == 0.0
    assert set(result["detection"]) == {"iou", "ap"}
    # synthetic samples always name a blemish: IoU and AP are numbers, overall and for every type named
    for scores in [result["detection"], *result["detection_per_type"].values()]:
        assert isinstance(scores["iou"], float) and 0 <= scores["iou"] <= 1, result["detection_per_type"]
        assert isinstance(scores["ap"], float) and 0 < scores["ap"] <= 1, result["detection_per_type"]
    assert result["detection_per_type"]


def test_table_shows_model_beside_identity(checkpoint):
    result = CliRunner().invoke(main, ["--model", str(checkpoint), "--num-samples", "4"])
    assert result.exit_code == 0, result.output
    assert "identity" in result.output and "PSNR on blemishes" in result.output


def test_missing_model_is_one_error_line(tmp_path):
    result = CliRunner().invoke(main, ["--model", str(tmp_path / "nope"), "--json"])
    assert result.exit_code == 2 and result.output.startswith(ERROR) and result.output.count("\n") == 1
    assert str(tmp_path / "nope") in result.output, result.output


def test_empty_data_folder_is_one_error_line(checkpoint, tmp_path):
    (tmp_path / "source").mkdir()
    (tmp_path / "target").mkdir()
    result = CliRunner().invoke(main, ["--model", str(checkpoint), "--data", str(tmp_path)])
    assert result.exit_code == 2 and "holds no images" in result.output


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def one_error_line(result) -> bool:
    return result.exit_code == 2 and result.output.startswith(ERROR) and result.output.count("\n") == 1


@pytest.mark.parametrize("args, named", [(["--split", "bogus"], "--split"), (["--batch-size", "0"], "--batch-size"),
                                         (["--seed", "-1"], "--seed"), (["--device", "foo"], "--device"),
                                         (["--num-samples", "-1"], "--num-samples")])
def test_usage_error_is_one_error_line(checkpoint, args, named):
    result = invoke("--model", str(checkpoint), *args)
    assert one_error_line(result) and named in result.output


@pytest.mark.parametrize("args", [["--model", "M"], ["--suite", "a=M"]], ids=["model", "suite"])
def test_the_val_split_on_the_synthetic_set_is_one_error_line_naming_the_flag(checkpoint, args):
    # QA, 2026-11-28: "split must be one of ['test', 'train'], got 'val'", with --help listing val as a choice
    result = invoke(*[str(checkpoint) if a == "M" else a.replace("=M", f"={checkpoint}") for a in args],
                    "--split", "val", "--num-samples", "2")
    assert one_error_line(result), result.output
    assert result.output.startswith(f"{ERROR}--split val: the synthetic set has only the splits train and test"), \
        result.output


def test_help_still_prints_the_usage():
    result = invoke("--help")
    assert result.exit_code == 0 and "Usage:" in result.output and "--suite" in result.output


def test_cuda_without_a_gpu_is_one_error_line(checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # runs the same on a GPU machine
    result = invoke("--model", str(checkpoint), "--device", "cuda")
    assert one_error_line(result) and "--device cpu" in result.output


def test_ffhqr_without_its_root_is_one_error_line(checkpoint):
    result = invoke("--model", str(checkpoint), "--data", "ffhqr")
    assert one_error_line(result) and "--ffhqr-root" in result.output


@pytest.mark.parametrize("args", [["--model", "M"], ["--suite", "a=M"]], ids=["model", "suite"])
def test_zero_synthetic_samples_is_an_error_not_the_whole_set(checkpoint, args):
    result = invoke(*[str(checkpoint) if a == "M" else a.replace("=M", f"={checkpoint}") for a in args],
                    "--num-samples", "0")
    assert one_error_line(result), result.output
    assert result.output.startswith(f"{ERROR}--num-samples must be at least 1 for --data synthetic"), result.output


def test_out_writes_the_json_object_of_the_model(checkpoint, tmp_path):
    result = invoke("--model", str(checkpoint), "--num-samples", "2", "--batch-size", "2", "--json",
                    "--out", str(tmp_path / "eval.json"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval.json").read_text()) == json.loads(result.stdout)


@pytest.mark.parametrize("where, message", [("inside", "is inside the input"), ("missing", "does not exist"),
                                            ("folder", "is a folder")])
def test_bad_out_is_one_error_line_before_anything_runs(checkpoint, tmp_path, where, message):
    out = {"inside": checkpoint / "config.json", "missing": tmp_path / "no/eval.json", "folder": tmp_path}[where]
    config = (checkpoint / "config.json").read_bytes()
    result = invoke("--model", str(checkpoint), "--num-samples", "2", "--out", str(out))
    assert one_error_line(result) and message in result.output
    assert (checkpoint / "config.json").read_bytes() == config


class ClipNamedEncoder:
    """Stands in for an open_clip text tower (its name and width), so a checkpoint takes --clip-text-weights."""

    name = "open_clip:ViT-B-16"
    dim = 512

    def encode(self, texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.randn(len(texts), self.dim), dim=-1)  # (N, 512)


def test_out_may_not_replace_the_clip_text_weights_the_run_reads(tmp_path):
    """QA: `--clip-text-weights W --out W` scored the pairs, then wrote the JSON over the weights file."""
    torch.manual_seed(0)
    config = LangBRTConfig.tiny(text_encoder=ClipNamedEncoder.name, text_dim=ClipNamedEncoder.dim)
    model = LangBRT(config, text_encoder=ClipNamedEncoder())
    model.prompt_bank.add(DEFAULT_REAL_PROMPTS)  # the pairs' prompts need no text encoder at eval time
    checkpoint = model.save_pretrained(tmp_path / "clip-model")
    weights = tmp_path / "clip.pt"
    weights.write_bytes(b"CLIP text tower weights")
    result = invoke("--model", str(checkpoint), "--data", str(pairs_folder(tmp_path / "data")),
                    "--clip-text-weights", str(weights), "--out", str(weights))
    assert one_error_line(result) and f"--out {weights} is the input {weights}" in result.output, result.output
    assert weights.read_bytes() == b"CLIP text tower weights"


@pytest.mark.parametrize("linked", ["source/b.png", "target/b.png", "prompts.json"])
def test_out_may_not_replace_a_file_a_link_in_the_data_folder_leads_to(checkpoint, tmp_path, linked):
    """QA: a pair linked to a photo outside the data folder passed the --out check (made on the folder), and the
    JSON replaced the photo it had just scored."""
    data = pairs_folder(tmp_path / "data")
    (data / "prompts.json").write_text(json.dumps({"a": ["acne on the cheeks"]}))
    elsewhere = tmp_path / "library" / Path(linked).name
    elsewhere.parent.mkdir()
    (data / linked).rename(elsewhere)
    (data / linked).symlink_to(elsewhere)
    before = elsewhere.read_bytes()
    result = invoke("--model", str(checkpoint), "--data", str(data), "--out", str(elsewhere))
    assert one_error_line(result) and f"--out {elsewhere} is the input {data / linked}" in result.output, result.output
    assert elsewhere.read_bytes() == before


def test_neither_model_nor_suite_is_one_error_line(monkeypatch):
    import langbrt.training.cli_eval as cli_eval

    monkeypatch.setattr(cli_eval, "_run", lambda *a, **k: pytest.fail("evaluated without a model"))
    result = invoke("--num-samples", "2")
    assert one_error_line(result) and "--model" in result.output and "--suite" in result.output, result.output


def test_suite_with_model_is_an_error(checkpoint):
    result = invoke("--suite", f"a={checkpoint}", "--model", str(checkpoint), "--num-samples", "2")
    assert one_error_line(result) and "--model" in result.output


def test_skipped_corrupt_pair_is_one_warning_line(checkpoint, tmp_path):
    for side in ("source", "target"):
        (tmp_path / side).mkdir()
        for name in ("a", "b"):
            Image.new("RGB", (64, 64), (120, 90, 80)).save(tmp_path / side / f"{name}.png")
    (tmp_path / "source/b.png").write_bytes(b"not a png")
    result = invoke("--model", str(checkpoint), "--data", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "b.png" in line]
    assert len(warnings) == 1 and warnings[0].startswith("Warning: ") and ".py:" not in result.output


def test_a_pair_that_fails_only_when_decoded_is_not_scored_in_its_neighbours_place(checkpoint, tmp_path):
    """QA, 2026-11-26: a JPEG cut in half passes the header check, fails when decoded, and the data set used
    to hand the next pair in its place, so eval scored that pair twice and counted it in num_samples."""
    rng = np.random.default_rng(0)
    folders = {"with-bad": tmp_path / "with-bad", "without": tmp_path / "without"}
    for folder in folders.values():
        for side in ("source", "target"):
            (folder / side).mkdir(parents=True)
    for name in ("a", "b", "c", "d"):
        for side in ("source", "target"):
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folders["with-bad"] / side / f"{name}.jpg", quality=95)
            if name != "b":
                Image.fromarray(pixels).save(folders["without"] / side / f"{name}.jpg", quality=95)
    whole = (folders["with-bad"] / "source/b.jpg").read_bytes()
    (folders["with-bad"] / "source/b.jpg").write_bytes(whole[: len(whole) // 2])
    reports = {}
    for key, folder in folders.items():
        result = invoke("--model", str(checkpoint), "--data", str(folder), "--num-samples", "0", "--batch-size", "2",
                        "--json", "--out", str(tmp_path / f"{key}.json"))
        assert result.exit_code == 0, result.output
        reports[key] = json.loads((tmp_path / f"{key}.json").read_text())
    assert reports["with-bad"]["num_samples"] == reports["without"]["num_samples"] == 3
    assert reports["with-bad"]["psnr"] == pytest.approx(reports["without"]["psnr"])


def test_a_folder_whose_every_pair_fails_to_decode_is_an_error_not_an_empty_result(checkpoint, tmp_path):
    """QA: every source a JPEG cut short (headers fine, so not refused up front) gave exit 0 with "num_samples": 0
    and every metric null, a result a script records as if the model had been scored."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for side in ("source", "target"):
        (data / side).mkdir(parents=True)
        for name in ("a", "b"):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(data / side / f"{name}.jpg")
    for name in ("a", "b"):
        whole = (data / f"source/{name}.jpg").read_bytes()
        (data / f"source/{name}.jpg").write_bytes(whole[: len(whole) // 2])
    result = invoke("--model", str(checkpoint), "--data", str(data), "--json", "--out", str(tmp_path / "r.json"))
    lines = result.output.splitlines()
    assert result.exit_code == 2 and [line.startswith("Warning: ") for line in lines] == [True, True, False], lines
    assert lines[-1] == (f"{ERROR}{data}: none of the 2 pairs to score could be decoded (each is named above); "
                         "nothing was scored")
    assert not (tmp_path / "r.json").exists()


def pairs_folder(root: Path, names: tuple[str, ...] = ("a", "b", "c")) -> Path:
    for side in ("source", "target"):
        (root / side).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (64, 64), (120, 90, 80)).save(root / side / f"{name}.png")
    return root


def record_model_prompts(monkeypatch) -> list[list[str]]:
    """Every image's prompt list the model is asked, in order."""
    asked: list[list[str]] = []
    real = LangBRT.forward

    def recording(self, images, prompts=None):
        asked.extend(prompts)
        return real(self, images, prompts)

    monkeypatch.setattr(LangBRT, "forward", recording)
    return asked


def test_folder_pairs_are_asked_their_prompts_json_or_the_prompt_flags_and_the_json_says_so(checkpoint, tmp_path,
                                                                                            monkeypatch):
    data = pairs_folder(tmp_path / "data")
    (data / "prompts.json").write_text(json.dumps({"b": ["acne on the left cheek", "Moles"]}))
    asked = record_model_prompts(monkeypatch)
    result = invoke("--model", str(checkpoint), "--data", str(data), "--prompt", "forehead wrinkles", "--batch-size",
                    "2", "--json")
    assert result.exit_code == 0, result.output
    assert asked == [["forehead wrinkles"], ["acne on the left cheek", "moles"], ["forehead wrinkles"]]
    assert json.loads(result.output)["prompts"] == {"forehead wrinkles": 2, "acne on the left cheek": 1, "moles": 1}


def assert_folder_pairs_are_asked(checkpoint: Path, prompts: tuple[str, ...], tmp_path, monkeypatch) -> None:
    """Each of the folder's 3 pairs was asked `prompts` (no --prompt given), and the JSON counts them."""
    asked = record_model_prompts(monkeypatch)
    result = invoke("--model", str(checkpoint), "--data", str(pairs_folder(tmp_path / "data")), "--json")
    assert result.exit_code == 0, result.output
    assert asked == [list(prompts)] * 3
    assert json.loads(result.output)["prompts"] == dict.fromkeys(prompts, 3)


def test_folder_pairs_without_prompts_are_asked_the_default_prompts(checkpoint, tmp_path, monkeypatch):
    assert_folder_pairs_are_asked(checkpoint, DEFAULT_REAL_PROMPTS, tmp_path, monkeypatch)


def test_the_table_lists_the_prompts_asked(checkpoint, tmp_path):
    result = invoke("--model", str(checkpoint), "--data", str(pairs_folder(tmp_path / "data")), "--prompt", "moles")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[lines.index(f"{'prompts asked':<30}{'images':>12}") + 1].split() == ["moles", "3"], result.output


def test_synthetic_results_name_no_prompts(checkpoint):
    result = invoke("--model", str(checkpoint), "--num-samples", "2", "--json")
    assert result.exit_code == 0 and json.loads(result.output)["prompts"] is None, result.output


@pytest.mark.parametrize("args", [["--model", "M"], ["--suite", "a=M"]], ids=["model", "suite"])
def test_prompt_on_synthetic_data_is_one_error_line(checkpoint, args):
    result = invoke(*[str(checkpoint) if a == "M" else a.replace("=M", f"={checkpoint}") for a in args],
                    "--prompt", "acne on the cheeks", "--num-samples", "2")
    assert one_error_line(result) and result.output.startswith(f"{ERROR}--prompt is for real pairs"), result.output


def test_a_bad_prompts_json_or_empty_prompt_is_one_error_line(checkpoint, tmp_path):
    data = pairs_folder(tmp_path / "data")
    result = invoke("--model", str(checkpoint), "--data", str(data), "--prompt", " ")
    assert one_error_line(result) and result.output.startswith(f"{ERROR}--prompt: prompt is empty"), result.output
    (data / "prompts.json").write_text('{"a": "acne"}')
    result = invoke("--model", str(checkpoint), "--data", str(data))
    assert one_error_line(result) and "prompts.json: 1 value is not a non-empty list" in result.output, result.output


def test_ctrl_c_is_one_line_and_exit_130(checkpoint, monkeypatch):
    import langbrt.training.cli_eval as cli_eval

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_eval, "evaluate", interrupted)
    result = invoke("--model", str(checkpoint), "--num-samples", "4")
    assert result.exit_code == 130 and result.output == "Interrupted (Ctrl-C)\n", result.output


def test_an_empty_out_is_an_error_not_ignored(checkpoint):
    result = invoke("--model", str(checkpoint), "--num-samples", "4", "--out", "")
    assert one_error_line(result) and "--out" in result.output, result.output


def test_python_dash_m_runs_the_command():
    """`python -m langbrt.training.cli_eval` ran nothing and exited 0 (no __main__ guard)."""
    proc = subprocess.run([sys.executable, "-m", "langbrt.training.cli_eval", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "Evaluate a checkpoint" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("flag", ["--model", "--out", "--data", "--ffhqr-root", "--clip-text-weights"])
def test_an_empty_path_is_a_usage_error(tmp_path, monkeypatch, flag):
    """QA: `--model ""` was refused as ". : not a LangBRT checkpoint", a folder the user never typed: an empty
    name (an unset variable) is one usage line naming the flag."""
    monkeypatch.chdir(tmp_path)
    args = {"--model": "ckpt", flag: ""}
    result = CliRunner().invoke(main, [word for pair in args.items() for word in pair])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert flag in result.output and "is empty" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_a_folder_is_scored_whole_by_default_as_the_paper_scores_the_whole_test_split(checkpoint, tmp_path):
    """The paper's Table 1 scores all of FFHQR's test split; the default used to stop at a folder's first 64 pairs."""
    data = pairs_folder(tmp_path / "data", names=tuple(f"{i:03d}" for i in range(65)))
    result = invoke("--model", str(checkpoint), "--data", str(data), "--batch-size", "16", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["num_samples"] == 65


def test_the_synthetic_set_scores_64_samples_by_default(checkpoint):
    result = invoke("--model", str(checkpoint), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["num_samples"] == 64


def test_folder_pairs_without_prompts_are_asked_the_models_own_pre_defined_prompts(tmp_path, monkeypatch):
    """Eq. 1 sends the pre-defined prompts through their own psi_i: a model saved with other pre-defined prompts
    than the preset's was asked the preset's three, as user prompts, and scored on them."""
    own = ("moles on the nose", "redness on the chin")
    model = LangBRT(LangBRTConfig.tiny(predefined_prompts=own), text_encoder=default_text_encoder())
    checkpoint = model.save_pretrained(tmp_path / "own")
    assert_folder_pairs_are_asked(checkpoint, own, tmp_path, monkeypatch)


def test_threads_sets_torchs_cpu_threads_before_the_model_runs(checkpoint, monkeypatch):
    """As langbrt-train, -infer, -serve and -bench: on shared cores one thread was 3-10x faster than torch's
    default (README: CPU threads), and eval had only OMP_NUM_THREADS."""
    asked = []
    monkeypatch.setattr(torch, "set_num_threads", asked.append)  # this test's process keeps its own setting
    result = invoke("--model", str(checkpoint), "--num-samples", "2", "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    assert asked == [1]
