"""Checkpoints: round trip, atomic layout, and one clear error for every kind of mismatch."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from langbrt import CheckpointError, LangBRT, LangBRTConfig, LangBRTInputError, OutputWriteError
from langbrt import checkpoint as checkpoint_module
from langbrt.text import default_text_encoder


class OtherEncoder:
    name = "open_clip:ViT-B-16"
    dim = 512

    def encode(self, texts):
        return torch.nn.functional.normalize(torch.randn(len(texts), 512), dim=-1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder()).eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(images, [["acne on the right cheek", "forehead wrinkles"]]).image
    directory = model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "model")
    return directory, images, expected


def test_round_trip_gives_identical_outputs(saved):
    directory, images, expected = saved
    model = LangBRT.from_pretrained(directory)
    with torch.no_grad():
        got = model(images, [["acne on the right cheek", "forehead wrinkles"]]).image
    assert torch.equal(got, expected)


def test_saved_prompts_need_no_text_encoder(saved):
    model = LangBRT.from_pretrained(directory := saved[0])
    assert "acne on the right cheek" in model.prompt_bank
    assert json.loads((directory / "config.json").read_text())["prompts"]


def test_checkpoint_holds_only_safetensors_and_json(saved):
    names = sorted(p.name for p in saved[0].iterdir())
    assert names == ["config.json", "model.safetensors", "prompt_bank.safetensors"]


def test_checkpoint_files_get_the_mode_a_plain_open_gives(saved):
    """safetensors' save_file leaves its files 0600 (QA: a checkpoint folder had config.json 0644 but its
    weights 0600, so a server running as another user could read the config and not the weights)."""
    from langbrt.atomic import new_file_mode

    for name in ("config.json", "model.safetensors", "prompt_bank.safetensors"):
        assert (saved[0] / name).stat().st_mode & 0o777 == new_file_mode(), name


def test_other_text_encoder_is_a_named_mismatch(saved):
    with pytest.raises(CheckpointError, match="text encoder mismatch.*minilm.*open_clip:ViT-B-16"):
        LangBRT.from_pretrained(saved[0], text_encoder=OtherEncoder())


def test_other_config_is_a_named_mismatch(saved):
    with pytest.raises(CheckpointError, match="depth: expected 3, checkpoint has 2"):
        LangBRT.from_pretrained(saved[0], expected_config=LangBRTConfig.tiny(depth=3))


def test_weights_of_another_shape_are_named(saved, tmp_path):
    directory = saved[0]
    config = json.loads((directory / "config.json").read_text())
    config["model"]["mlp_ratio"] = 4.0
    for name in ("model.safetensors", "prompt_bank.safetensors"):
        (tmp_path / name).write_bytes((directory / name).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"weights do not fit the model its config describes \(0 missing, "
                                              r"0 unexpected, \d+ reshaped, e\.g\. .*mlp.* \(saved \(") as err:
        LangBRT.from_pretrained(tmp_path)
    assert str(err.value).startswith(str(tmp_path)) and "\n" not in str(err.value)


@pytest.mark.parametrize(("damage", "says"), [("no_config", "no config.json"), ("bad_json", "unreadable"),
                                             ("no_weights", "model.safetensors is missing"),
                                             ("corrupt_weights", "corrupt weights"),
                                             ("a_file", "not a LangBRT checkpoint")])
def test_broken_checkpoints_raise_one_clear_error(saved, tmp_path, damage, says):
    target = tmp_path / "ckpt"
    target.mkdir()
    for p in saved[0].iterdir():
        (target / p.name).write_bytes(p.read_bytes())
    if damage == "no_config":
        (target / "config.json").unlink()
    elif damage == "bad_json":
        (target / "config.json").write_text("{not json")
    elif damage == "no_weights":
        (target / "model.safetensors").unlink()
    elif damage == "corrupt_weights":
        (target / "model.safetensors").write_bytes(b"garbage" * 10)
    else:
        target = target / "config.json"
    with pytest.raises(CheckpointError) as err:
        LangBRT.from_pretrained(target)
    message = str(err.value)
    assert message.startswith(str(target)) and "\n" not in message and says in message, message


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"embed_dim": 31}, "embed_dim 31 is not divisible by num_heads"),
        ({"window_size": 0}, "window_size must be at least 1"),
        ({"image_size": "64"}, "image_size must be int"),
        ({"image_size": -64}, "image_size must be at least 1"),
        ({"map_threshold": float("nan")}, "map_threshold"),
        ({"encoder_channels": [16, 24]}, "must equal embed_dim"),
        ({"predefined_prompts": "acne"}, "predefined_prompts must be a list of str"),
        ({"attention": "x"}, "attention must be one of"),
        ({"mlp_ratio": 1e308}, "mlp_ratio in (0, 64.0]"),
        ({"image_size": 1_000_000}, "image_size is at most 4096"),
        # Sizes that made the model allocate without bound before any error (18 GB for depth 1e9):
        ({"depth": 1_000_000_000}, "depth is at most 64, got 1000000000"),
        ({"depth": 100_000}, "depth is at most 64"),
        ({"position_frequencies": 100_000_000}, "position_frequencies is at most 16"),
        ({"num_heads": 32768, "embed_dim": 32768}, "num_heads is at most 64"),
        ({"window_size": 100_000}, "window_size is at most 64"),
        ({"discriminator_channels": 1_000_000}, "discriminator_channels is at most 512"),
        ({"encoder_channels": [16] * 1000 + [32]}, "encoder_channels is at most 11 entries, got 1001 entries"),
        ({"predefined_prompts": ["x"] * 100_000}, "predefined_prompts is at most 64 entries"),
        ({"predefined_prompts": ["", "x"]}, "model config: predefined_prompts[0]: prompt is empty: ''"),
        ({"learned_prompts": ["a", "\u0000"]}, "model config: learned_prompts[1]: prompt contains a control"),
        ({"predefined_prompts": ["acne", "Acne "]}, "predefined_prompts[1] repeats predefined_prompts[0]"),
        ({"learned_prompts": ["a", "b", "A"]}, "learned_prompts[2] repeats learned_prompts[0]"),
        (None, "model config must be a JSON object"),
    ],
)
def test_an_edited_config_json_is_one_line_naming_the_field(saved, tmp_path, edit, message):
    """config.json is a file people edit: a value no model can be built from is a CheckpointError, not an
    AssertionError, ZeroDivisionError or TypeError from deep inside the model."""
    config = json.loads((saved[0] / "config.json").read_text())
    if edit is None:
        config["model"] = None
    else:
        config["model"].update(edit)
    for name in ("model.safetensors", "prompt_bank.safetensors"):
        (tmp_path / name).write_bytes((saved[0] / name).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        LangBRT.from_pretrained(tmp_path)
    assert message in str(err.value) and str(err.value).startswith(str(tmp_path)) and "\n" not in str(err.value)


@pytest.mark.parametrize(("version", "message"), [("x", "format_version must be int, got 'x'"),
                                                  (-1, "format_version must be >= 0, got -1"),
                                                  (2, "written by a newer LangBRT")])
def test_an_edited_format_version_is_one_line_naming_the_file(saved, tmp_path, version, message):
    config = json.loads((saved[0] / "config.json").read_text())
    config["format_version"] = version
    for name in ("model.safetensors", "prompt_bank.safetensors"):
        (tmp_path / name).write_bytes((saved[0] / name).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        LangBRT.from_pretrained(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'config.json'}: {message}") and "\n" not in str(err.value)


def test_a_config_built_in_code_is_checked_the_same_way():
    with pytest.raises(LangBRTInputError, match="window_size must be at least 1"):
        LangBRTConfig.tiny(window_size=0)


def test_failed_save_leaves_no_temporary_files(tmp_path, monkeypatch):
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder())

    def explode(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("langbrt.checkpoint.save_file", explode)
    with pytest.raises(OutputWriteError, match=f"cannot write checkpoint to {tmp_path / 'm'}: No space left"):
        model.save_pretrained(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["m", "m.safetensors"])
def test_a_full_disk_as_safetensors_reports_it_is_one_line(tmp_path, monkeypatch, name):
    """safetensors raises SafetensorError, not OSError, for ENOSPC (measured on a 256 KiB tmpfs)."""
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint_module, "save_file", full)
    with pytest.raises(OutputWriteError) as err:
        LangBRT(LangBRTConfig.tiny()).save_pretrained(tmp_path / name)
    assert str(err.value) == f"cannot write checkpoint to {tmp_path / name}: No space left on device (os error 28)"
    assert list(tmp_path.iterdir()) == []


def _files(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_a_failed_overwrite_keeps_the_old_checkpoint_whole(tmp_path, monkeypatch):
    """The disk fills after the new weights are written: the old checkpoint must still load, unchanged."""
    LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder()).save_pretrained(tmp_path / "m")
    before = _files(tmp_path / "m")
    real_save_file, calls = checkpoint_module.save_file, []

    def fail_on_the_prompt_bank(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_save_file(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", fail_on_the_prompt_bank)
    with pytest.raises(OutputWriteError, match="No space left"):
        LangBRT(LangBRTConfig.tiny(depth=3), text_encoder=default_text_encoder()).save_pretrained(tmp_path / "m")
    assert [p.name for p in tmp_path.iterdir()] == ["m"] and _files(tmp_path / "m") == before
    assert LangBRT.from_pretrained(tmp_path / "m").config.depth == 2


def test_an_overwrite_replaces_every_file_of_the_old_checkpoint(tmp_path):
    LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder()).save_pretrained(tmp_path / "m")
    LangBRT(LangBRTConfig.tiny(depth=3), text_encoder=default_text_encoder()).save_pretrained(tmp_path / "m")
    assert LangBRT.from_pretrained(tmp_path / "m").config.depth == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_saving_into_a_folder_with_other_files_is_refused_and_deletes_nothing(tmp_path):
    """The folder is replaced whole: what is not a checkpoint's would be lost, so the save is refused."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=r"holds 1 file\(s\) that are not a checkpoint's \(e.g. notes.txt\)"):
        LangBRT(LangBRTConfig.tiny()).save_pretrained(tmp_path / "m")
    assert _files(tmp_path / "m") == {"notes.txt": b"mine"}


