"""Runtime backends behind one protocol: torch and onnxruntime agree, prompts resolve alike, and the runtime
imports without export code, onnxruntime, tensorrt or CUDA."""

import contextlib
import json
import re
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from langbrt import CheckpointError, LangBRT, LangBRTConfig, LangBRTError, LangBRTInputError
from langbrt.artifact import ARTIFACT_VERSION, ENGINE_DIGEST_KEY, ArtifactMetadata, engine_digest
from langbrt.export.onnx_export import export_onnx
from langbrt.runtime import Retoucher
from langbrt.runtime.backends import Backend, load_backend
from langbrt.runtime.backends.memory_format import MEMORY_FORMAT_ENV_VAR, MemoryFormat
from langbrt.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from langbrt.runtime.backends.torch_backend import TorchBackend
from langbrt.text import PromptBank, default_text_encoder

PROMPTS = ["dark circles under the eyes", "acne on the cheeks"]
NEW_PROMPT = "a red spot on the nose"  # not in the baked table: goes through an extra slot


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A tiny checkpoint folder and its ONNX export (with 2 extra prompt slots)."""
    root = tmp_path_factory.mktemp("runtime")
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder()).eval()
    model.save_pretrained(root / "ckpt")
    export_onnx(model, root / "tiny.onnx", extra_prompt_slots=2)
    return root / "ckpt", root / "tiny.onnx"


@pytest.fixture(scope="module")
def backends(artifacts):
    ckpt, onnx_path = artifacts
    return load_backend(str(ckpt), device="cpu"), load_backend(str(onnx_path), device="cpu")


def test_auto_picks_the_backend_from_the_path(backends):
    torch_backend, ort_backend = backends
    assert isinstance(torch_backend, TorchBackend) and isinstance(ort_backend, OnnxRuntimeBackend)
    assert all(isinstance(b, Backend) for b in backends)
    assert torch_backend.image_size == ort_backend.image_size == 64


def test_torch_and_onnxruntime_agree_on_cpu(backends):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    prompts = [PROMPTS, [NEW_PROMPT, PROMPTS[1]]]
    a, b = (backend.run(images, prompts) for backend in backends)
    assert a.maps.shape == b.maps.shape == (2, 2, 64, 64)
    for name in ("image", "mask", "maps"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-4, rtol=1e-4)


def test_an_empty_batch_is_one_input_error_from_every_backend(backends):
    for backend in backends:
        with pytest.raises(LangBRTInputError, match="empty batch"):
            backend.run(torch.zeros(0, 3, 64, 64), [])


def test_every_backend_takes_uint8_and_uint16_batches_as_the_retoucher_does(backends):
    """A uint8 batch was run as floats in 0-255: clamped into a white model input, with no error (QA)."""
    batch = torch.randint(0, 256, (1, 3, 64, 64), generator=torch.Generator().manual_seed(6), dtype=torch.uint8)
    for backend in backends:
        expected = backend.run(batch.float() / 255, [PROMPTS])
        for images in (batch, (batch.int() * 257).to(torch.uint16), batch.numpy()):
            torch.testing.assert_close(backend.run(images, [PROMPTS]).image, expected.image, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("images", "message"), [
    (torch.ones(1, 3, 64, 64, dtype=torch.int64), "torch.int64 tensors are not taken"),
    (torch.ones(1, 3, 64, 64, dtype=torch.bool), "torch.bool tensors are not taken"),
    (np.ones((1, 3, 64, 64), dtype=np.int32), "torch.int32 tensors are not taken"),
    ([torch.rand(3, 64, 64)], "a (B, 3, S, S) tensor or array, got list"),
])
def test_images_of_another_kind_are_one_input_error_from_every_backend(backends, images, message):
    for backend in backends:
        with pytest.raises(LangBRTInputError, match=re.escape(message)):
            backend.run(images, [PROMPTS])


@pytest.mark.parametrize("prompts", [None, 5, {"acne"}])
def test_prompts_that_are_not_one_list_per_image_are_one_input_error_from_every_backend(backends, prompts):
    """Backend.run takes one list of prompts per image; None or a number was len()'s TypeError (QA)."""
    for backend in backends:
        with pytest.raises(LangBRTInputError, match="one list of strings per image"):
            backend.run(torch.rand(1, 3, 64, 64), prompts)


