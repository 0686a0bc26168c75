"""Specification of the training losses (paper eq. 5-11) and of loading their pretrained weights offline."""

import json

import pytest
import torch

from langbrt.errors import CheckpointError, LangBRTInputError
from langbrt.training.losses import (
    AlphaClipVisual,
    LossWeights,
    SemanticLoss,
    VGGPerceptual,
    blemish_target,
    component_loss,
    consistency_loss,
    detection_loss,
    discriminator_loss,
    generator_adversarial_loss,
    per_prompt_detection_loss,
    require_loss_weights,
    set_requires_grad,
)


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A source image and a target that differs only in one 4x4 'blemish' patch."""
    torch.manual_seed(seed)
    source = torch.rand(2, 3, 16, 16)
    target = source.clone()
    target[:, :, 4:8, 4:8] = 0.5
    return source, target


# weights


def test_active_lists_terms_with_positive_weight():
    assert LossWeights(perceptual=0, semantic=0).active() == ["detection", "component", "adversarial", "l1"]


def test_negative_weight_is_refused_naming_the_flag():
    with pytest.raises(LangBRTInputError, match="--perceptual-weight"):
        LossWeights(perceptual=-1)


# detection (eq. 5, 6)


def test_tau_target_is_in_unit_range_and_highlights_changed_pixels():
    source, target = _pair()
    tau = blemish_target(source, target)
    assert tau.shape == (2, 1, 16, 16)
    assert tau.min() >= 0 and tau.max() <= 1
    changed = torch.zeros(16, 16, dtype=torch.bool)
    changed[4:8, 4:8] = True
    assert tau[:, 0, ~changed].max() == 0
    assert tau[:, 0, changed].max() == 1


def test_tau_of_identical_images_is_zero():
    source, _ = _pair()
    assert blemish_target(source, source).abs().max() == 0


def test_l1_detection_loss_is_zero_for_the_perfect_map_and_positive_otherwise():
    source, target = _pair()
    perfect = blemish_target(source, target)
    assert detection_loss(perfect, source, target, kind="l1") == 0
    assert detection_loss(torch.zeros_like(perfect), source, target, kind="l1") > 0


def test_bce_detection_loss_is_smallest_at_the_label():
    source, target = _pair()
    at_label = blemish_target(source, target).clone().requires_grad_(True)
    loss = detection_loss(at_label, source, target)  # bce is the default
    loss.backward()
    assert at_label.grad.abs().max() < 1e-4
    perturbed = (at_label.detach() + 0.1 * torch.randn_like(at_label)).clamp(0, 1)
    assert detection_loss(perturbed, source, target) > loss


def test_detection_loss_uses_the_exact_mask_when_given_and_passes_gradients():
    source, target = _pair()
    exact = torch.zeros(2, 1, 16, 16)
    exact[:, :, 0:2, 0:2] = 1
    soft = exact.clone().requires_grad_(True)
    assert detection_loss(soft, source, target, exact_mask=exact, kind="l1") == 0
    loss = detection_loss(soft, source, target, kind="l1")  # tau target differs from `exact`
    loss.backward()
    assert loss > 0 and soft.grad.abs().sum() > 0


def test_component_loss_counts_errors_only_inside_regions():
    source, target = _pair()
    perfect = blemish_target(source, target)
    wrong_outside = perfect.clone()
    wrong_outside[:, :, 12:, 12:] = 1  # error far from the region below
    regions = torch.zeros(2, 2, 16, 16)
    regions[:, 0, 2:10, 2:10] = 1
    regions[:, 1, 0:2, 0:2] = 1
    assert component_loss(wrong_outside, source, target, regions, kind="l1") == 0
    inside = perfect.clone().requires_grad_(True)
    loss = component_loss(inside + regions[:, :1], source, target, regions, kind="l1")
    loss.backward()
    assert loss > 0 and inside.grad.abs().sum() > 0


def test_component_loss_is_zero_without_region_masks():
    source, target = _pair()
    assert component_loss(torch.rand(2, 1, 16, 16), source, target, None) == 0


def test_per_prompt_detection_loss_ignores_padding_slots():
    masks = (torch.rand(2, 3, 8, 8) > 0.5).float()
    valid = torch.tensor([[True, True, False], [True, False, False]])
    soft = masks.clone()
    soft[0, 2] = 1 - masks[0, 2]  # wrong, but in a padding slot
    assert per_prompt_detection_loss(soft, masks, valid, kind="l1") == 0
    soft[1, 0] = 1 - masks[1, 0]
    assert per_prompt_detection_loss(soft, masks, valid) > 0
    assert per_prompt_detection_loss(soft, masks, torch.zeros_like(valid)) == 0


def test_per_prompt_detection_loss_of_a_batch_is_the_mean_of_its_images_losses():
    """As the semantic loss: the same global batch in one process or split over torchrun ranks (QA)."""
    masks, soft = (torch.rand(3, 3, 8, 8) > 0.5).float(), torch.rand(3, 3, 8, 8)
    valid = torch.tensor([[True, True, True], [True, False, False], [False, False, False]])
    alone = [per_prompt_detection_loss(soft[i : i + 1], masks[i : i + 1], valid[i : i + 1]) for i in range(3)]
    torch.testing.assert_close(per_prompt_detection_loss(soft, masks, valid), torch.stack(alone).mean())


# adversarial (eq. 7, 8)


def test_generator_loss_is_small_when_the_discriminator_is_fooled_and_large_when_not():
    fooled = generator_adversarial_loss(torch.full((1, 1, 4, 4), 10.0))
    caught = generator_adversarial_loss(torch.full((1, 1, 4, 4), -10.0))
    assert fooled < 1e-3 and caught > 9


def test_discriminator_loss_is_small_when_it_separates_real_from_fake():
    right = discriminator_loss(torch.full((1, 1, 4, 4), 10.0), torch.full((1, 1, 4, 4), -10.0))
    wrong = discriminator_loss(torch.full((1, 1, 4, 4), -10.0), torch.full((1, 1, 4, 4), 10.0))
    assert right < 1e-3 and wrong > 18


def test_set_requires_grad_freezes_and_unfreezes():
    net = torch.nn.Linear(2, 2)
    set_requires_grad(net, False)
    assert not any(p.requires_grad for p in net.parameters())
    set_requires_grad(net, True)
    assert all(p.requires_grad for p in net.parameters())


# VGG perceptual and consistency (eq. 9)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """Random VGG-19 conv weights saved in torchvision's key naming, plus a classifier key to be ignored."""
    torch.manual_seed(0)
    state = VGGPerceptual().state_dict()
    assert sorted(state)[:2] == ["features.0.bias", "features.0.weight"] and "features.34.weight" in state
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path_factory.mktemp("vgg") / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    return path


