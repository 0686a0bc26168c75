"""ONNX export: the graph ONNX Runtime runs is LangBRT's `forward_table`, with its metadata embedded."""

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from langbrt import LangBRT, LangBRTConfig
from langbrt.artifact import (
    INPUT_EXTRA_EMBEDDINGS,
    INPUT_EXTRA_WEIGHTS,
    INPUT_IMAGES,
    INPUT_PROMPT_INDEX,
    INPUT_PROMPT_WEIGHTS,
    METADATA_KEY,
    OUTPUT_IMAGE,
    OUTPUT_MAPS,
    OUTPUT_MASK,
)
from langbrt.errors import CheckpointError, LangBRTInputError
from langbrt.export.graph import baked_table
from langbrt.export.onnx_export import export_onnx, max_opset, read_onnx_metadata
from langbrt.text import default_text_encoder

ATOL = 1e-4  # fp32, ORT CPU vs torch CPU; measured max abs diff ~2e-6
ADDED_PROMPT = "pimples on my chin"
EXTRA_PROMPT = "redness on the nose"
SLOTS = 4


@pytest.fixture(scope="module")
def encoder():
    return default_text_encoder()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, encoder):
    """A tiny model whose masks cover part of the image (map bias chosen so some pixels stay untouched)."""
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=encoder).eval()
    with torch.no_grad():
        model.tbd.map_bias.fill_(-4.5)
        model.tbd.feature_head[1].weight.mul_(30.0)
    model.embed_prompts(["wrinkles around the mouth"])  # a bank prompt beyond the pre-defined ones
    directory = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(directory)
    return model, directory


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    model, directory = checkpoint
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert export_onnx(model, path, extra_prompt_slots=SLOTS, prompts=[ADDED_PROMPT], checkpoint_dir=directory) == path
    return path


@pytest.fixture(scope="module")
def session(exported):
    return ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])


def _inputs_and_reference(model, encoder, metadata, batch_size):
    """Random images, each with its own table prompts in its own order (a weight-0 padding column in some
    rows), one extra prompt in slot 0 for the last image; torch's forward_table output for the same choice,
    its (B, T + E) maps gathered into the graph's (B, K + E) order."""
    g = torch.Generator().manual_seed(batch_size)
    images = torch.rand(batch_size, 3, 64, 64, generator=g)
    T = len(metadata.prompts)
    rows = [[0, 2, 4], [3, 1, 0], [4, 0, 2]]  # K = 3 per image, table rows in the image's order
    index = torch.tensor([rows[b % len(rows)] for b in range(batch_size)], dtype=torch.int32)  # (B, K)
    weights = torch.ones(batch_size, 3)
    weights[0, 2] = 0.0  # padding: image 0 asks for two prompts
    extra = torch.zeros(SLOTS, model.config.text_dim)
    extra[0] = encoder.encode([EXTRA_PROMPT])[0]
    extra_weights = torch.zeros(batch_size, SLOTS)
    extra_weights[-1, 0] = 1.0
    feeds = {INPUT_IMAGES: images.numpy(), INPUT_PROMPT_INDEX: index.numpy(), INPUT_PROMPT_WEIGHTS: weights.numpy(),
             INPUT_EXTRA_EMBEDDINGS: extra.numpy(), INPUT_EXTRA_WEIGHTS: extra_weights.numpy()}
    table_weights = torch.zeros(batch_size, T)  # the same choice as weights over the whole table
    table_weights.scatter_(1, index.long(), weights)
    embeddings = torch.cat([model.embed_prompts(metadata.prompts), extra])  # (T + E, D)
    predefined = torch.tensor(metadata.predefined_index + [-1] * SLOTS)
    with torch.no_grad():
        ref = model.forward_table(images, embeddings, predefined, torch.cat([table_weights, extra_weights], dim=1))
    order = torch.cat([index.long(), torch.arange(T, T + SLOTS).expand(batch_size, -1)], dim=1)  # (B, K + E)
    maps = torch.gather(ref.maps, 1, order[:, :, None, None].expand(-1, -1, 64, 64))
    maps[:, :3] *= weights[:, :, None, None]  # a padding column's map is zero (weight 0), whatever its row
    return feeds, ref, maps


def test_exported_model_passes_the_onnx_checker(exported):
    onnx.checker.check_model(onnx.load(str(exported)), full_check=True)


def test_inputs_and_outputs_follow_the_artifact_contract_with_a_dynamic_batch(session):
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    assert list(inputs) == [INPUT_IMAGES, INPUT_PROMPT_INDEX, INPUT_PROMPT_WEIGHTS, INPUT_EXTRA_EMBEDDINGS,
                            INPUT_EXTRA_WEIGHTS]
    assert inputs[INPUT_IMAGES] == ["batch", 3, 64, 64]
    assert inputs[INPUT_PROMPT_INDEX] == inputs[INPUT_PROMPT_WEIGHTS] == ["batch", "prompts"]
    assert next(i.type for i in session.get_inputs() if i.name == INPUT_PROMPT_INDEX) == "tensor(int32)"
    assert inputs[INPUT_EXTRA_EMBEDDINGS] == [SLOTS, 384]
    assert outputs == {OUTPUT_IMAGE: ["batch", 3, 64, 64], OUTPUT_MASK: ["batch", 1, 64, 64],
                       OUTPUT_MAPS: ["batch", "maps", 64, 64]}