def test_retoucher_results_agree_across_backends_at_full_resolution(artifacts):
    photo = torch.rand(3, 45, 130, generator=torch.Generator().manual_seed(4))
    results = [Retoucher.load(path, device="cpu").retouch([photo], PROMPTS)[0] for path in artifacts]
    for r in results:
        assert r.image.shape == (3, 45, 130) and r.mask.shape == (1, 45, 130) and r.maps.shape == (2, 45, 130)
        assert r.prompts == PROMPTS
    torch.testing.assert_close(results[0].image, results[1].image, atol=1e-4, rtol=1e-4)


def test_default_prompts_are_the_models_predefined_ones(backends):
    for backend in backends:
        retoucher = Retoucher(backend)
        [result] = retoucher.retouch([torch.rand(3, 64, 64)])
        assert result.prompts == list(LangBRTConfig.tiny().predefined_prompts)


def test_a_list_of_strings_applies_to_every_image_and_lists_of_lists_per_image(backends):
    retoucher = Retoucher(backends[1])
    images = [torch.rand(3, 32, 32), torch.rand(3, 70, 20)]
    same = retoucher.retouch(images, ["Acne  on the cheeks"])
    assert [r.prompts for r in same] == [["acne on the cheeks"]] * 2
    each = retoucher.retouch(images, [PROMPTS, [NEW_PROMPT]])
    assert [r.maps.shape[0] for r in each] == [2, 1]


def test_prompts_a_caller_adds_are_not_listed_to_the_next_caller(backends):
    """A server answers /v1/prompts from `Retoucher.prompts`: one client's prompt must not show up there."""
    for backend in backends:
        retoucher = Retoucher(backend)
        before = retoucher.prompts
        [result] = retoucher.retouch([torch.rand(3, 32, 32)], ["a client's own words for a scar"])
        assert result.prompts == ["a client's own words for a scar"]
        assert retoucher.prompts == before and "a client's own words for a scar" not in before


@pytest.mark.parametrize("bad", [[""], [[]], "acne"])
def test_bad_prompts_are_one_clear_input_error(backends, bad):
    with pytest.raises(LangBRTInputError):
        Retoucher(backends[0]).retouch([torch.rand(3, 16, 16)], bad)


def test_an_images_none_prompts_are_its_predefined_ones_and_a_non_list_is_one_input_error(backends):
    """Per image, None means the pre-defined prompts (as a server request without prompts in a mixed batch);
    anything else that is not a list is a LangBRTInputError, not len()'s TypeError."""
    images = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    predefined = list(LangBRTConfig.tiny().predefined_prompts)
    for backend in backends:
        retoucher = Retoucher(backend)
        mixed = retoucher.retouch(images, [[PROMPTS[1]], None])
        assert [r.prompts for r in mixed] == [[PROMPTS[1]], predefined]
        [alone] = retoucher.retouch(images[1:], None)
        torch.testing.assert_close(mixed[1].maps, alone.maps, atol=1e-5, rtol=1e-5)
        for bad in ([[PROMPTS[0]], 3], [None, 2.5]):
            with pytest.raises(LangBRTInputError, match="one list of strings per image"):
                retoucher.retouch(images, bad)


def test_more_new_prompts_than_extra_slots_lists_the_available_ones(backends):
    with pytest.raises(LangBRTInputError, match="extra prompt slots.*dark circles"):
        backends[1].run(torch.rand(1, 3, 64, 64), [["new one", "new two", "new three"]])


def test_images_with_their_own_new_prompts_are_batched_to_fit_the_extra_slots(backends):
    """Three photos, each with one new prompt, against an export with 2 extra slots: each photo fits, but the
    retoucher's own batch of all three did not, and `retouch` refused them all (QA); one photo with more new
    prompts than slots is still refused."""
    retoucher = Retoucher(backends[1])
    images = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    asked = [[f"a new blemish number {i}"] for i in range(3)]
    results = retoucher.retouch(images, asked)
    assert [r.prompts for r in results] == asked
    [alone] = retoucher.retouch(images[2:], asked[2:])
    torch.testing.assert_close(results[2].image, alone.image, atol=1e-5, rtol=1e-5)
    with pytest.raises(LangBRTInputError, match="extra prompt slots"):
        retoucher.retouch(images[:1], [["new one", "new two", "new three"]])