def test_saving_over_a_file_is_refused(tmp_path):
    (tmp_path / "m").write_text("mine")
    with pytest.raises(CheckpointError, match="it is a file, not a folder"):
        LangBRT(LangBRTConfig.tiny()).save_pretrained(tmp_path / "m")
    assert (tmp_path / "m").read_text() == "mine"


def test_saving_through_a_symlink_writes_the_folder_it_points_to(tmp_path):
    (tmp_path / "step_1").mkdir()
    (tmp_path / "latest").symlink_to("step_1")
    LangBRT(LangBRTConfig.tiny()).save_pretrained(tmp_path / "latest")
    assert (tmp_path / "latest").is_symlink() and (tmp_path / "step_1" / "config.json").is_file()


# --- the single-file form: one .safetensors with the config in its metadata ---


def test_single_file_round_trip_gives_identical_outputs_without_a_text_encoder(saved, tmp_path):
    directory, images, expected = saved
    path = LangBRT.from_pretrained(directory).save_pretrained(tmp_path / "model.safetensors")
    assert path.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    model = LangBRT.from_pretrained(path)  # prompts come from the file's own bank
    with torch.no_grad():
        got = model(images, [["acne on the right cheek", "forehead wrinkles"]]).image
    assert torch.equal(got, expected)


