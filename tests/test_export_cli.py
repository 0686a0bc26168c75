"""`langbrt-export`: what it writes, what it prints, and how it refuses (one line, nothing written)."""

import errno
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import sys
import time
import types
from pathlib import Path
from unittest import mock

import pytest
import torch
from fake_tensorrt import Terminal, fake_tensorrt
from fake_tensorrt import install as install_tensorrt
from onnx import checker as onnx_checker

from langbrt import LangBRT, LangBRTConfig
from langbrt.artifact import (
    ENGINE_DIGEST_KEY,
    MAX_ENGINE_PROMPTS,
    MAX_EXTRA_PROMPT_SLOTS,
    OPT_ENGINE_PROMPTS,
    ArtifactMetadata,
)
from langbrt.errors import CheckpointError, LangBRTInputError
from langbrt.export import exporter as exporter_module
from langbrt.export import triton_repo as triton_repo_module
from langbrt.export.cli import main
from langbrt.export.exporter import FORMATS
from langbrt.export.onnx_export import max_opset, read_onnx_metadata
from langbrt.export.tensorrt_export import (
    check_engine_compatible,
    profile_shapes,
    read_engine_sidecar,
    rebuild_command,
    sidecar_path,
)
from langbrt.export.triton_repo import InstanceKind, RepoKind, config_pbtxt, write_triton_repository
from langbrt.orphan_cleanup import ORPHAN_AGE_SECONDS
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