def test_unknown_backend_and_missing_model_are_clear_errors(tmp_path, artifacts):
    with pytest.raises(LangBRTInputError, match="unknown backend"):
        Retoucher.load(artifacts[0], backend="tflite")
    with pytest.raises(CheckpointError):
        Retoucher.load(tmp_path / "nothing", backend="torch")
    with pytest.raises(CheckpointError):
        Retoucher.load(tmp_path / "nothing.onnx")
    (tmp_path / "model.tflite").write_bytes(b"")
    with pytest.raises(LangBRTInputError, match="cannot tell"):
        Retoucher.load(tmp_path / "model.tflite")
    for engine_backend in ("onnxruntime", "tensorrt"):  # a checkpoint folder given to an artifact backend
        with pytest.raises(CheckpointError, match="is a folder .*--backend torch or auto"):
            Retoucher.load(artifacts[0], backend=engine_backend)


@pytest.mark.parametrize("device", ["mps", "gpu", "cuda0"])
def test_every_backend_refuses_a_device_name_the_clis_would_refuse(artifacts, device):
    """The ONNX Runtime backend ran 'mps' or 'gpu' on the CPU without a word (QA)."""
    for path in artifacts:
        with pytest.raises(LangBRTInputError, match=f"device '{device}' is not one LangBRT runs on; use cpu, cuda"):
            Retoucher.load(path, device=device)


def test_a_torch_device_names_the_device_for_every_backend(artifacts):
    assert [Retoucher.load(path, device=torch.device("cpu")).device for path in artifacts] == ["cpu", "cpu"]


def test_an_onnx_file_without_langbrt_metadata_is_refused(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Identity(), (torch.rand(1, 3),), str(path), dynamo=False)
    with pytest.raises(CheckpointError, match="not a LangBRT export"):
        Retoucher.load(path)


@pytest.mark.parametrize(("field", "value", "graph_part"), [("image_size", 32, "input images"),
                                                          ("prompts", ["only one"], r"prompt table \(\d+ rows\)"),
                                                          ("text_dim", 3, "input extra_embeddings"),
                                                          ("extra_prompt_slots", 5, "input extra_embeddings")])
def test_metadata_that_disagrees_with_the_graph_is_refused_at_load(artifacts, tmp_path, field, value, graph_part):
    """Hand-edited sizes failed inside onnxruntime on the first call (or in an assert), not in one line."""
    import onnx

    from langbrt.artifact import METADATA_KEY

    model = onnx.load(str(artifacts[1]))
    props = {p.key: p.value for p in model.metadata_props}
    metadata = json.loads(props[METADATA_KEY])
    metadata[field] = value
    if field == "prompts":
        metadata["predefined_index"] = [0]
    props[METADATA_KEY] = json.dumps(metadata)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(tmp_path / "edited.onnx"))
    with pytest.raises(CheckpointError, match=rf"edited\.onnx: its LangBRT metadata .* does not match the graph's "
                                              rf"{graph_part}.*re-export it"):
        Retoucher.load(tmp_path / "edited.onnx")


def test_onnx_files_are_fp32_so_fp16_is_refused(artifacts):
    with pytest.raises(CheckpointError, match="fp32"):
        Retoucher.load(artifacts[1], precision="fp16")


def test_a_forced_triton_kernel_that_cannot_run_is_refused_at_load(artifacts, monkeypatch):
    """Once, when the model loads: not once per image, as the first forward would."""
    from langbrt.kernels import dispatch, tca_choices

    monkeypatch.setenv("LANGBRT_ATTENTION", "triton")
    monkeypatch.setattr(tca_choices, "INTERPRETING", False)  # a CPU machine without Triton's interpreter
    with pytest.raises(LangBRTInputError, match="needs a CUDA device.*LANGBRT_ATTENTION=reference"):
        Retoucher.load(artifacts[0], device="cpu")
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    with pytest.raises(LangBRTInputError, match="triton package is not installed"):
        Retoucher.load(artifacts[0], device="cpu")


def _four_d_parameters_are(model: LangBRT, layout: torch.memory_format) -> bool:
    return all(p.is_contiguous(memory_format=layout) for p in model.parameters() if p.dim() == 4)