def test_single_file_works_wherever_a_checkpoint_folder_does(saved, tmp_path):
    from langbrt.runtime import Retoucher

    path = LangBRT.from_pretrained(saved[0]).save_pretrained(tmp_path / "m.safetensors")
    photo = torch.rand(3, 40, 52, generator=torch.Generator().manual_seed(0))
    a = Retoucher.load(path).retouch([photo], ["forehead wrinkles"])[0]
    b = Retoucher.load(saved[0]).retouch([photo], ["forehead wrinkles"])[0]
    assert torch.equal(a.image, b.image)


def test_the_weights_file_inside_a_checkpoint_folder_names_the_folder(saved):
    """QA, 2026-11-26: `--model run/final/model.safetensors` (the help offers a .safetensors file) said 'not a
    LangBRT checkpoint'; it is one, passed by its weights file."""
    weights = Path(saved[0]) / "model.safetensors"
    folder = re.escape(str(saved[0]))
    with pytest.raises(CheckpointError, match=rf"is the weights file of the checkpoint folder {folder}: pass the fold"):
        LangBRT.from_pretrained(weights)


def test_foreign_or_broken_safetensors_files_raise_one_clear_error(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a LangBRT checkpoint"):
        LangBRT.from_pretrained(foreign)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        LangBRT.from_pretrained(broken)


def test_single_file_into_a_missing_folder_is_refused_and_writes_nothing(tmp_path):
    model = LangBRT(LangBRTConfig.tiny())
    with pytest.raises(CheckpointError, match="does not exist"):
        model.save_pretrained(tmp_path / "nope" / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_the_configs_attention_names_are_the_dispatchers():
    from langbrt.config import ATTENTION_IMPLS
    from langbrt.kernels import AttentionImpl

    assert set(ATTENTION_IMPLS) == {impl.value for impl in AttentionImpl}


@pytest.mark.parametrize(("config", "why"), [("1" * 5000, "a number of more than 4300 digits"),
                                             ("[" * 100_000, "nested too deeply")])
def test_a_single_file_whose_config_metadata_cannot_be_parsed_is_one_line(tmp_path, config, why):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={checkpoint_module.CONFIG_KEY: config})
    with pytest.raises(CheckpointError, match=f"^{path}: unreadable checkpoint config \\({why}\\)$"):
        LangBRT.from_pretrained(path)


def test_an_empty_prompt_in_the_configs_prompt_bank_is_one_line_naming_the_checkpoint(tmp_path):
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder())
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64), [["acne on the chin"]])  # puts the prompt in the bank
    directory = model.save_pretrained(tmp_path / "m")
    config = json.loads((directory / "config.json").read_text())
    config["prompts"] = [" "]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"^{directory}: the config's prompts: prompt is empty: ' '"):
        LangBRT.from_pretrained(directory)


