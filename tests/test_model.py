"""The LangBRT generator on the tiny preset (and one paper-sized forward): shapes, gradients, the blend."""

import pytest
import torch

from langbrt import LangBRT, LangBRTConfig, LangBRTInputError
from langbrt.modules.decoder import Decoder
from langbrt.modules.discriminator import PatchDiscriminator
from langbrt.modules.encoder import Encoder
from langbrt.modules.tbd import TextPromptedDetection
from langbrt.modules.tca import LatentTransformer
from langbrt.text import default_text_encoder

PROMPTS = ["dark circles under the eyes", "forehead wrinkles", "acne on the cheeks", "pimples on my chin"]


@pytest.fixture(scope="module")
def encoder():
    return default_text_encoder()


@pytest.fixture()
def tiny(encoder):
    torch.manual_seed(0)
    return LangBRT(LangBRTConfig.tiny(), text_encoder=encoder)


@pytest.fixture()
def images():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_encoder_downsamples_by_the_stride_with_skips():
    cfg = LangBRTConfig.tiny()
    latent, skips = Encoder(cfg)(torch.rand(2, 3, 64, 64))
    assert cfg.stride == 4
    assert latent.shape == (2, 32, 16, 16)
    assert [s.shape[-1] for s in skips] == [64, 32]
    assert LangBRTConfig.paper().stride == 8


def test_tbd_gives_one_map_per_prompt_and_a_combined_map():
    cfg = LangBRTConfig.tiny()
    tbd = TextPromptedDetection(cfg)
    vectors = tbd.prompt_vectors(torch.randn(4, cfg.text_dim), torch.tensor([0, -1, 2, -1]))
    maps = tbd(torch.randn(2, 32, 16, 16), vectors, torch.ones(2, 4))
    assert vectors.shape == (4, 32)
    assert maps.soft_maps.shape == maps.maps.shape == (2, 4, 16, 16)
    assert maps.mask.shape == maps.soft_mask.shape == (2, 1, 16, 16)
    assert 0.0 <= float(maps.mask.detach().min()) and float(maps.mask.detach().max()) <= 1.0


def test_a_model_without_predefined_prompts_runs_user_prompts(encoder, images):
    """predefined_prompts=() passes the config check, but picking psi_i one-hot over zero classes refused the
    clamped index 0 of every user prompt: each forward was a RuntimeError."""
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(predefined_prompts=()), text_encoder=encoder).eval()
    with torch.no_grad():
        out = model(images, [["acne"], ["forehead wrinkles", "acne"]])
    assert out.maps.shape == (2, 2, 64, 64) and torch.isfinite(out.image).all()


def test_predefined_prompts_use_their_own_mapping_layer():
    cfg = LangBRTConfig.tiny()
    tbd = TextPromptedDetection(cfg)
    with torch.no_grad():
        tbd.predefined_weight[1].mul_(3.0)
    emb = torch.randn(1, cfg.text_dim)
    user = tbd.prompt_vectors(emb, torch.tensor([-1]))
    torch.testing.assert_close(tbd.prompt_vectors(emb, torch.tensor([0])), user)  # psi_0 starts at identity
    torch.testing.assert_close(tbd.prompt_vectors(emb, torch.tensor([1])), 3.0 * user)


def test_transformer_and_decoder_keep_shapes():
    cfg = LangBRTConfig.tiny()
    feats = torch.randn(2, 32, 16, 16)
    out = LatentTransformer(cfg)(feats, torch.rand(2, 1, 16, 16))
    assert out.shape == feats.shape
    _, skips = Encoder(cfg)(torch.rand(2, 3, 64, 64))
    assert Decoder(cfg)(out, skips).shape == (2, 3, 64, 64)


def test_discriminator_scores_patches():
    logits = PatchDiscriminator(channels=8)(torch.rand(2, 3, 64, 64))
    assert logits.ndim == 4 and logits.shape[:2] == (2, 1) and logits.shape[-1] > 1


def test_forward_returns_image_mask_and_per_prompt_maps(tiny, images):
    out = tiny(images, [PROMPTS[:2], PROMPTS[2:3]])
    assert out.image.shape == (2, 3, 64, 64) and out.image.dtype == torch.float32
    assert out.mask.shape == (2, 1, 64, 64)
    assert out.maps.shape == (2, 2, 64, 64)
    assert torch.all(out.maps[1, 1] == 0)  # the second image has one prompt: its second slot is padding
    assert 0.0 <= float(out.image.detach().min()) and float(out.image.detach().max()) <= 1.0


def test_default_prompts_are_the_predefined_ones(tiny, images):
    assert tiny(images).maps.shape[1] == len(LangBRTConfig.tiny().predefined_prompts)