def test_maps_come_back_for_the_prompts_asked_not_for_the_whole_table(checkpoint, encoder, tmp_path):
    """A version-1 export computed a full-size map for every baked prompt (2 079 for the bundled model:
    9x the checkpoint's time, over 10 GB at batch 8); the graph now gathers the K prompts an image names."""
    model = LangBRT.from_pretrained(checkpoint[1], text_encoder=encoder).eval()  # embedding adds to its bank
    many = [f"blemish number {i}" for i in range(40)]
    path = export_onnx(model, tmp_path / "big.onnx", extra_prompt_slots=0, prompts=many)
    assert len(read_onnx_metadata(path).prompts) == 44  # 3 pre-defined, 1 bank prompt, 40 added
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _, _, maps = session.run(None, {INPUT_IMAGES: np.random.rand(2, 3, 64, 64).astype(np.float32),
                                    INPUT_PROMPT_INDEX: np.array([[43], [7]], np.int32),
                                    INPUT_PROMPT_WEIGHTS: np.ones((2, 1), np.float32)})
    assert maps.shape == (2, 1, 64, 64)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_onnxruntime_matches_torch_forward_table(checkpoint, encoder, exported, session, batch_size):
    model, _ = checkpoint
    feeds, ref, ref_maps = _inputs_and_reference(model, encoder, read_onnx_metadata(exported), batch_size)
    image, mask, maps = session.run(None, feeds)
    np.testing.assert_allclose(image, ref.image.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(mask, ref.mask.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(maps, ref_maps.numpy(), atol=ATOL, rtol=0)
    assert ref.mask.amax() > 0 and ref_maps[:, :2].amax() > 0  # the comparison is of maps that show something


def test_pixels_outside_the_mask_are_the_input_exactly_in_onnxruntime(checkpoint, encoder, exported, session):
    model, _ = checkpoint
    feeds, _, _ = _inputs_and_reference(model, encoder, read_onnx_metadata(exported), 3)
    image, mask, _ = session.run(None, feeds)
    untouched = np.broadcast_to(mask == 0.0, image.shape)
    assert 0.05 < untouched.mean() < 0.95, "the test model should retouch part of each image"
    np.testing.assert_array_equal(image[untouched], feeds[INPUT_IMAGES][untouched])


def test_metadata_round_trips_with_the_baked_table_and_checkpoint_hash(checkpoint, exported):
    model, directory = checkpoint
    metadata = read_onnx_metadata(exported)
    assert metadata.prompts == [*model.predefined_prompts, "wrinkles around the mouth", ADDED_PROMPT]
    assert metadata.predefined_index == [0, 1, 2, -1, -1]
    assert metadata.model_hash == hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    assert (metadata.image_size, metadata.text_dim, metadata.extra_prompt_slots) == (64, 384, SLOTS)
    assert (metadata.text_encoder, metadata.precision, metadata.opset) == (model.config.text_encoder, "fp32", 17)
    keys = [p.key for p in onnx.load(str(exported)).metadata_props]
    assert keys.count(METADATA_KEY) == 1


def test_table_is_predefined_then_bank_then_added_without_duplicates(checkpoint):
    model, _ = checkpoint
    table = baked_table(model, ["Forehead  Wrinkles", ADDED_PROMPT, ADDED_PROMPT.upper()])
    assert table.texts == [*model.predefined_prompts, "wrinkles around the mouth", ADDED_PROMPT]
    assert table.embeddings.shape == (5, 384)
    assert table.predefined_index.tolist() == [0, 1, 2, -1, -1]


def test_export_without_extra_slots_has_only_images_and_prompt_inputs(checkpoint, tmp_path):
    model, _ = checkpoint
    path = export_onnx(model, tmp_path / "fixed.onnx", extra_prompt_slots=0)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_IMAGES, INPUT_PROMPT_INDEX, INPUT_PROMPT_WEIGHTS]
    metadata = read_onnx_metadata(path)
    image, _, maps = session.run(None, {INPUT_IMAGES: np.random.rand(2, 3, 64, 64).astype(np.float32),
                                        INPUT_PROMPT_INDEX: np.array([[0, 1], [2, 0]], np.int32),
                                        INPUT_PROMPT_WEIGHTS: np.ones((2, 2), np.float32)})
    assert image.shape == (2, 3, 64, 64) and maps.shape == (2, 2, 64, 64)
    assert metadata.extra_prompt_slots == 0


@pytest.mark.parametrize("opset", [13, max_opset() + 1])
def test_an_opset_outside_17_to_the_exporters_newest_is_rejected_and_nothing_is_written(checkpoint, tmp_path,
                                                                                         opset):
    model, _ = checkpoint
    with pytest.raises(LangBRTInputError, match=rf"use 17\.\.{max_opset()}"):
        export_onnx(model, tmp_path / "old.onnx", opset=opset)
    assert list(tmp_path.iterdir()) == []


def test_the_newest_opset_exports(checkpoint, tmp_path):
    model, _ = checkpoint
    path = export_onnx(model, tmp_path / "new.onnx", opset=max_opset(), extra_prompt_slots=0)
    assert read_onnx_metadata(path).opset == max_opset()


def test_reading_metadata_from_a_foreign_onnx_file_names_the_problem(tmp_path):
    path = tmp_path / "other.onnx"
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(CheckpointError, match="not a LangBRT export"):
        read_onnx_metadata(path)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="junk.onnx"):
        read_onnx_metadata(tmp_path / "junk.onnx")