def test_a_weight_holding_nan_is_refused_by_name(saved, tmp_path):
    """QA, 2026-11-26: a checkpoint with NaN in one bias loaded, and langbrt-infer wrote images half black."""
    from safetensors.torch import load_file, save_file

    directory, _, _ = saved
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in directory.iterdir():
        (damaged / path.name).write_bytes(path.read_bytes())
    weights_file = damaged / checkpoint_module.WEIGHTS_FILE
    weights = load_file(str(weights_file))
    name = sorted(k for k, v in weights.items() if v.is_floating_point())[3]
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, str(weights_file))
    with pytest.raises(CheckpointError, match=f"weight {name} holds NaN or infinity"):
        LangBRT.from_pretrained(damaged)


def _training_run(saved, root: Path, *, final: bool) -> Path:
    """The layout `langbrt-train --output root` leaves: checkpoints/step_NNNNNN/ and, once done, final/."""
    directory = saved[0]
    for step in ("step_000002", "step_000004"):
        shutil.copytree(directory, root / "checkpoints" / step)
    if final:
        shutil.copytree(directory, root / "final")
    (root / "log.jsonl").write_text("", encoding="utf-8")
    return root


def test_a_training_runs_folder_names_its_final_checkpoint(saved, tmp_path):
    """`--output runs/mine` then `--model runs/mine` is what one types; 'no config.json' left the fix unsaid."""
    run = _training_run(saved, tmp_path / "run", final=True)
    with pytest.raises(CheckpointError, match=re.escape(f"training run's folder: pass its final checkpoint, "
                                                        f"{run / 'final'}")):
        LangBRT.from_pretrained(run)
    assert isinstance(LangBRT.from_pretrained(run / "final"), LangBRT)
    assert isinstance(LangBRT.from_pretrained(run / "checkpoints" / "step_000002"), LangBRT)


def test_a_run_without_final_or_its_checkpoints_folder_names_the_latest_step(saved, tmp_path):
    run = _training_run(saved, tmp_path / "run", final=False)
    latest = run / "checkpoints" / "step_000004"
    for given in (run, run / "checkpoints"):
        with pytest.raises(CheckpointError, match=re.escape(f"holds training checkpoints: pass one, e.g. the "
                                                            f"latest, {latest}")):
            LangBRT.from_pretrained(given)


def test_a_folder_that_holds_no_checkpoint_says_only_that(tmp_path):
    with pytest.raises(CheckpointError, match=r"not a LangBRT checkpoint \(no config.json\)$"):
        LangBRT.from_pretrained(tmp_path)