def test_vgg_keys_and_shapes_follow_torchvision_vgg19_features_numbering():
    # torchvision's vgg19().features: conv indices and (out, in) channels up to relu5_4.
    convs = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256), 14: (256, 256),
             16: (256, 256), 19: (512, 256), 21: (512, 512), 23: (512, 512), 25: (512, 512), 28: (512, 512),
             30: (512, 512), 32: (512, 512), 34: (512, 512)}
    expected = {}
    for index, (out_ch, in_ch) in convs.items():
        expected[f"features.{index}.weight"] = (out_ch, in_ch, 3, 3)
        expected[f"features.{index}.bias"] = (out_ch,)
    assert {k: tuple(v.shape) for k, v in VGGPerceptual().state_dict().items()} == expected


def test_vgg_loads_a_torchvision_named_state_dict(vgg_file):
    loaded = VGGPerceptual.from_file(vgg_file)
    saved = torch.load(vgg_file, weights_only=True)
    torch.testing.assert_close(loaded.features[34].weight, saved["features.34.weight"])
    assert not any(p.requires_grad for p in loaded.parameters())


def test_vgg_loads_the_same_weights_from_safetensors(vgg_file, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "vgg19.safetensors"
    save_file(torch.load(vgg_file, weights_only=True), str(path))
    loaded = VGGPerceptual.from_file(path)
    torch.testing.assert_close(loaded.features[34].weight, VGGPerceptual.from_file(vgg_file).features[34].weight)


@pytest.mark.parametrize("name", ["vgg19.pth", "vgg19.safetensors"])
def test_a_damaged_weights_file_is_one_line_naming_it(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00\x01 not weights at all")
    with pytest.raises(CheckpointError, match=f"cannot read .*{name} as VGG-19 weights") as err:
        VGGPerceptual.from_file(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["vgg19.pth", "vgg19.safetensors"])
def test_an_empty_weights_file_says_so_not_to_try_weights_only_false(tmp_path, name):
    """QA, 2026-11-26: torch's message for an empty file advised weights_only=False, which cannot help."""
    path = tmp_path / name
    path.touch()
    with pytest.raises(CheckpointError) as err:
        VGGPerceptual.from_file(path)
    assert str(err.value) == f"VGG-19 weights file {path} is empty (0 bytes); download or copy it again"


def test_vgg_refuses_a_file_that_is_not_vgg19(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="lacks"):
        VGGPerceptual.from_file(path)


def test_consistency_loss_is_zero_for_identical_images_and_positive_otherwise(vgg_file):
    vgg = VGGPerceptual.from_file(vgg_file)
    target = torch.rand(1, 3, 32, 32)
    zero, parts = consistency_loss(target, target, LossWeights(), vgg)
    assert zero == 0 and parts == {"l1": 0.0, "perceptual": 0.0}
    pred = (target + 0.1 * torch.randn_like(target)).requires_grad_(True)
    loss, parts = consistency_loss(pred, target, LossWeights(), vgg)
    loss.backward()
    assert parts["l1"] > 0 and parts["perceptual"] > 0 and pred.grad.abs().sum() > 0
    assert not parts["l1"].requires_grad and not parts["perceptual"].requires_grad  # logged, never a graph
    torch.testing.assert_close(loss.detach(), parts["l1"] + 10.0 * parts["perceptual"])


def test_zero_weights_switch_consistency_terms_off():
    pred, target = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    loss, parts = consistency_loss(pred, target, LossWeights(perceptual=0), None)
    assert set(parts) == {"l1"}
    loss, parts = consistency_loss(pred, target, LossWeights(l1=0, perceptual=0), None)
    assert loss == 0 and parts == {}


# Alpha-CLIP semantic term (eq. 10), on a tiny random CLIP saved in Alpha-CLIP's naming

TINY_ARCH = "langbrt-test-tiny-alpha-clip"
TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip_files(tmp_path_factory):
    """(visual checkpoint as Alpha-CLIP saves it, full CLIP state dict for the text tower, source model)."""
    open_clip = pytest.importorskip("open_clip")
    folder = tmp_path_factory.mktemp("alpha_clip")
    config_file = folder / f"{TINY_ARCH}.json"
    config_file.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config_file)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_ARCH, pretrained=None).eval()
    visual = {k.replace("attn.in_proj_", "attn.in_proj."): v for k, v in model.visual.state_dict().items()}
    visual["conv1_alpha.weight"] = torch.randn(32, 1, 16, 16) * 0.05
    torch.save(visual, folder / "alpha_visual.pth")
    torch.save(model.state_dict(), folder / "clip.pt")
    return folder / "alpha_visual.pth", folder / "clip.pt", model