def test_gradients_reach_every_generator_parameter(tiny, images):
    out = tiny(images, [PROMPTS, PROMPTS])
    (out.image.sum() + out.soft_maps.sum()).backward()
    missing = [n for n, p in tiny.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_zero_maps_leave_the_image_bit_identical(tiny, images):
    table = tiny.prompt_table([PROMPTS, PROMPTS], 2)
    out = tiny.forward_table(images, table.embeddings, table.predefined_index, torch.zeros(2, len(PROMPTS)))
    assert torch.all(out.mask == 0)
    assert torch.equal(out.image, images)


def test_pixels_outside_the_map_are_bit_identical(encoder, images):
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(map_threshold=0.45, map_saturation=0.55), text_encoder=encoder)
    with torch.no_grad():
        model.tbd.map_bias.fill_(0.0)  # probabilities straddle the threshold: part of the map is closed
    out = model(images, [PROMPTS[:1], PROMPTS[1:2]])
    outside = (out.mask == 0).expand_as(images)
    assert outside.any() and (~outside).any()
    assert torch.equal(out.image[outside], images[outside])


def test_a_predefined_prompt_behind_an_invisible_character_keeps_its_own_mapping_layer(tiny, images):
    """'\ufeffacne on the cheeks' (a prompt read from a file with a byte-order mark) looks like the pre-defined
    prompt and embeds like it; it ran as a user prompt, through the shared projection: another map (QA)."""
    table = tiny.prompt_table([["\ufeffacne on the cheeks", "forehead\u200b wrinkles"]], 1)
    assert table.predefined_index.tolist() == [2, 1]


def test_changing_the_prompt_changes_the_maps(tiny, images):
    a = tiny(images, [["acne on the right cheek"]] * 2)
    b = tiny(images, [["forehead wrinkles"]] * 2)
    assert not torch.allclose(a.soft_maps, b.soft_maps)


def test_prompt_casing_and_spacing_do_not_matter(tiny, images):
    a = tiny(images, [["Acne on the  RIGHT cheek"]] * 2)
    b = tiny(images, [["acne on the right cheek "]] * 2)
    assert torch.equal(a.soft_maps, b.soft_maps)


def test_bad_prompt_lists_are_rejected(tiny, images):
    with pytest.raises(LangBRTInputError):
        tiny(images, [["acne"]])
    with pytest.raises(LangBRTInputError):
        tiny(images, [[], ["acne"]])
    with pytest.raises(LangBRTInputError):
        tiny(images, [["   "], ["acne"]])


def test_image_size_must_fit_the_stride(tiny):
    with pytest.raises(LangBRTInputError):
        tiny(torch.rand(1, 3, 62, 64), [["acne"]])


def test_a_one_cell_latent_is_refused_by_the_config_and_by_the_forward(encoder):
    """A (stride x stride) image leaves one latent cell, where a GroupNorm of the narrow encoder stages sees one
    value per group: a ValueError from torch on a config the check accepted (image_size == stride)."""
    with pytest.raises(LangBRTInputError, match="image_size 2 gives a 1x1 latent"):
        LangBRTConfig(image_size=2, encoder_channels=(8,), embed_dim=8, num_heads=1)
    model = LangBRT(LangBRTConfig(image_size=4, encoder_channels=(8,), embed_dim=8, num_heads=1), text_encoder=encoder)
    with pytest.raises(LangBRTInputError, match=r"image size \(2, 2\) gives a 1x1 latent"):
        model.eval()(torch.rand(1, 3, 2, 2), [["acne"]])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float64, torch.float16])