def test_json_prints_one_object_a_script_can_parse(model_dir, tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    assert main(["--model", str(model_dir), "--output", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"output": str(out), "written": [str(out)],
                      "next_command": f"langbrt-infer photo.jpg --model {out} --backend onnxruntime"}


def test_the_next_command_pastes_into_a_shell_whatever_the_output_path(model_dir, tmp_path, capsys):
    """A path with a space or a shell character was printed bare: pasted, it split into several arguments."""
    out = tmp_path / "my exports" / "retouch (v2).onnx"
    out.parent.mkdir()
    assert main(["--model", str(model_dir), "--output", str(out), "--json"]) == 0
    command = shlex.split(json.loads(capsys.readouterr().out)["next_command"])
    assert command == ["langbrt-infer", "photo.jpg", "--model", str(out), "--backend", "onnxruntime"]


def test_prompt_option_adds_to_the_baked_table(model_dir, tmp_path):
    out = tmp_path / "more.onnx"
    assert main(["--model", str(model_dir), "--output", str(out), "--prompt", "Pimples on my chin",
                 "--extra-prompt-slots", "0"]) == 0
    metadata = read_onnx_metadata(out)
    assert metadata.prompts[-1] == "pimples on my chin" and metadata.extra_prompt_slots == 0


@pytest.mark.parametrize("args, output, asked_by", [(["--format", "onnx", "--fp16"], "m.onnx", "--fp16 builds"),
                                                    (["--format", "engine"], "m.plan", "--format engine builds")])
def test_without_tensorrt_an_engine_request_names_its_flag_and_writes_nothing(model_dir, tmp_path, capsys,
                                                                              no_tensorrt, args, output, asked_by):
    assert main(["--model", str(model_dir), "--output", str(tmp_path / output), *args]) == 1
    message = _one_line_error(capsys)
    assert "TensorRT is not installed" in message and message.startswith(f"langbrt-export: error: {asked_by}")
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
    assert fields["kind"] == ["KIND_AUTO"] and fields["count"] == ["1"]  # the server's GPU if any, else its CPU
    assert dict(zip(fields["name"][1:], fields["dims"], strict=True)) == {
        "images": "[ 3, 64, 64 ]", "prompt_index": "[ -1 ]", "prompt_weights": "[ -1 ]",
        "image": "[ 3, 64, 64 ]", "mask": "[ 1, 64, 64 ]", "maps": "[ -1, 64, 64 ]"}  # -1: prompts per image
    assert fields["data_type"] == ["TYPE_FP32", "TYPE_INT32", *["TYPE_FP32"] * 4]
    metadata = ArtifactMetadata.from_json((repo / "langbrt" / "langbrt.json").read_text(), "sidecar")
    assert metadata == read_onnx_metadata(repo / "langbrt" / "1" / "model.onnx")
    assert metadata.extra_prompt_slots == 0


def test_a_triton_repo_export_replaces_its_own_model_folder(model_dir, tmp_path):
    repo = tmp_path / "repo"
    for _ in range(2):  # the second run replaces what the first wrote
        assert main(["--model", str(model_dir), "--format", "triton-repo", "--output", str(repo)]) == 0
    assert (repo / "langbrt" / "1" / "model.onnx").is_file()


@pytest.mark.parametrize("kind", ["user-files", "another-version", "a-file"])
def test_a_triton_repo_export_never_deletes_a_model_folder_it_did_not_write(model_dir, tmp_path, capsys, kind):
    """The export replaces <repo>/langbrt whole: a folder of that name holding anything else (a user's files,
    a version 2 the user added) or a file of that name was deleted without a word (QA)."""
    repo = tmp_path / "repo"
    target = repo / "langbrt"
    if kind == "a-file":
        repo.mkdir()
        target.write_text("notes")
    else:
        extra = target / ("src/notes.txt" if kind == "user-files" else "2/model.onnx")
        extra.parent.mkdir(parents=True)
        extra.write_text("keep me")
    before = _tree(repo)
    assert main(["--model", str(model_dir), "--format", "triton-repo", "--output", str(repo)]) == 2
    assert str(target) in _one_line_error(capsys)
    assert _tree(repo) == before and sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_instance_kind_cpu_lays_out_a_repository_a_cpu_only_server_loads(model_dir, tmp_path):
    """KIND_GPU was written whatever the user's server had: a CPU-only Triton (onnxruntime backend) refused to
    load the model."""
    repo = tmp_path / "repo"
    assert main(["--model", str(model_dir), "--format", "triton-repo", "--output", str(repo),
                 "--instance-kind", "cpu"]) == 0
    assert _pbtxt_fields((repo / "langbrt" / "config.pbtxt").read_text())["kind"] == ["KIND_CPU"]


@pytest.mark.parametrize("instance_kind, expected", [("auto", "KIND_AUTO"), ("gpu", "KIND_GPU"), ("cpu", "KIND_CPU")])
def test_an_onnx_model_runs_where_instance_kind_says(model_dir, tmp_path, instance_kind, expected):
    assert main(["--model", str(model_dir), "--output", str(tmp_path / "m.onnx"), "--extra-prompt-slots", "0"]) == 0
    text = config_pbtxt(read_onnx_metadata(tmp_path / "m.onnx"), model_name="langbrt", kind=RepoKind.ONNX,
                        max_batch_size=8, preferred_batch_sizes=(4, 8), max_queue_delay_us=500, instances=1,
                        instance_kind=InstanceKind(instance_kind))
    assert _pbtxt_fields(text)["kind"] == [expected]


def test_an_engine_always_runs_on_a_gpu_and_is_refused_a_cpu(model_dir, tmp_path):
    """Triton's TensorRT backend loads only KIND_GPU instances: KIND_AUTO would fall to the CPU on a server
    without a GPU and fail there less clearly."""
    assert main(["--model", str(model_dir), "--output", str(tmp_path / "m.onnx"), "--extra-prompt-slots", "0"]) == 0
    metadata = read_onnx_metadata(tmp_path / "m.onnx")
    options = dict(model_name="langbrt", kind=RepoKind.ENGINE, max_batch_size=8, preferred_batch_sizes=(4, 8),
                   max_queue_delay_us=500, instances=1)
    for instance_kind in (InstanceKind.AUTO, InstanceKind.GPU):
        assert _pbtxt_fields(config_pbtxt(metadata, **options, instance_kind=instance_kind))["kind"] == ["KIND_GPU"]
    with pytest.raises(LangBRTInputError, match="runs only on a GPU"):
        config_pbtxt(metadata, **options, instance_kind=InstanceKind.CPU)


def test_instance_kind_cpu_with_fp16_is_refused_before_anything_is_checked_or_written(model_dir, tmp_path, capsys,
                                                                                       no_tensorrt):
    """An engine cannot run on a CPU instance: a bad combination of flags (exit 2), said before TensorRT is even
    looked for (which would be exit 1 here)."""
    assert main(["--model", str(model_dir), "--format", "triton-repo", "--output", str(tmp_path / "repo"),
                 "--fp16", "--instance-kind", "cpu"]) == 2
    assert "runs only on a GPU" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt, output", [("onnx", "m.onnx"), ("engine", "m.plan")])
def test_instance_kind_outside_a_triton_repo_is_refused_not_ignored(model_dir, tmp_path, capsys, fmt, output):
    assert main(["--model", str(model_dir), "--format", fmt, "--output", str(tmp_path / output),
                 "--instance-kind", "cpu"]) == 2
    assert "--instance-kind applies only to --format triton-repo" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_engine_config_asks_for_cuda_graphs_and_the_plan_platform(model_dir, tmp_path):
    assert main(["--model", str(model_dir), "--output", str(tmp_path / "m.onnx"), "--extra-prompt-slots", "0"]) == 0
    metadata = read_onnx_metadata(tmp_path / "m.onnx")
    text = config_pbtxt(metadata, model_name="langbrt", kind=RepoKind.ENGINE, max_batch_size=8,
                        preferred_batch_sizes=(4, 8), max_queue_delay_us=500, instances=2)
    assert 'platform: "tensorrt_plan"' in text and re.search(r"cuda \{\s*graphs: true\s", text)


def test_triton_repo_refuses_an_export_with_extra_prompt_slots(model_dir, tmp_path):
    assert main(["--model", str(model_dir), "--output", str(tmp_path / "m.onnx")]) == 0
    with pytest.raises(LangBRTInputError, match="--extra-prompt-slots 0"):
        write_triton_repository(tmp_path / "m.onnx", tmp_path / "repo")
    assert not (tmp_path / "repo" / "langbrt").exists()


def test_extra_prompt_slots_asked_of_a_triton_repo_are_refused_not_dropped(model_dir, tmp_path, capsys):
    """A Triton repository carries no extra prompt slots; asking for some must not export one without them."""
    repo = tmp_path / "repo"
    assert main(["--model", str(model_dir), "--format", "triton-repo", "--output", str(repo),
                 "--extra-prompt-slots", "3"]) == 2
    assert "--extra-prompt-slots 3" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []
    assert main(["--model", str(model_dir), "--format", "triton-repo", "--output", str(repo),
                 "--extra-prompt-slots", "0"]) == 0  # what the repository has anyway


def test_profile_shapes_span_the_batch_sizes_with_the_middle_one_as_optimum():
    assert profile_shapes([-1, 3, 64, 64], (32, 1, 8)) == ([1, 3, 64, 64], [8, 3, 64, 64], [32, 3, 64, 64])
    # from 1 whatever the smallest size: one photo, a partial batch or a dynamic batcher must still run
    assert profile_shapes([-1, 3, 64, 64], (8, 32)) == ([1, 3, 64, 64], [32, 3, 64, 64], [32, 3, 64, 64])


def test_profile_shapes_of_the_prompt_inputs_span_1_to_the_engine_prompt_limit():
    """prompt_index / prompt_weights (B, K): K is what each call asks, from 1 prompt per image to
    MAX_ENGINE_PROMPTS, tuned for the 3 pre-defined ones."""
    assert profile_shapes([-1, -1], (1, 8, 32)) == ([1, 1], [8, OPT_ENGINE_PROMPTS], [32, MAX_ENGINE_PROMPTS])
    assert profile_shapes([-1, 4], (1, 8)) == ([1, 4], [8, 4], [8, 4])  # extra_weights (B, E): E fixed


def test_an_artifact_of_the_first_format_is_refused_with_the_way_out():
    """Format 1 graphs returned a full-size map for every baked prompt (2 079 for the bundled model) and took
    (B, T) weights: the runtime cannot feed them, and re-exporting from the checkpoint fixes it."""
    data = json.loads(ArtifactMetadata(64, ["acne"], [-1], "x", 4, "0", 0).to_json())
    data["format_version"] = 1
    with pytest.raises(CheckpointError, match=r"^m\.onnx: exported by an older LangBRT \(format version 1, .*"
                                              r"export it again from its checkpoint with langbrt-export$"):
        ArtifactMetadata.from_json(json.dumps(data), "m.onnx")


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


def test_an_export_removes_the_old_temporaries_a_killed_export_left_beside_its_output(model_dir, tmp_path):
    orphan, fresh = tmp_path / ".m.onnx.k1ll3d_x.tmp", tmp_path / ".m.onnx.writing.tmp"
    for path in (orphan, fresh):
        path.write_bytes(b"half an ONNX file")
    long_ago = time.time() - 2 * ORPHAN_AGE_SECONDS
    os.utime(orphan, (long_ago, long_ago))
    assert main(["--model", str(model_dir), "--output", str(tmp_path / "m.onnx")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.onnx.writing.tmp", "m.onnx"]


def test_a_triton_repo_export_removes_the_old_staging_folders_a_killed_export_left(model_dir, tmp_path):
    """SIGKILL runs no cleanup: a killed triton-repo export left its hidden ONNX folder beside the repository and
    its model's staging folder inside it, which no later export removed (QA)."""
    repo = tmp_path / "repo"
    beside, inside, fresh = (tmp_path / ".repo.k1ll3d_x.partial", repo / ".langbrt.k1ll3d_x.partial",
                             tmp_path / ".repo.wr1t1ng_.partial")
    for folder in (beside, inside, fresh):
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"half an ONNX file")
    long_ago = time.time() - 2 * ORPHAN_AGE_SECONDS
    for folder in (beside, inside):
        os.utime(folder, (long_ago, long_ago))
    assert main(["--model", str(model_dir), "--format", "triton-repo", "--output", str(repo)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".repo.wr1t1ng_.partial", "repo"]
    assert sorted(p.name for p in repo.iterdir()) == ["langbrt"]


def test_a_single_file_checkpoint_exports_and_its_hash_is_the_file_sha256(model_dir, tmp_path, capsys):
    single = LangBRT.from_pretrained(model_dir).save_pretrained(tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    assert main(["--model", str(single), "--output", str(out)]) == 0
    assert read_onnx_metadata(out).model_hash == hashlib.sha256(single.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ outputs never replace inputs


def _tree(root):
    """Every file under `root` (or `root` itself) -> sha256, to show an input is untouched."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture()
def own_checkpoint(model_dir, tmp_path):
    """A private copy of the checkpoint folder and a single-file one, so a test may see them damaged."""
    folder = Path(shutil.copytree(model_dir, tmp_path / "ckpt"))
    single = LangBRT.from_pretrained(model_dir).save_pretrained(tmp_path / "single.safetensors")
    return folder, single


@pytest.mark.parametrize("model, output", [("single.safetensors", "single.safetensors"),
                                           ("ckpt", "ckpt/model.safetensors"), ("ckpt", "ckpt/config.json"),
                                           ("ckpt", "ckpt/m.onnx")])
def test_an_output_that_is_or_lies_in_the_input_is_refused_and_the_input_is_untouched(own_checkpoint, tmp_path,
                                                                                       capsys, model, output):
    before = _tree(tmp_path / model)
    assert main(["--model", str(tmp_path / model), "--output", str(tmp_path / output)]) == 2
    assert "the input" in _one_line_error(capsys)
    assert _tree(tmp_path / model) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt", "single.safetensors"]


@pytest.mark.parametrize("output, says", [("ckpt", "is the input"), ("ckpt/repo", "is inside the input"),
                                          (".", "contains the input"), ("small.png", "is a file"),
                                          ("absent/repo", "does not exist")])
def test_a_triton_repo_folder_is_checked_before_any_export(own_checkpoint, tmp_path, capsys, monkeypatch,
                                                           output, says):
    monkeypatch.chdir(tmp_path)
    Path("small.png").write_bytes(b"\x89PNG")
    before = _tree(tmp_path)
    assert main(["--model", "ckpt", "--format", "triton-repo", "--output", output]) == 2
    message = _one_line_error(capsys)
    assert says in message and ".artifacts" not in message
    assert _tree(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt", "single.safetensors", "small.png"]


def test_a_timing_cache_that_is_the_checkpoint_is_refused(own_checkpoint, tmp_path, capsys):
    folder, _ = own_checkpoint
    before = _tree(folder)
    assert main(["--model", str(folder), "--format", "engine", "--output", str(tmp_path / "m.plan"),
                 "--timing-cache", str(folder / "model.safetensors")]) == 2
    assert "--timing-cache" in _one_line_error(capsys)
    assert _tree(folder) == before


# ----------------------------------------------------------------------------------------------- Ctrl-C


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_during_an_onnx_export_is_one_line_exit_130_and_leaves_no_file(model_dir, tmp_path, capsys,
                                                                            monkeypatch):
    monkeypatch.setattr(onnx_checker, "check_model", _interrupt)  # inside the atomic write of the ONNX file
    assert main(["--model", str(model_dir), "--output", str(tmp_path / "m.onnx")]) == 130
    assert _one_line_error(capsys) == "langbrt-export: interrupted; nothing was written"
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_a_triton_repo_export_leaves_no_folder(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(triton_repo_module.shutil, "copyfile", _interrupt)  # after the repo folder was made
    assert main(["--model", str(model_dir), "--format", "triton-repo", "--output", str(tmp_path / "repo")]) == 130
    assert "interrupted" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []  # no repo/, no hidden ONNX folder beside it


def test_ctrl_c_during_an_engine_build_keeps_only_the_finished_onnx_and_says_so(model_dir, tmp_path, capsys,
                                                                               monkeypatch):
    monkeypatch.setattr(exporter_module, "require_tensorrt", lambda asked_by: None)
    monkeypatch.setattr(exporter_module, "build_engine", _interrupt)
    assert main(["--model", str(model_dir), "--format", "engine", "--output", str(tmp_path / "m.plan")]) == 130
    assert _one_line_error(capsys) == f"langbrt-export: interrupted; export incomplete, kept only the finished " \
                                      f"{tmp_path / 'm.onnx'}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def _stub_onnx(model, output, **kwargs):
    """Stands in for the ONNX export (seconds on CPU) where the engine build after it is the subject."""
    output.write_bytes(b"stub ONNX")
    return output


def test_ctrl_c_inside_a_tensorrt_build_cancels_it_and_exits_130_keeping_the_onnx(model_dir, tmp_path, capsys,
                                                                                 monkeypatch):
    """Ctrl-C while TensorRT (faked, see fake_tensorrt.py) is in its tactic search: the build stops at its next
    step, and the export ends as any interrupted one does."""
    def ctrl_c(phase, step):
        if phase == "Tactic search":
            signal.raise_signal(signal.SIGINT)

    install_tensorrt(monkeypatch, fake_tensorrt(before_step=ctrl_c))
    monkeypatch.setattr(exporter_module, "export_onnx", _stub_onnx)
    assert main(["--model", str(model_dir), "--format", "engine", "--output", str(tmp_path / "m.plan")]) == 130
    assert _one_line_error(capsys) == f"langbrt-export: interrupted; export incomplete, kept only the finished " \
                                      f"{tmp_path / 'm.onnx'}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_an_engine_whose_sidecar_cannot_be_written_is_not_left_behind(model_dir, tmp_path, capsys, monkeypatch):
    """The engine and its sidecar are one artifact: the runtime refuses an engine without one. Both are written
    before either is renamed into place, so a full disk on the sidecar leaves neither."""
    install_tensorrt(monkeypatch, fake_tensorrt())
    monkeypatch.setattr(exporter_module, "export_onnx", _stub_onnx)
    real_write_text = Path.write_text

    def full_on_the_sidecar(self, *args, **kwargs):
        if ".json" in self.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_on_the_sidecar)
    assert main(["--model", str(model_dir), "--format", "engine", "--output", str(tmp_path / "m.plan")]) == 4
    assert "No space left on device" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize("fp16", [[], ["--fp16"]])
def test_an_engine_records_the_command_that_rebuilds_that_engine(model_dir, tmp_path, monkeypatch, fp16):
    """An fp32 engine (--format engine without --fp16) recorded a rebuild command with --fp16: following it
    gave an fp16 engine, which `langbrt-infer --precision fp32` then refuses (QA)."""
    install_tensorrt(monkeypatch, fake_tensorrt())
    monkeypatch.setattr(exporter_module, "export_onnx", _stub_onnx)
    engine = tmp_path / "m.plan"
    argv = ["--model", str(model_dir), "--format", "engine", "--output", str(engine), "--batch-sizes", "1", "4"]
    assert main([*argv, *fp16]) == 0
    command = read_engine_sidecar(engine).extras["rebuild_command"]
    assert command == f"langbrt-export {' '.join([*argv, *fp16])}"


def test_a_rebuild_command_quotes_paths_with_spaces_so_it_can_be_pasted():
    command = rebuild_command(Path("my engines/m.plan"), "runs/my run", (1, 8))
    assert shlex.split(command)[1:7] == ["--model", "runs/my run", "--format", "engine", "--output",
                                         "my engines/m.plan"]


def test_a_triton_repo_engine_records_the_command_that_rebuilds_the_repository(model_dir, tmp_path, monkeypatch):
    """The engine of `--format triton-repo --fp16` is built in a hidden temporary folder, and its langbrt.json
    recorded `--format engine --output <that folder>/model.plan`: a folder gone once the export ends (QA)."""
    install_tensorrt(monkeypatch, fake_tensorrt())
    monkeypatch.setattr(exporter_module, "export_onnx", _stub_onnx)
    argv = ["--model", str(model_dir), "--format", "triton-repo", "--output", str(tmp_path / "repo"),
            "--batch-sizes", "1", "4", "--fp16"]
    assert main(argv) == 0
    metadata = ArtifactMetadata.from_json((tmp_path / "repo" / "langbrt" / "langbrt.json").read_text(), "json")
    assert metadata.extras["rebuild_command"] == f"langbrt-export {' '.join(argv)}"


def test_json_keeps_stdout_one_object_while_build_bars_draw_on_a_terminal(model_dir, tmp_path, capsys, monkeypatch):
    install_tensorrt(monkeypatch, fake_tensorrt())
    monkeypatch.setattr(exporter_module, "export_onnx", _stub_onnx)
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(["--model", str(model_dir), "--format", "engine", "--output", str(tmp_path / "m.plan"),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == str(tmp_path / "m.plan")
    assert "Building engine: 100%" in terminal.getvalue()


# ------------------------------------------------------------------------------------------ option checks


@pytest.mark.parametrize("fmt, output, says", [("onnx", "m.plan", "--format engine"),
                                               ("onnx", "m.safetensors", ".onnx file"),
                                               ("engine", "m.onnx", "--format onnx")])
def test_an_output_named_for_another_format_is_refused(model_dir, tmp_path, capsys, fmt, output, says):
    assert main(["--model", str(model_dir), "--format", fmt, "--output", str(tmp_path / output)]) == 2
    assert says in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_the_engine_suffixes_are_the_ones_the_runtime_loads():
    from langbrt.runtime.backends.base import ENGINE_SUFFIXES, ONNX_SUFFIXES

    suffixes = {f.name: set(f.suffixes) for f in FORMATS}
    assert suffixes["engine"] == set(ENGINE_SUFFIXES) and suffixes["onnx"] == set(ONNX_SUFFIXES)


@pytest.mark.parametrize("flags", [["--batch-sizes", "1", "2"], ["--timing-cache", "trt.cache"]])
@pytest.mark.parametrize("fmt, output", [("onnx", "m.onnx"), ("triton-repo", "repo")])
def test_engine_only_flags_without_an_engine_are_refused(model_dir, tmp_path, capsys, flags, fmt, output):
    assert main(["--model", str(model_dir), "--format", fmt, "--output", str(tmp_path / output), *flags]) == 2
    assert flags[0] in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sizes", [["0"], ["-4"], ["1", "0", "8"]])
@pytest.mark.parametrize("fmt, output", [("engine", "m.plan"), ("onnx", "m.onnx")])
def test_a_batch_size_below_1_is_one_line_before_tensorrt_is_needed(model_dir, tmp_path, capsys, monkeypatch, sizes,
                                                                    fmt, output):
    """Checked with the other options, so it is exit 2 on any machine, not exit 1 'TensorRT is missing'."""
    monkeypatch.setattr(exporter_module, "require_tensorrt", lambda *a: pytest.fail("reached the TensorRT check"))
    fp16 = ["--fp16"] if fmt == "onnx" else []
    assert main(["--model", str(model_dir), "--format", fmt, "--output", str(tmp_path / output), *fp16,
                 "--batch-sizes", *sizes]) == 2
    message = _one_line_error(capsys)
    assert message.startswith("langbrt-export: error: --batch-sizes must be positive")
    assert f"[{', '.join(sizes)}]" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("opset", ["16", str(max_opset() + 1), "99"])
def test_an_opset_outside_what_the_installed_exporter_writes_is_one_line(model_dir, tmp_path, capsys, opset):
    assert main(["--model", str(model_dir), "--output", str(tmp_path / "m.onnx"), "--opset", opset]) == 2
    assert f"17..{max_opset()}" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_too_many_extra_prompt_slots_is_one_line_before_any_allocation(model_dir, tmp_path, capsys):
    assert main(["--model", str(model_dir), "--output", str(tmp_path / "m.onnx"), "--extra-prompt-slots",
                 str(MAX_EXTRA_PROMPT_SLOTS + 1)]) == 2
    assert f"0..{MAX_EXTRA_PROMPT_SLOTS}" in _one_line_error(capsys)


@pytest.mark.parametrize(("version", "refused"), [("11.4.0.106", True), ("10.13.3.9", False), ("9.2.0", True)])
def test_only_tensorrt_10_builds_engines(monkeypatch, version, refused):
    """The build relies on weak typing (per-layer fp16/fp32 precision), which TensorRT 11 removed."""
    from langbrt.export import tensorrt_export

    monkeypatch.setattr(tensorrt_export.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
    if refused:
        with pytest.raises(tensorrt_export.TensorRTUnavailable, match=rf"TensorRT 10\.x, but {version} is installed"):
            tensorrt_export.require_tensorrt("--fp16")
    else:
        tensorrt_export.require_tensorrt("--fp16")


def test_the_engine_sidecar_records_the_gpu_the_builder_used_not_gpu_0(monkeypatch, tmp_path):
    """TensorRT builds for the current CUDA device (set by torch.cuda.set_device or CUDA_VISIBLE_DEVICES), and
    the sidecar's compute capability is what `check_engine_compatible` compares. TensorRT and two GPUs faked."""
    from langbrt.export import tensorrt_export

    trt = mock.MagicMock(__version__="10.13.3.9")
    del trt.IProgressMonitor  # a MagicMock is no base class; the monitor has its own tests (test_build_progress.py)
    builder = trt.Builder.return_value
    network = builder.create_network.return_value
    network.num_inputs = network.num_outputs = network.num_layers = 0
    builder.build_serialized_network.return_value = b"engine"
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tensorrt_export, "require_tensorrt", lambda asked_by="--fp16": None)
    monkeypatch.setattr(tensorrt_export, "read_onnx_metadata",
                        lambda path: ArtifactMetadata(64, ["acne"], [-1], "x", 4, "0", 0))
    gpus = [types.SimpleNamespace(name="GPU zero", major=8, minor=0),
            types.SimpleNamespace(name="GPU one", major=9, minor=0)]
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: gpus[device])
    tensorrt_export.build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", fp16=False)
    extras = tensorrt_export.read_engine_sidecar(tmp_path / "m.plan").extras
    assert (extras["gpu"], extras["compute_capability"]) == ("GPU one", "9.0")
    assert (tmp_path / "m.plan").read_bytes() == b"engine"
    assert extras[ENGINE_DIGEST_KEY] == hashlib.sha256(b"engine").hexdigest()  # what the loader checks the bytes by


@pytest.mark.parametrize(("text", "why"), [('{"format": "langbrt-artifact", "image_size": ' + "6" * 5000 + "}",
                                            "a number of more than 4300 digits"),
                                           ("[" * 100_000, "nested too deeply")])
def test_export_metadata_that_cannot_be_parsed_is_one_line_naming_the_source(text, why):
    with pytest.raises(CheckpointError, match=f"^model.onnx: unreadable LangBRT metadata \\({why}\\)$"):
        ArtifactMetadata.from_json(text, "model.onnx")


@pytest.mark.parametrize(("edit", "message"), [
    ({"image_size": 0}, "image_size must be in [1, 4096], got 0"),
    ({"image_size": -64}, "image_size must be in [1, 4096], got -64"),
    ({"image_size": 100_000}, "image_size must be in [1, 4096], got 100000"),
    ({"extra_prompt_slots": -1}, "extra_prompt_slots must be in [0, 64], got -1"),
    ({"text_dim": 0}, "text_dim must be in [1, 8192], got 0"),
    ({"precision": "fp8"}, "precision must be one of fp32, fp16, got 'fp8'"),
    ({"predefined_index": [0, 1]}, "predefined_index must hold one entry per prompt (3), got 2"),
    ({"predefined_index": [0, 1, 99]}, "predefined_index[2] must be -1 (a user prompt) or in [0, 3), got 99"),
    ({"predefined_index": [0, -5, 1]}, "predefined_index[1] must be -1 (a user prompt) or in [0, 3), got -5"),
    ({"predefined_index": [0, 0, -1]}, "predefined_index names a pre-defined prompt twice: [0, 0, -1]"),
    ({"prompts": ["", "a", "b"]}, "prompts[0] is not a usable prompt: prompt is empty"),
    ({"prompts": ["acne", "mole", "Acne "]}, "prompts[2] repeats prompts[0] ('Acne ')"),
    ({"extras": {"learned_prompts": "false"}}, "extras.learned_prompts must be true or false, got 'false'"),
    ({"format_version": -1}, "format_version must be >= 0, got -1"),
])
def test_export_metadata_with_impossible_values_is_one_line_naming_the_source(edit, message):
    """Right types, impossible values: each was a traceback at run time (a resize to 0x0, zip of unequal lists)."""
    data = json.loads(ArtifactMetadata(64, ["acne", "mole", "wrinkles"], [0, 1, -1], "x", 4, "0", 2).to_json())
    data.update(edit)
    with pytest.raises(CheckpointError) as err:
        ArtifactMetadata.from_json(json.dumps(data), "model.onnx")
    assert str(err.value) == f"model.onnx: {message}" or str(err.value).startswith(f"model.onnx: {message}")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("flag", ["--model", "--output", "--timing-cache"])
def test_an_empty_path_is_a_usage_error(tmp_path, capsys, monkeypatch, flag):
    """QA: `--output ""` was refused as ". is a folder" and `--model ""` as "--output ... is inside the input .",
    naming a folder the user never typed: an empty name (an unset variable) is reported as empty."""
    monkeypatch.chdir(tmp_path)
    args = {"--model": "ckpt", "--output": "m.onnx", "--timing-cache": "cache.bin"}
    args[flag] = ""
    with pytest.raises(SystemExit) as exited:
        main([word for pair in args.items() for word in pair] + ["--fp16"])
    assert exited.value.code == 2
    assert _one_line_error(capsys).startswith(f"langbrt-export: error: argument {flag}: is empty")
    assert list(tmp_path.iterdir()) == []