def test_alpha_clip_visual_loads_alpha_clip_naming_and_matches_open_clip_with_alpha_off(tiny_clip_files):
    visual_path, _, source = tiny_clip_files
    visual = AlphaClipVisual.from_files(TINY_ARCH, visual_path)
    torch.testing.assert_close(visual.visual.conv1_alpha.weight, torch.load(visual_path)["conv1_alpha.weight"])
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        visual.visual.conv1_alpha.weight.zero_()
        expected = source.visual((images - visual.mean) / visual.std)
        torch.testing.assert_close(visual(images, torch.ones(2, 1, 32, 32)), expected)


def test_alpha_mask_changes_the_image_embedding(tiny_clip_files):
    visual = AlphaClipVisual.from_files(TINY_ARCH, tiny_clip_files[0])
    images = torch.rand(1, 3, 48, 48)  # resized to the tower's 32x32 inside
    whole, none = torch.ones(1, 1, 48, 48), torch.zeros(1, 1, 48, 48)
    with torch.no_grad():
        assert not torch.allclose(visual(images, whole), visual(images, none))


def test_plain_clip_visual_without_conv1_alpha_is_refused_clearly(tiny_clip_files, tmp_path):
    _, _, source = tiny_clip_files
    path = tmp_path / "plain_visual.pth"
    torch.save(source.visual.state_dict(), path)
    with pytest.raises(CheckpointError, match="conv1_alpha.*not Alpha-CLIP"):
        AlphaClipVisual.from_files(TINY_ARCH, path)


def _semantic_loss(tiny_clip_files) -> SemanticLoss:
    visual_path, text_path, _ = tiny_clip_files
    return require_loss_weights(LossWeights(perceptual=0), None, str(visual_path), str(text_path),
                                clip_arch=TINY_ARCH).semantic