def test_channels_last_gives_the_contiguous_outputs_in_nchw(artifacts):
    """The opt-in NHWC layout changes how the network runs, not what callers get: the same numbers, and
    NCHW-contiguous tensors (the model's own outputs come back channels_last)."""
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    prompts = [PROMPTS, [NEW_PROMPT]]
    nchw = TorchBackend.load(artifacts[0], device="cpu", memory_format="contiguous")
    nhwc = TorchBackend(TorchBackend.load(artifacts[0], device="cpu").model, "cpu", memory_format="channels_last")
    assert nchw.memory_format is MemoryFormat.CONTIGUOUS and nhwc.memory_format is MemoryFormat.CHANNELS_LAST
    assert _four_d_parameters_are(nhwc.model, torch.channels_last)
    a, b = nchw.run(images, prompts), nhwc.run(images, prompts)
    for name in ("image", "mask", "maps"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), atol=1e-5, rtol=1e-5)
        assert getattr(b, name).is_contiguous(), name


def test_channels_last_hands_the_network_an_nhwc_batch(artifacts, monkeypatch):
    backend = TorchBackend.load(artifacts[0], device="cpu", memory_format=MemoryFormat.CHANNELS_LAST)
    forward, seen = backend.model.forward_table, []

    def recording(x, *args):
        seen.append(x.is_contiguous(memory_format=torch.channels_last))  # x: (B, 3, S, S)
        return forward(x, *args)

    monkeypatch.setattr(backend.model, "forward_table", recording)
    backend.run(torch.rand(2, 3, 64, 64), [PROMPTS, PROMPTS])
    assert seen == [True]


@pytest.mark.parametrize("value, expected", [(None, MemoryFormat.CHANNELS_LAST), ("auto", MemoryFormat.CHANNELS_LAST),
                                             ("contiguous", MemoryFormat.CONTIGUOUS),
                                             ("channels_last", MemoryFormat.CHANNELS_LAST),
                                             (" Channels_Last ", MemoryFormat.CHANNELS_LAST)])