def test_images_of_another_dtype_than_the_model_are_one_input_error(tiny, images, dtype):
    """Not the first linear layer's 'mat1 and mat2 must have the same dtype' (QA)."""
    with pytest.raises(LangBRTInputError, match=f"images are {dtype} but the model is torch.float32"):
        tiny(images.to(dtype), [["acne"], ["acne"]])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_low_precision_images_under_autocast_still_run(tiny, images, dtype):
    """Autocast casts each op's inputs, so bf16 images into an fp32 model are legitimate there (QA)."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny(images.to(dtype), [["acne"], ["acne"]])
    assert out.image.shape == images.shape


def test_uint8_images_are_refused_under_autocast_too(tiny, images):
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(LangBRTInputError, match="torch.uint8"):
        tiny(images.mul(255).to(torch.uint8), [["acne"], ["acne"]])


def test_one_image_without_its_batch_dimension_is_named_as_such(tiny, images):
    """A (3, H, W) image used to reach the prompt check first, as '1 prompt lists for 3 images'."""
    with pytest.raises(LangBRTInputError, match=r"images must be \(B, 3, H, W\), got \(3, 64, 64\)"):
        tiny(images[0], [["acne"]])


def test_an_empty_batch_is_one_input_error_not_an_error_inside_the_network(tiny, images):
    """B = 0 reached the GroupNorm: RuntimeError "Non-empty 4D data tensor expected" (QA)."""
    with pytest.raises(LangBRTInputError, match=r"empty batch \(B = 0\)"):
        tiny(images[:0], [])
    table = tiny.prompt_table([["acne"]], 1)
    with pytest.raises(LangBRTInputError, match=r"empty batch \(B = 0\)"):
        tiny.forward_table(images[:0], table.embeddings, table.predefined_index, table.weights[:0])


def test_prompts_that_are_no_list_are_one_input_error(tiny, images):
    with pytest.raises(LangBRTInputError, match="one list of strings per image, got int"):
        tiny(images[:1], 5)


def test_a_bare_string_of_prompts_is_named_as_such(tiny, images):
    with pytest.raises(LangBRTInputError, match="one list of strings per image, got a bare string"):
        tiny(images[:1], "acne")


@pytest.mark.slow
def test_paper_preset_runs_one_512_forward(encoder):
    cfg = LangBRTConfig.paper()
    assert (cfg.image_size, cfg.depth, len(cfg.predefined_prompts)) == (512, 7, 3)
    model = LangBRT(cfg, text_encoder=encoder).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 512, 512))
    assert out.image.shape == (1, 3, 512, 512)
    assert out.maps.shape == (1, 3, 512, 512)


@pytest.mark.parametrize(
    ("overrides", "absent"),
    [
        ({"use_detection": False}, "tbd."),
        ({"attention_kind": "self"}, "attn.q."),
        ({"learned_prompts": tuple(PROMPTS[:3])}, None),
    ],
    ids=["without-tbd", "without-tca", "without-prior"],
)
def test_ablations_build_train_and_round_trip(encoder, images, tmp_path, overrides, absent):
    torch.manual_seed(0)
    model = LangBRT(LangBRTConfig.tiny(**overrides), text_encoder=encoder)
    prompts = [["acne on the cheeks"], ["forehead wrinkles"]]
    out = model(images, prompts)
    out.image.sum().backward()
    assert out.image.shape == images.shape
    if absent is not None:
        assert not any(absent in name for name, _ in model.named_parameters())
    reloaded = LangBRT.from_pretrained(model.save_pretrained(tmp_path / "m"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images, prompts).image, model.eval()(images, prompts).image)


def test_without_prior_rejects_unlearned_prompts(encoder, images):
    learned = ("forehead wrinkles",)
    model = LangBRT(LangBRTConfig.tiny(predefined_prompts=learned, learned_prompts=learned), text_encoder=encoder)
    with pytest.raises(LangBRTInputError, match="known prompts: forehead wrinkles"):
        model(images, [["acne"], ["acne"]])


def test_a_predefined_prompt_a_model_without_prior_did_not_learn_is_refused_by_the_config():
    """Its default forward and its export (which bakes the pre-defined prompts) failed on that prompt."""
    with pytest.raises(LangBRTInputError, match=r"predefined_prompts\[1\] \('forehead wrinkles'\) must also be one"):
        LangBRTConfig.tiny(learned_prompts=("Dark circles under the eyes", "acne on the cheeks"))


def test_an_unknown_prompt_error_names_a_few_learned_prompts_not_thousands(encoder, images):
    """QA, 2026-11-26: a "w/o prior" model trained on FFHQR listed all 2 172 learned prompts in one line."""
    learned = tuple(f"blemish number {i}" for i in range(40))
    model = LangBRT(LangBRTConfig.tiny(predefined_prompts=(), learned_prompts=learned), text_encoder=encoder)
    with pytest.raises(LangBRTInputError) as info:
        model(images, [["acne"], ["acne"]])
    message = str(info.value)
    assert "blemish number 11" in message and "blemish number 12," not in message
    assert message.endswith("and 28 more") and len(message) < 600


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_a_model_without_a_position_code_runs(encoder, images, impl):
    """position_frequencies = 0 passes the config check (keys and values from the map alone), but building the
    code stacked an empty list: every forward was a RuntimeError, on either attention implementation."""
    from dataclasses import replace

    torch.manual_seed(0)
    model = LangBRT(replace(LangBRTConfig.tiny(), position_frequencies=0, attention=impl), text_encoder=encoder)
    out = model.eval()(images, [["acne"]] * images.shape[0])
    assert out.image.shape == images.shape and torch.isfinite(out.image).all()
