"""`langbrt-train --val`: held-out scores in the log, the same as langbrt-eval's, without changing the run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file
from test_trainer import tiny_config

from langbrt.training.cli_eval import main as eval_main
from langbrt.training.cli_train import main as train_main
from langbrt.training.train_config import TrainConfig
from langbrt.training.train_state import load_trainer_state
from langbrt.training.trainer import train
from langbrt.training.validation import build_validation

FAST_ON_PAIRS = ["--preset", "tiny", "--batch-size", "2", "--perceptual-weight", "0", "--semantic-weight", "0",
                 "--ema-decay", "0.9", "--threads", "1", "--quiet"]
FAST = [*FAST_ON_PAIRS, "--synthetic-length", "16"]  # for the synthetic set: refused with --data DIR
ERROR = "langbrt-train: error: "


def pairs_folder(root: Path, n: int = 3) -> Path:
    """`n` pairs of different sizes whose target differs from the source in a patch (a 'blemish')."""
    generator = torch.Generator().manual_seed(len(str(root)))
    for i in range(n):
        size = 64 + 16 * i
        source = (torch.rand(size, size, 3, generator=generator) * 255).byte()
        target = source.clone()
        target[8:20, 8:20] = 128
        for side, image in (("source", source), ("target", target)):
            (root / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.numpy()).save(root / side / f"p{i}.png")
    return root


def val_records(run: Path) -> dict[int, dict[str, float]]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records if "val/psnr" in r}


def eval_json(checkpoint: Path, *args: str) -> dict:
    result = CliRunner().invoke(eval_main, ["--model", str(checkpoint), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    """4 steps on the synthetic set, a checkpoint every 2, validated on a held-out folder (by default at each)."""
    root = tmp_path_factory.mktemp("val")
    result = CliRunner().invoke(train_main, ["--steps", "4", "--checkpoint-every", "2", "--val",
                                             str(pairs_folder(root / "held_out")), "--output", str(root / "run"),
                                             *FAST])
    assert result.exit_code == 0, result.output
    return root / "run"


def test_val_scores_are_logged_at_each_checkpoint_and_the_end(folder_run):
    records = val_records(folder_run)
    assert sorted(records) == [2, 4]
    assert {"val/psnr", "val/psnr_blemish", "val/ssim", "val/identity_psnr",
            "val/identity_psnr_blemish"} <= records[2].keys()


@pytest.mark.parametrize("step, checkpoint", [(2, "checkpoints/step_000002"), (4, "final")])
def test_val_scores_equal_what_langbrt_eval_reports_for_that_checkpoint(folder_run, step, checkpoint):
    held_out = TrainConfig.from_json(folder_run / "train_config.json").val
    evaluated = eval_json(folder_run / checkpoint, "--data", held_out)
    logged = val_records(folder_run)[step]
    assert {k: logged[f"val/{k}"] for k in ("psnr", "ssim", "psnr_blemish", "identity_psnr")} == \
        {k: evaluated[k] for k in ("psnr", "ssim", "psnr_blemish", "identity_psnr")}


def test_synthetic_val_equals_langbrt_eval_on_the_synthetic_test_split(tmp_path):
    result = CliRunner().invoke(train_main, ["--steps", "3", "--checkpoint-every", "3", "--val", "synthetic",
                                             "--val-every", "2", "--val-samples", "4", "--output",
                                             str(tmp_path / "run"), *FAST])
    assert result.exit_code == 0, result.output
    records = val_records(tmp_path / "run")
    assert sorted(records) == [2, 3]
    evaluated = eval_json(tmp_path / "run/final", "--data", "synthetic", "--num-samples", "4")
    assert records[3]["val/psnr_blemish"] == evaluated["psnr_blemish"]
    assert records[3]["val/detection_ap"] == evaluated["detection"]["ap"]


def test_a_resumed_run_keeps_validating(folder_run, tmp_path):
    result = CliRunner().invoke(train_main, ["--resume", str(folder_run / "final"), "--steps", "6", "--output",
                                             str(tmp_path / "more"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert TrainConfig.from_json(tmp_path / "more/train_config.json").val == \
        TrainConfig.from_json(folder_run / "train_config.json").val
    assert sorted(val_records(tmp_path / "more")) == [6]


def test_validation_leaves_the_trained_weights_unchanged(tmp_path):
    """Same seed, 4 steps, EMA and the discriminator on: with --val scored after every step, bit-identical, and
    the RNG states a checkpoint saves (which a resume continues from) are the same."""
    cfg = tiny_config(tmp_path / "plain", steps=4, checkpoint_every=2)
    train(cfg, progress=False)
    train(replace(cfg, output=str(tmp_path / "val"), val="synthetic", val_every=1, val_samples=2), progress=False)
    assert sorted(val_records(tmp_path / "val")) == [1, 2, 3, 4]
    for name in ("final/model.safetensors", "checkpoints/step_000002/model.safetensors"):
        plain, validated = load_file(tmp_path / "plain" / name), load_file(tmp_path / "val" / name)
        assert all(torch.equal(plain[k], validated[k]) for k in plain), name
    plain, validated = (load_trainer_state(tmp_path / run / "final") for run in ("plain", "val"))
    assert all(torch.equal(plain["model_raw"][k], validated["model_raw"][k]) for k in plain["model_raw"])
    assert all(torch.equal(plain["discriminator"][k], validated["discriminator"][k]) for k in plain["discriminator"])
    assert torch.equal(plain["rng"]["torch"], validated["rng"]["torch"])
    assert plain["rng"]["python"] == validated["rng"]["python"]
    assert torch.equal(plain["rng"]["numpy"][1], validated["rng"]["numpy"][1])


def test_a_bad_val_folder_is_one_error_line_before_the_output_exists(tmp_path):
    (tmp_path / "empty/source").mkdir(parents=True)
    result = CliRunner().invoke(train_main, ["--steps", "1", "--val", str(tmp_path / "empty"), "--output",
                                             str(tmp_path / "out"), *FAST])
    assert result.exit_code == 2 and result.output.startswith(ERROR) and result.output.count("\n") == 1
    assert "--val" in result.output and "target/" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_val_folder_whose_pairs_cannot_be_decoded_says_so_and_logs_no_nan_scores(tmp_path):
    """QA: every --val pair truncated printed 'PSNR nan dB' and wrote NaN (not JSON) into log.jsonl."""
    held_out = pairs_folder(tmp_path / "held_out", n=2)
    for source in (held_out / "source").iterdir():  # as JPEG, cut mid-scan: the header check passes, decoding fails
        jpeg = source.with_suffix(".jpg")
        Image.open(source).save(jpeg, quality=95)
        jpeg.write_bytes(jpeg.read_bytes()[:len(jpeg.read_bytes()) * 2 // 3])
        source.unlink()
    result = CliRunner().invoke(train_main, ["--steps", "2", "--val", str(held_out), "--output",
                                             str(tmp_path / "run"), *FAST])
    assert result.exit_code == 0, result.output
    assert "step 2 val: no --val pair could be decoded" in result.output and "nan" not in result.output
    log = (tmp_path / "run" / "log.jsonl").read_text()
    assert "NaN" not in log and not val_records(tmp_path / "run")


def test_val_pairs_answer_the_runs_prompts_and_their_folders_prompts_json(tmp_path):
    held_out = pairs_folder(tmp_path / "held_out")
    (held_out / "prompts.json").write_text(json.dumps({"p1": ["moles on the left cheek"]}))
    cfg = TrainConfig(data=str(pairs_folder(tmp_path / "train")), val=str(held_out), prompts=("acne on the cheeks",))
    val = build_validation(cfg, image_size=64)
    asked = {val.dataset[i]["name"]: val.dataset[i]["prompts"] for i in range(len(val.dataset))}
    assert asked == {"p0": ["acne on the cheeks"], "p1": ["moles on the left cheek"], "p2": ["acne on the cheeks"]}


def test_a_bad_prompts_json_in_the_val_folder_is_one_error_line_naming_val(tmp_path):
    held_out = pairs_folder(tmp_path / "held_out")
    (held_out / "prompts.json").write_text('{"p9": ["acne"]}')
    result = CliRunner().invoke(train_main, ["--steps", "1", "--val", str(held_out), "--output",
                                             str(tmp_path / "out"), *FAST])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"{ERROR}--val {held_out / 'prompts.json'}: 1 name matches no pair (p9)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("val", [".", "sub", ".."], ids=["same", "inside", "holding"])
def test_a_val_folder_that_is_or_overlaps_the_training_folder_is_refused(tmp_path, val):
    data = pairs_folder(tmp_path / "pairs" / "train")
    pairs_folder(data / "sub")
    result = CliRunner().invoke(train_main, ["--data", str(data), "--steps", "1", "--val", str(data / val),
                                             "--output", str(tmp_path / "out"), *FAST_ON_PAIRS])
    assert result.exit_code == 2 and result.output.startswith(ERROR) and result.output.count("\n") == 1
    assert "training folder" in result.output and "held-out" in result.output, result.output
    assert not (tmp_path / "out").exists()