def test_the_memory_format_switch_is_read_when_the_backend_is_built(artifacts, monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(MEMORY_FORMAT_ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(MEMORY_FORMAT_ENV_VAR, value)
    backend = load_backend(str(artifacts[0]), device="cpu")
    assert backend.memory_format is expected
    assert _four_d_parameters_are(backend.model, expected.torch_format)


@pytest.mark.parametrize("device, expected", [("cpu", MemoryFormat.CHANNELS_LAST), ("cuda", MemoryFormat.CONTIGUOUS),
                                              ("cuda:1", MemoryFormat.CONTIGUOUS)])
def test_auto_is_nhwc_on_cpu_and_nchw_on_cuda_until_timed_there(device, expected):
    """auto (the default) takes NHWC where it was measured faster (CPU: ~25 % per call at the paper size) and
    keeps NCHW on CUDA, where the backend has not been timed both ways; the concrete formats stay as given."""
    assert MemoryFormat.AUTO.resolve(torch.device(device)) is expected
    for concrete in (MemoryFormat.CONTIGUOUS, MemoryFormat.CHANNELS_LAST):
        assert concrete.resolve(torch.device(device)) is concrete


def test_the_constructor_argument_outranks_the_memory_format_switch(artifacts, monkeypatch):
    monkeypatch.setenv(MEMORY_FORMAT_ENV_VAR, "channels_last")
    backend = TorchBackend.load(artifacts[0], device="cpu", memory_format="contiguous")
    assert backend.memory_format is MemoryFormat.CONTIGUOUS
    assert _four_d_parameters_are(backend.model, torch.contiguous_format)


def test_a_bad_memory_format_is_one_input_error_before_the_model_loads(artifacts, monkeypatch):
    """`check_backend` is what langbrt-serve asks before binding its port and langbrt-infer before any photo."""
    from langbrt.runtime.backends import check_backend

    monkeypatch.setenv(MEMORY_FORMAT_ENV_VAR, "nhwc")
    monkeypatch.setattr(LangBRT, "from_pretrained", lambda *a, **k: pytest.fail("loaded the model first"))
    with pytest.raises(LangBRTInputError) as caught:
        check_backend(str(artifacts[0]), "torch", "cpu")
    assert str(caught.value) == "LANGBRT_MEMORY_FORMAT='nhwc' is not one of: auto, contiguous, channels_last"
    with pytest.raises(LangBRTInputError, match="LANGBRT_MEMORY_FORMAT"):
        load_backend(str(artifacts[0]), device="cpu")


def test_onnxruntime_without_a_cuda_provider_refuses_a_cuda_device(artifacts, monkeypatch):
    """Like the torch backend: a GPU asked for by name is never silently replaced by the CPU."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(LangBRTError, match="--device cuda:1: this onnxruntime has no CUDA provider"):
        Retoucher.load(artifacts[1], device="cuda:1")
    assert Retoucher.load(artifacts[1]).device == "cpu"  # no device asked for: the CPU, quietly


def test_onnxruntime_takes_torchs_cpu_thread_count_that_threads_sets(artifacts, monkeypatch):
    """`--threads 1` (torch.set_num_threads) left ONNX Runtime's sessions at one thread per core, spinning on a
    machine whose cores other jobs share: the case the flag exists for."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # as --threads 1 sets it, this process untouched
    backend = load_backend(str(artifacts[1]), device="cpu")
    assert backend.session.get_session_options().intra_op_num_threads == 1


def test_torch_fp16_on_cpu_is_refused(artifacts):
    with pytest.raises(LangBRTInputError, match="CUDA"):
        Retoucher.load(artifacts[0], device="cpu", precision="fp16")


def _fake_tensorrt(version: str, deserialized: list[bytes]) -> types.SimpleNamespace:
    """A `tensorrt` module whose runtime records the engine bytes it is given and cannot deserialize them."""

    class Logger:
        ERROR = 1

        def __init__(self, level: int) -> None:
            pass

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> None:
            deserialized.append(data)
            return None

    return types.SimpleNamespace(__version__=version, Logger=Logger, Runtime=Runtime)


def test_an_engine_built_elsewhere_is_refused_with_the_command_its_sidecar_records(tmp_path, monkeypatch):
    """The loader said `--format engine --fp16` for every engine: for an fp32 one (or one of other batch sizes,
    or plugin attention) that rebuilt a different engine. The sidecar records the exact command (QA)."""
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine")
    command = "langbrt-export --model runs/ckpt --format engine --output model.engine --batch-sizes 1 4"
    meta = ArtifactMetadata(64, PROMPTS, [0, 1], "minilm:all-MiniLM-L6-v2", 384, "x", 0,
                            extras={"tensorrt": "10.9.0", "rebuild_command": command})
    (tmp_path / "model.engine.json").write_text(meta.to_json())
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt("10.11.0", []))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    with pytest.raises(CheckpointError, match=r"this machine has 10\.11\.0; rebuild: (.*)$") as err:
        Retoucher.load(engine)
    assert str(err.value).endswith(f"rebuild: {command}")


@pytest.mark.parametrize("machine", ["no-tensorrt", "tensorrt-no-cuda", "other-tensorrt-version", "cuda"])
def test_tensorrt_without_tensorrt_or_gpu_says_what_is_missing(tmp_path, monkeypatch, machine):
    """Every branch of TensorRTBackend.load before the engine runs, on any machine: the tensorrt module and
    CUDA are faked (sys.modules, torch.cuda), as test_export_cli does for the export side."""
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine")
    meta = {"format": "langbrt-artifact", "format_version": ARTIFACT_VERSION, "image_size": 64, "prompts": PROMPTS,
            "predefined_index": [0, 1],
            "text_encoder": "minilm:all-MiniLM-L6-v2", "text_dim": 384, "model_hash": "x", "extra_prompt_slots": 0,
            "extras": {"tensorrt": "10.9.0"}}
    (tmp_path / "model.engine.json").write_text(json.dumps(meta))
    deserialized: list[bytes] = []
    version = "10.11.0" if machine == "other-tensorrt-version" else "10.9.0"
    # None in sys.modules makes `import tensorrt` raise ImportError, whatever is installed
    monkeypatch.setitem(sys.modules, "tensorrt", None if machine == "no-tensorrt" else
                        _fake_tensorrt(version, deserialized))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: machine != "tensorrt-no-cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "device", lambda *a: contextlib.nullcontext())  # no CUDA context to enter
    if machine == "cuda":  # the sidecar is asked for only where an engine could run
        sidecar = tmp_path / "model.engine.json"
        sidecar.rename(tmp_path / "aside.json")
        with pytest.raises(CheckpointError, match="no sidecar metadata"):
            Retoucher.load(engine)
        sidecar.write_bytes(b"\xff\xfe not UTF-8")
        with pytest.raises(CheckpointError, match=r"model\.engine\.json is unreadable \(.*rebuild: langbrt-export"):
            Retoucher.load(engine)
        (tmp_path / "aside.json").replace(sidecar)
        # a sidecar written for other engine bytes (two exports to one path interleaved their renames)
        sidecar.write_text(json.dumps({**meta, "extras": {**meta["extras"], ENGINE_DIGEST_KEY: engine_digest(b"x")}}))
        with pytest.raises(CheckpointError, match=r"model\.engine\.json describes another engine.*rebuild: "):
            Retoucher.load(engine)
        assert deserialized == []  # refused before TensorRT saw the bytes
        meta["extras"][ENGINE_DIGEST_KEY] = engine_digest(engine.read_bytes())  # its own: on to deserialising
        sidecar.write_text(json.dumps(meta))
    expected = {
        "no-tensorrt": (LangBRTError, "needs TensorRT: pip install"),
        "tensorrt-no-cuda": (LangBRTError, "needs a CUDA GPU"),
        "other-tensorrt-version": (CheckpointError, r"built for TensorRT 10\.9\.0, this machine has 10\.11\.0"),
        "cuda": (CheckpointError, "cannot deserialize.*langbrt-export --model DIR --format engine"),
    }[machine]
    with pytest.raises(expected[0], match=expected[1]) as err:
        Retoucher.load(engine)
    assert "\n" not in str(err.value)
    assert deserialized == ([engine.read_bytes()] if machine == "cuda" else [])


def test_an_onnx_file_given_to_the_tensorrt_backend_names_the_backend_that_runs_it(artifacts):
    with pytest.raises(CheckpointError, match=r"is not a TensorRT engine \(\.engine or \.plan\); it runs with "
                                              r"--backend onnxruntime"):
        Retoucher.load(artifacts[1], backend="tensorrt")


def test_the_runtime_imports_without_export_code_or_engine_libraries():
    code = (
        "import sys, langbrt.runtime, langbrt.runtime.cli_infer, langbrt.runtime.cli_bench\n"
        "import langbrt.runtime.backends.torch_backend, langbrt.runtime.backends.onnxruntime_backend\n"
        "import langbrt.runtime.backends.tensorrt_backend\n"
        "bad = [m for m in ('langbrt.export', 'langbrt.training', 'onnxruntime', 'tensorrt') "
        "if m in sys.modules]\n"
        "import torch; assert not torch.cuda.is_initialized(), 'CUDA initialised at import'\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def encoder_free_checkpoint(tmp_path_factory):
    """A tiny checkpoint whose prompt bank holds the predefined prompts (random embeddings): it loads and runs
    with no text encoder installed, as on a bare GPU image."""
    torch.manual_seed(0)
    cfg = LangBRTConfig.tiny()
    texts = list(LangBRT(cfg).predefined_prompts)
    embeddings = torch.nn.functional.normalize(torch.randn(len(texts), cfg.text_dim), dim=-1)  # (T, D)
    bank = PromptBank.from_state(texts, embeddings, encoder_name=cfg.text_encoder, dim=cfg.text_dim)
    path = tmp_path_factory.mktemp("graphs") / "ckpt"
    LangBRT(cfg, prompt_bank=bank).save_pretrained(path)
    return path, texts


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("memory_format", [MemoryFormat.CONTIGUOUS, MemoryFormat.CHANNELS_LAST], ids=lambda f: f.value)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_graph_replay_matches_eager(encoder_free_checkpoint, monkeypatch, precision, memory_format):
    """channels_last (LANGBRT_MEMORY_FORMAT, opt-in) too: the graph's static input takes the backend's format,
    and its replays agree with eager calls in that format."""
    path, texts = encoder_free_checkpoint
    monkeypatch.setenv(MEMORY_FORMAT_ENV_VAR, memory_format.value)
    backend = TorchBackend.load(path, device="cuda", precision=precision)
    eager = TorchBackend(backend.model, "cuda", precision, cuda_graphs=False)
    assert backend.memory_format is eager.memory_format is memory_format
    tol = 1e-3 if precision == "fp32" else 2e-2
    for prompts in ([texts[:2]], [texts[2:3]], [texts[:2]]):  # two table sizes, then a replay of the first
        x = torch.rand(1, 3, 64, 64)
        got = backend.run(x, prompts).image
        torch.testing.assert_close(got, eager.run(x, prompts).image, atol=tol, rtol=tol)
        assert got.is_contiguous()
    assert sorted(backend._graphs) == [1, 2], "each batch-1 table size should be captured once"
    assert all(g.images.is_contiguous(memory_format=memory_format.torch_format) for g in backend._graphs.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_channels_last_on_cuda_matches_nchw(encoder_free_checkpoint, precision):
    """On CUDA channels_last takes other kernels (cuDNN's NHWC convolutions, the fused GroupNorm's NHWC pair):
    the same images either way, eager (batch 2) and from the batch-1 graph."""
    path, texts = encoder_free_checkpoint
    nchw = TorchBackend.load(path, device="cuda", precision=precision, memory_format="contiguous")
    nhwc = TorchBackend.load(path, device="cuda", precision=precision, memory_format="channels_last")
    tol = 1e-3 if precision == "fp32" else 2e-2
    for batch in (2, 1, 1):  # eager, then the graph's capture and a replay
        x = torch.rand(batch, 3, 64, 64)
        prompts = [texts[:2]] * batch
        torch.testing.assert_close(nhwc.run(x, prompts).image, nchw.run(x, prompts).image, atol=tol, rtol=tol)
    assert sorted(nhwc._graphs) == [2]


def test_onnxruntime_on_a_second_gpu_asks_its_cuda_provider_for_that_gpu(artifacts, monkeypatch):
    """`--device cuda:1` must run on GPU 1: ORT's CUDA provider takes GPU 0 unless told device_id."""
    import onnxruntime as ort

    _, onnx_path = artifacts
    asked = []

    def recording_session(path, sess_options=None, providers=None):
        asked.append(providers)
        raise RuntimeError("stop here")

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", recording_session)
    for device in ("cuda:1", "cuda"):
        with pytest.raises(CheckpointError, match="stop here"):
            OnnxRuntimeBackend.load(onnx_path, device=device)
    assert asked == [[("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"],
                     [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replays_stay_right_after_the_fold_cache_is_cleared(encoder_free_checkpoint):
    """A captured graph reads the folded attention weights by address; the backend keeps them alive."""
    from langbrt.kernels import tca_fold

    path, texts = encoder_free_checkpoint
    backend = TorchBackend.load(path, device="cuda", precision="fp16")
    eager = TorchBackend(backend.model, "cuda", "fp16", cuda_graphs=False)
    x = torch.rand(1, 3, 64, 64)
    backend.run(x, [texts[:2]])  # captured
    tca_fold.clear_cache()
    torch.cuda.empty_cache()
    torch.rand(64, 1024, 1024, device="cuda").half()  # reuse whatever memory was freed
    torch.testing.assert_close(backend.run(x, [texts[:2]]).image, eager.run(x, [texts[:2]]).image,
                               atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_a_backend_on_the_second_gpu_captures_and_replays_there(encoder_free_checkpoint):
    path, texts = encoder_free_checkpoint
    backend = TorchBackend.load(path, device="cuda:1", precision="fp32")
    eager = TorchBackend(backend.model, "cuda:1", "fp32", cuda_graphs=False)
    for _ in range(2):  # capture, then replay with another image
        x = torch.rand(1, 3, 64, 64)
        torch.testing.assert_close(backend.run(x, [texts[:2]]).image, eager.run(x, [texts[:2]]).image,
                                   atol=1e-3, rtol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_uint8_image_tensor_on_the_gpu_is_retouched(encoder_free_checkpoint):
    path, texts = encoder_free_checkpoint
    retoucher = Retoucher.load(path, backend="torch", device="cuda")
    image = torch.randint(0, 256, (3, 40, 52), dtype=torch.uint8, device="cuda")
    [result] = retoucher.retouch([image], [texts[:1]])
    assert result.image.shape == (3, 40, 52) and result.image.device.type == "cpu"


class _FakeEngine:
    """What TensorRTBackend reads of an engine at construction: a context and its inputs' profiles."""

    def __init__(self, smallest: int, largest: int, most_prompts: int = 16) -> None:
        self.profiles = {"images": ([smallest, 3, 64, 64], [largest, 3, 64, 64], [largest, 3, 64, 64]),
                         "prompt_index": ([smallest, 1], [largest, 3], [largest, most_prompts])}

    def create_execution_context(self) -> object:
        return object()

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[list[int], ...]:
        return self.profiles[name]


def test_tensorrt_backend_refuses_more_table_prompts_per_image_than_its_engine_takes():
    """The engine's profile bounds K (prompt_index's second dimension): more is one input error before any
    call, not TensorRT refusing a shape mid-request."""
    from langbrt.artifact import ArtifactMetadata
    from langbrt.runtime.backends.tensorrt_backend import TensorRTBackend

    prompts = ["acne", "mole", "wrinkles"]
    metadata = ArtifactMetadata(image_size=64, prompts=prompts, predefined_index=[-1, -1, -1],
                                text_encoder="x", text_dim=4, model_hash="0", extra_prompt_slots=0)
    backend = TensorRTBackend(_FakeEngine(1, 8, most_prompts=2), metadata, "cuda", "m.plan")
    backend.prepare_prompts([prompts[:2], prompts[1:]])  # two per image: within the profile
    with pytest.raises(LangBRTInputError, match=r"^3 prompts from m\.plan's table for one image, but the engine "
                                                r"takes at most 2 per image"):
        backend.prepare_prompts([prompts])


@pytest.mark.parametrize(("smallest", "largest", "batch", "pieces"), [
    (1, 4, 10, [4, 4, 2]),  # over the largest: in pieces
    (1, 4, 3, [3]),
    (8, 32, 3, [8]),  # under the smallest (an engine from before profiles started at 1): padded
    (2, 4, 5, [4, 2]),  # the last piece padded from 1 to 2
])
def test_tensorrt_backend_runs_any_batch_within_its_engines_profile(monkeypatch, smallest, largest, batch, pieces):
    from langbrt.artifact import ArtifactMetadata
    from langbrt.runtime.backends.base import BackendOutput
    from langbrt.runtime.backends.tensorrt_backend import TensorRTBackend

    metadata = ArtifactMetadata(image_size=64, prompts=["acne", "mole"], predefined_index=[-1, -1],
                                text_encoder="x", text_dim=4, model_hash="0", extra_prompt_slots=0)
    backend = TensorRTBackend(_FakeEngine(smallest, largest), metadata, "cuda", "m.plan")
    seen = []

    def fake_batch(x: torch.Tensor, prompts: list[list[str]]) -> BackendOutput:
        seen.append((x.shape[0], len(prompts)))
        maps = torch.zeros(x.shape[0], max(len(p) for p in prompts), 64, 64)  # (b, K, S, S) as regroup_maps
        for i, image_prompts in enumerate(prompts):
            maps[i, : len(image_prompts)] = 1.0
        return BackendOutput(image=x.clone(), mask=x[:, :1].clone(), maps=maps)

    monkeypatch.setattr(backend, "_run_batch", fake_batch)
    images = torch.rand(batch, 3, 64, 64)
    prompts = [["acne", "mole"] if i == 0 else ["acne"] for i in range(batch)]  # later pieces: one map wide
    out = backend.run(images, prompts)
    assert [n for n, _ in seen] == pieces and all(n == m for n, m in seen)
    assert torch.equal(out.image, images) and out.mask.shape == (batch, 1, 64, 64)
    assert out.maps.shape == (batch, 2, 64, 64)
    widths = [int(out.maps[i].flatten(1).amax(1).sum()) for i in range(batch)]
    assert widths == [len(p) for p in prompts]  # each image's own maps, zero-padded to the widest


def test_artifact_prompt_feeds_name_each_images_baked_prompts_and_place_the_extras_after_them():
    """`ExtraPromptEncoder.table`: (B, K) rows into the table in each image's order (a prompt given twice
    once), weight-0 padding, extras in shared slots after the K columns, and each image's maps' positions."""
    from langbrt.artifact import ArtifactMetadata
    from langbrt.runtime.backends.artifact_backend import ExtraPromptEncoder

    meta = ArtifactMetadata(64, ["acne", "mole", "wrinkles"], [0, -1, -1], "x", 4, "0", extra_prompt_slots=2)
    encoder = ExtraPromptEncoder(meta, "m.onnx")
    encoder._embed = lambda texts: np.ones((len(texts), 4), np.float32)  # no text encoder needed here
    feeds = encoder.table([["wrinkles", "acne", "wrinkles"], ["new one"], ["mole", "new two", "new one"]])
    np.testing.assert_array_equal(feeds.prompt_index, [[2, 0], [0, 0], [1, 0]])
    np.testing.assert_array_equal(feeds.prompt_weights, [[1, 1], [0, 0], [1, 0]])
    np.testing.assert_array_equal(feeds.extra_weights, [[0, 0], [1, 0], [1, 1]])
    np.testing.assert_array_equal(feeds.extra_embeddings, np.ones((2, 4)))
    assert feeds.per_image == [[0, 1, 0], [2], [0, 3, 2]]
    assert feeds.prompt_index.dtype == np.int32
    only_extras = encoder.table([["new one"]])
    assert only_extras.prompt_index.shape == (1, 1) and only_extras.prompt_weights.sum() == 0  # K >= 1
