"""config.pbtxt as Triton reads it: parsed by protobuf's text parser against Triton's own ModelConfig schema
(the generated `model_config_pb2` that tritonclient carries), so an unknown field, a misspelt enum or a
malformed map fails here instead of at `tritonserver` load; then checked against the ONNX file it serves
and the engine profile `tensorrt_export.profile_shapes` builds."""

import onnx
import pytest
import torch
from google.protobuf import text_format

from langbrt import LangBRT, LangBRTConfig
from langbrt.artifact import MAX_ENGINE_PROMPTS, OPT_ENGINE_PROMPTS
from langbrt.export.onnx_export import export_onnx, read_onnx_metadata
from langbrt.export.tensorrt_export import profile_shapes
from langbrt.export.triton_repo import InstanceKind, RepoKind, config_pbtxt
from langbrt.text import default_text_encoder

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient (the test extra) carries Triton's ModelConfig schema")

ONNX_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT32: "TYPE_INT32"}
ENGINE_BATCH_SIZES = (1, 8, 32)  # what `langbrt-export --format triton-repo --fp16` builds by default


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder())
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", extra_prompt_slots=0)


def _parse(onnx_path, kind: RepoKind, instance_kind: InstanceKind = InstanceKind.AUTO):
    max_batch = max(ENGINE_BATCH_SIZES) if kind is RepoKind.ENGINE else 32
    text = config_pbtxt(read_onnx_metadata(onnx_path), model_name="langbrt", kind=kind, max_batch_size=max_batch,
                        preferred_batch_sizes=(4, 8, 16), max_queue_delay_us=2000, instances=1,
                        instance_kind=instance_kind)
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize("kind, instance_kind", [(RepoKind.ONNX, k) for k in InstanceKind]
                         + [(RepoKind.ENGINE, InstanceKind.AUTO), (RepoKind.ENGINE, InstanceKind.GPU)])
def test_every_config_parses_as_a_triton_model_config(onnx_path, kind, instance_kind):
    config = _parse(onnx_path, kind, instance_kind)
    assert config.name == "langbrt" and config.max_batch_size > 0
    assert config.platform == {RepoKind.ONNX: "onnxruntime_onnx", RepoKind.ENGINE: "tensorrt_plan"}[kind]
    group_kind = model_config_pb2.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind)
    assert group_kind == ("KIND_GPU" if kind is RepoKind.ENGINE else f"KIND_{instance_kind.value.upper()}")


def test_the_config_declares_the_tensors_of_the_onnx_file_it_serves(onnx_path):
    """Names, types and every fixed dimension; the batch dim is Triton's (max_batch_size > 0), the prompts
    per image dim (-1) each request's."""
    config = _parse(onnx_path, RepoKind.ONNX)
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    for declared, tensors in ((config.input, graph.input), (config.output, graph.output)):
        model = {t.name: t.type.tensor_type for t in tensors}
        assert [t.name for t in declared] == list(model)
        for tensor in declared:
            dims = [d.dim_value or -1 for d in model[tensor.name].shape.dim]  # a named (dynamic) dim reads 0
            assert dims == [-1, *tensor.dims], tensor.name
            assert model_config_pb2.DataType.Name(tensor.data_type) == ONNX_TYPES[model[tensor.name].elem_type]


def test_an_onnx_config_asks_for_no_cuda_graph_or_execution_accelerator(onnx_path):
    """onnxruntime's backend ignores optimization.cuda; its TensorRT accelerator would build engines on the server
    with a profile and precision this export does not control."""
    assert not _parse(onnx_path, RepoKind.ONNX).HasField("optimization")


def test_engine_cuda_graphs_name_every_input_at_shapes_the_engine_profile_accepts(onnx_path):
    """Without graph_spec, Triton's TensorRT backend captured the profile's optimum prompt count unannounced, and
    requests of any other count silently ran without a graph; each spec must name every input (the backend skips
    a spec that misses one) at a shape inside the engine's optimisation profile."""
    config = _parse(onnx_path, RepoKind.ENGINE)
    cuda = config.optimization.cuda
    assert cuda.graphs and [spec.batch_size for spec in cuda.graph_spec] == [1, 4, 8, 16, 32]
    declared = {tensor.name: list(tensor.dims) for tensor in config.input}
    for spec in cuda.graph_spec:
        assert set(spec.input) == set(declared)
        for name, dims in declared.items():
            shape = [spec.batch_size, *spec.input[name].dim]
            low, _, high = profile_shapes([-1, *dims], ENGINE_BATCH_SIZES)
            assert all(lo <= d <= hi for lo, d, hi in zip(low, shape, high, strict=True)), (name, shape)
            if -1 in dims:
                assert spec.input[name].dim == [OPT_ENGINE_PROMPTS] and OPT_ENGINE_PROMPTS <= MAX_ENGINE_PROMPTS