def test_semantic_loss_is_a_cosine_and_its_gradient_reaches_the_generated_image(tiny_clip_files):
    loss_fn = _semantic_loss(tiny_clip_files)
    images = torch.rand(2, 3, 40, 40, requires_grad=True)
    masks = (torch.rand(2, 2, 40, 40) > 0.5).float()
    prompts = [["acne", "dark circles"], ["forehead wrinkles", ""]]
    valid = torch.tensor([[True, True], [True, False]])
    loss = loss_fn(images, masks, prompts, valid)
    loss.backward()
    # eq. 10 by hand: each valid slot's masked image against its own prompt, through the tower and the encoder
    slots = [(0, 0), (0, 1), (1, 0)]
    with torch.no_grad():
        image_emb = torch.cat([loss_fn.visual(images[b : b + 1], masks[b : b + 1, k : k + 1]) for b, k in slots])
        text_emb = loss_fn.text_encoder.encode([prompts[b][k] for b, k in slots])  # (3, D)
    cosine = torch.nn.functional.cosine_similarity(image_emb, text_emb.to(image_emb.dtype), dim=-1)  # (3,)
    expected = (cosine[:2].mean() + cosine[2]) / 2  # each image's mean over its prompts, then over the images
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss_fn.parameters())


def test_semantic_loss_of_a_batch_is_the_mean_of_its_images_losses(tiny_clip_files):
    """QA, 2026-11-28: a mean over the batch's valid slots weighed an image with more prompts more, so 2 torchrun
    ranks of batch 1 (DDP averages their losses' gradients) trained on another loss than 1 process of batch 2."""
    loss_fn = _semantic_loss(tiny_clip_files)
    images, masks = torch.rand(3, 3, 32, 32), (torch.rand(3, 2, 32, 32) > 0.5).float()
    prompts = [["acne", "dark circles"], ["forehead wrinkles", ""], ["", ""]]
    valid = torch.tensor([[True, True], [True, False], [False, False]])
    with torch.no_grad():
        whole = loss_fn(images, masks, prompts, valid)
        alone = [loss_fn(images[i : i + 1], masks[i : i + 1], prompts[i : i + 1], valid[i : i + 1]) for i in range(3)]
    torch.testing.assert_close(whole, torch.stack(alone).mean(), atol=1e-6, rtol=1e-6)


def test_semantic_loss_is_zero_without_valid_prompts(tiny_clip_files):
    loss_fn = _semantic_loss(tiny_clip_files)
    loss = loss_fn(torch.rand(1, 3, 32, 32), torch.ones(1, 1, 32, 32), [[""]], torch.zeros(1, 1, dtype=torch.bool))
    assert loss == 0


# require_loss_weights


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """A torch hub cache with no VGG-19 in it."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def test_all_pretrained_terms_off_needs_no_files(empty_hub):
    resources = require_loss_weights(LossWeights(perceptual=0, semantic=0), None, None, None)
    assert resources.perceptual is None and resources.semantic is None


@pytest.mark.parametrize(
    ("weights", "paths", "flags"),
    [
        (LossWeights(semantic=0), (None, None, None), ("--vgg-weights", "--perceptual-weight 0")),
        (LossWeights(semantic=0), ("/no/vgg.pth", None, None), ("/no/vgg.pth", "--perceptual-weight 0")),
        (LossWeights(perceptual=0), (None, None, "t.pt"), ("--alpha-clip-weights", "--semantic-weight 0")),
        (LossWeights(perceptual=0), (None, "__file__", None), ("--clip-text-weights", "--semantic-weight 0")),
    ],
)
def test_missing_weight_files_stop_training_with_one_line_naming_the_flags(empty_hub, weights, paths, flags):
    paths = tuple(__file__ if p == "__file__" else p for p in paths)
    with pytest.raises(LangBRTInputError) as err:
        require_loss_weights(weights, *paths)
    message = str(err.value)
    assert "\n" not in message and all(flag in message for flag in flags)


def test_vgg_is_found_in_the_torch_hub_cache(tmp_path, monkeypatch, vgg_file):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "vgg19-dcbb9e9d.pth").write_bytes(vgg_file.read_bytes())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert isinstance(require_loss_weights(LossWeights(semantic=0), None, None, None).perceptual, VGGPerceptual)