def test_a_model_without_the_detector_is_refused_in_one_line(encoder, tmp_path):
    """The no-tbd ablation has no prompts or maps to bake (QA, 2026-11-26: an AttributeError traceback)."""
    model = LangBRT(LangBRTConfig.tiny(use_detection=False), text_encoder=encoder).eval()
    with pytest.raises(LangBRTInputError, match="no text-guided detector"):
        export_onnx(model, tmp_path / "m.onnx", extra_prompt_slots=0)
    assert not any(tmp_path.iterdir())


def test_a_model_without_a_language_model_bakes_its_learned_prompts_and_takes_no_extra_slots(encoder, tmp_path):
    """The no-prior ablation answers only its learned prompts: each is baked with its learned vector, so
    ONNX Runtime gives torch's maps for it; extra slots, which a text encoder would fill with vectors the
    model never trained with, are refused (QA, 2026-11-26: ONNX ran any prompt, and differently)."""
    learned = (*LangBRTConfig.tiny().predefined_prompts, "remove zits on the chin")  # as --ablation no-prior
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(learned_prompts=learned), text_encoder=encoder).eval()
    with pytest.raises(LangBRTInputError, match="pass --extra-prompt-slots 0"):
        export_onnx(model, tmp_path / "slots.onnx", extra_prompt_slots=SLOTS)
    path = export_onnx(model, tmp_path / "m.onnx", extra_prompt_slots=0)
    metadata = read_onnx_metadata(path)
    assert set(learned) <= set(metadata.prompts)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    row = np.array([[metadata.prompts.index("remove zits on the chin")]], np.int32)  # (1, K = 1)
    image, mask, maps = session.run(None, {INPUT_IMAGES: images.numpy(), INPUT_PROMPT_INDEX: row,
                                           INPUT_PROMPT_WEIGHTS: np.ones((1, 1), np.float32)})
    with torch.no_grad():
        expected = model(images, [["remove zits on the chin"]])
    np.testing.assert_allclose(image, expected.image.numpy(), atol=ATOL)
    np.testing.assert_allclose(mask, expected.mask.numpy(), atol=ATOL)


def test_a_new_prompt_for_a_no_prior_export_says_the_model_has_no_text_encoder(encoder, tmp_path):
    """The slot error used to advise 'export with more slots', which the export refuses for this model."""
    from langbrt.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    learned = (*LangBRTConfig.tiny().predefined_prompts, "remove zits on the chin")
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(learned_prompts=learned), text_encoder=encoder).eval()
    backend = OnnxRuntimeBackend.load(export_onnx(model, tmp_path / "m.onnx", extra_prompt_slots=0))
    backend.prepare_prompts([["remove zits on the chin"]])  # a learned prompt still runs
    with pytest.raises(LangBRTInputError, match="no-prior.*no text encoder") as caught:
        backend.prepare_prompts([["a new blemish"]])
    assert "more slots" not in str(caught.value)


@pytest.mark.parametrize("attention_kind", ["tca", "self"])
def test_a_window_that_does_not_divide_the_latent_runs_in_onnxruntime_as_in_torch(encoder, tmp_path, attention_kind):
    """Windows of 5 over the tiny 16x16 latent pad it to 20: the traced padding once rounded down to 15 (ONNX
    Div truncates the ceil-by-negation idiom), and ONNX Runtime failed on the residual Add of the first block."""
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(window_size=5, attention_kind=attention_kind), text_encoder=encoder).eval()
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "m.onnx", extra_prompt_slots=0)),
                                   providers=["CPUExecutionProvider"])
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    image, mask, _ = session.run(None, {INPUT_IMAGES: images.numpy(), INPUT_PROMPT_INDEX: np.zeros((1, 1), np.int32),
                                        INPUT_PROMPT_WEIGHTS: np.ones((1, 1), np.float32)})
    with torch.no_grad():
        expected = model(images, [[model.predefined_prompts[0]]])
    np.testing.assert_allclose(image, expected.image.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(mask, expected.mask.numpy(), atol=ATOL, rtol=0)
