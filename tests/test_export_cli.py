"""`langbrt-export`: what it writes, what it prints, and how it refuses (one line, nothing written)."""

import importlib.util
import json
import re

import pytest
import torch

from langbrt import LangBRT, LangBRTConfig
from langbrt.artifact import ArtifactMetadata
from langbrt.errors import CheckpointError, LangBRTInputError
from langbrt.export.cli import main
from langbrt.export.onnx_export import read_onnx_metadata
from langbrt.export.tensorrt_export import check_engine_compatible, profile_shapes, rebuild_command, sidecar_path
from langbrt.export.triton_repo import RepoKind, config_pbtxt, write_triton_repository
from langbrt.text import default_text_encoder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder())
    model.embed_prompts(model.predefined_prompts)  # the bank answers the table without an encoder
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture()
def no_tensorrt(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorrt" else real(name, *a))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_onnx_export_prints_the_path_and_the_next_command(model_dir, tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    assert main(["--model", str(model_dir), "--format", "onnx", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed
    assert f"langbrt-infer photo.jpg --model {out} --backend onnxruntime" in printed
    assert read_onnx_metadata(out).extra_prompt_slots == 4


def test_prompt_option_adds_to_the_baked_table(model_dir, tmp_path):
    out = tmp_path / "more.onnx"
    assert main(["--model", str(model_dir), "--output", str(out), "--prompt", "Pimples on my chin",
                 "--extra-prompt-slots", "0"]) == 0
    metadata = read_onnx_metadata(out)
    assert metadata.prompts[-1] == "pimples on my chin" and metadata.extra_prompt_slots == 0


@pytest.mark.parametrize("args", [["--format", "onnx", "--fp16"], ["--format", "engine"]])
def test_without_tensorrt_an_engine_request_says_so_and_writes_nothing(model_dir, tmp_path, capsys, no_tensorrt,
                                                                        args):
    assert main(["--model", str(model_dir), "--output", str(tmp_path / "m.onnx"), *args]) == 1
    assert "TensorRT is not installed" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_without_a_gpu_fp16_says_so_and_writes_nothing(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--model", str(model_dir), "--output", str(tmp_path / "m.onnx"), "--fp16"]) == 1
    assert "no CUDA GPU" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_without_model_the_bundled_one_is_exported(tmp_path):
    assert main(["--output", str(tmp_path / "m.onnx")]) == 0
    assert read_onnx_metadata(tmp_path / "m.onnx").image_size == 256  # the bundled small() model


@pytest.mark.parametrize("case", ["missing", "corrupt", "no-folder", "empty-prompt"])
def test_bad_input_is_one_line_exit_2_and_no_output(model_dir, tmp_path, capsys, case):
    model, out, extra = model_dir, tmp_path / "out" / "m.onnx", []
    (tmp_path / "out").mkdir()
    if case == "missing":
        model = tmp_path / "nowhere"
    elif case == "corrupt":
        model = tmp_path / "corrupt"
        model.mkdir()
        (model / "config.json").write_text("{not json")
    elif case == "no-folder":
        out = tmp_path / "absent" / "m.onnx"
    else:
        extra = ["--prompt", "   "]
    assert main(["--model", str(model), "--output", str(out), *extra]) == 2
    message = _one_line_error(capsys)
    assert {"missing": "no such checkpoint", "corrupt": "unreadable", "no-folder": "does not exist",
            "empty-prompt": "prompt is empty"}[case] in message
    assert list((tmp_path / "out").iterdir()) == []


def _pbtxt_fields(text: str) -> dict[str, list[str]]:
    """A tiny reader for the scalar fields of config.pbtxt: key -> every value it takes."""
    fields: dict[str, list[str]] = {}
    for key, value in re.findall(r"^\s*(\w+): (.+)$", text, flags=re.MULTILINE):
        fields.setdefault(key, []).append(value.strip().strip('"'))
    return fields


def test_triton_repo_lays_out_config_model_and_metadata(model_dir, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert main(["--model", str(model_dir), "--format", "triton-repo", "--output", str(repo)]) == 0
    assert "tritonserver --model-repository" in capsys.readouterr().out
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")) == [
        "langbrt", "langbrt/1", "langbrt/1/model.onnx", "langbrt/config.pbtxt", "langbrt/langbrt.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # no staging leftovers
    fields = _pbtxt_fields((repo / "langbrt" / "config.pbtxt").read_text())
    assert fields["name"][0] == "langbrt" and fields["platform"] == ["onnxruntime_onnx"]
    assert fields["max_batch_size"] == ["32"] and fields["max_queue_delay_microseconds"] == ["2000"]
    assert fields["preferred_batch_size"] == ["[ 4, 8, 16 ]"]
    assert fields["kind"] == ["KIND_GPU"] and fields["count"] == ["1"]
    assert dict(zip(fields["name"][1:], fields["dims"], strict=True)) == {
        "images": "[ 3, 64, 64 ]", "prompt_weights": "[ 3 ]",
        "image": "[ 3, 64, 64 ]", "mask": "[ 1, 64, 64 ]", "maps": "[ 3, 64, 64 ]"}
    metadata = ArtifactMetadata.from_json((repo / "langbrt" / "langbrt.json").read_text(), "sidecar")
    assert metadata == read_onnx_metadata(repo / "langbrt" / "1" / "model.onnx")
    assert metadata.extra_prompt_slots == 0


def test_engine_config_asks_for_cuda_graphs_and_the_plan_platform(model_dir, tmp_path):
    assert main(["--model", str(model_dir), "--output", str(tmp_path / "m.onnx"), "--extra-prompt-slots", "0"]) == 0
    metadata = read_onnx_metadata(tmp_path / "m.onnx")
    text = config_pbtxt(metadata, model_name="langbrt", kind=RepoKind.ENGINE, max_batch_size=8,
                        preferred_batch_sizes=(4, 8), max_queue_delay_us=500, instances=2)
    assert 'platform: "tensorrt_plan"' in text and re.search(r"cuda \{\s*graphs: true\s*\}", text)


def test_triton_repo_refuses_an_export_with_extra_prompt_slots(model_dir, tmp_path):
    assert main(["--model", str(model_dir), "--output", str(tmp_path / "m.onnx")]) == 0
    with pytest.raises(LangBRTInputError, match="--extra-prompt-slots 0"):
        write_triton_repository(tmp_path / "m.onnx", tmp_path / "repo")
    assert not (tmp_path / "repo" / "langbrt").exists()


def test_profile_shapes_span_the_batch_sizes_with_the_middle_one_as_optimum():
    assert profile_shapes([-1, 3, 64, 64], (32, 1, 8)) == ([1, 3, 64, 64], [8, 3, 64, 64], [32, 3, 64, 64])


def test_engine_mismatch_names_what_differs_and_the_rebuild_command(tmp_path):
    command = rebuild_command(tmp_path / "m.plan", "runs/ckpt", (1, 8, 32))
    metadata = ArtifactMetadata(image_size=64, prompts=["acne"], predefined_index=[-1], text_encoder="x",
                                text_dim=4, model_hash="0", extra_prompt_slots=0, precision="fp16",
                                extras={"tensorrt": "10.9.0", "compute_capability": "9.0",
                                        "rebuild_command": command})
    sidecar_path(tmp_path / "m.plan").write_text(metadata.to_json())
    check_engine_compatible(tmp_path / "m.plan", "10.9.0", "9.0")
    with pytest.raises(CheckpointError, match=r"TensorRT 10\.9\.0, this machine has 10\.11\.0.*--fp16"):
        check_engine_compatible(tmp_path / "m.plan.json", "10.11.0", "9.0")
    with pytest.raises(CheckpointError, match=r"compute capability 9\.0, this GPU is 8\.9") as err:
        check_engine_compatible(metadata, "10.9.0", "8.9")
    assert "langbrt-export --model runs/ckpt --format engine" in str(err.value)


def test_sidecar_json_is_valid_artifact_metadata_shape(tmp_path):
    assert sidecar_path(tmp_path / "model.plan").name == "model.plan.json"
    assert json.loads(ArtifactMetadata(64, [], [], "x", 4, "0", 0).to_json())["format"] == "langbrt-artifact"


def test_a_single_file_checkpoint_exports_and_its_hash_is_the_file_sha256(model_dir, tmp_path, capsys):
    import hashlib

    single = LangBRT.from_pretrained(model_dir).save_pretrained(tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    assert main(["--model", str(single), "--output", str(out)]) == 0
    assert read_onnx_metadata(out).model_hash == hashlib.sha256(single.read_bytes()).hexdigest()
