"""Specification of `langbrt.text`: prompt normalisation, text encoders, and the prompt bank."""

import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import warnings

import pytest
import torch
import torch.nn.functional as F

from langbrt.errors import CheckpointError, LangBRTError, LangBRTInputError
from langbrt.text import (
    MAX_PROMPT_CHARS,
    MiniLMTextEncoder,
    OpenClipTextEncoder,
    PromptBank,
    TextEncoder,
    default_text_encoder,
    normalize_prompt,
    text_encoder_from_name,
)
from langbrt.text.offline import hub_offline

# ---------------------------------------------------------------------------------------------------------
# Prompt normalisation


def test_normalize_prompt_casefolds_strips_and_collapses_whitespace() -> None:
    assert normalize_prompt("  Acne on the\t RIGHT\n\ncheek  ") == "acne on the right cheek"


def test_normalize_prompt_applies_nfkc() -> None:
    # Full-width letters and a non-breaking space are compatibility forms of plain ones.
    assert normalize_prompt("\uff21\uff23\uff2e\uff25\u00a0scars") == "acne scars"


def test_normalize_prompt_keeps_non_ascii_text() -> None:
    assert normalize_prompt("Acné sur la JOUE") == "acné sur la joue"


@pytest.mark.parametrize("text", ["\ufeffAcne on the cheeks", "acne on the\u200b cheeks\u2060",
                                  "acne on the che\u00adeks", "\u200eacne on the cheeks\u200f"])
def test_invisible_format_characters_do_not_make_another_prompt(text: str) -> None:
    """A byte-order mark, zero-width space, soft hyphen or direction mark (Unicode category Cf) is invisible and
    dropped by MiniLM's tokenizer, so the embedding was the same, but the key was not: the pre-defined prompt
    lost its own mapping layer and an export spent an extra slot on it (QA)."""
    assert normalize_prompt(text) == "acne on the cheeks"


@pytest.mark.parametrize("text", ["", "   ", "\t\n \u00a0", "\u200b", "\ufeff \u200d"])
def test_empty_or_whitespace_prompt_is_rejected(text: str) -> None:
    with pytest.raises(LangBRTInputError, match="prompt is empty"):
        normalize_prompt(text)


@pytest.mark.parametrize(("text", "reason"), [
    pytest.param("acne \ufffd on cheeks", "undecodable bytes", id="replacement-character"),
    pytest.param(b"acne \xff\xfe on cheeks".decode("utf-8", "surrogateescape"), "undecodable bytes",
                 id="command-line-bytes"),  # what Python makes of non-UTF-8 argv bytes
    pytest.param("acne\x07", "a control character", id="bell"),
])
def test_a_prompt_with_bytes_that_are_not_text_is_one_clear_error(text: str, reason: str) -> None:
    """QA, 2026-11-26: lone surrogates reached the tokenizer, whose TypeError was a traceback."""
    with pytest.raises(LangBRTInputError, match=f"prompt contains {reason}.*send plain UTF-8 text"):
        normalize_prompt(text)


@pytest.mark.parametrize("text", ["acne\non the cheeks", "acne\ton the cheeks", "acne on the cheeks\r\n", "\x85acne"])
def test_strict_refuses_the_whitespace_control_characters_the_default_folds(text: str) -> None:
    """The server's prompts are strict (any control character is a 422); the CLI's and the Python API's fold."""
    assert normalize_prompt(text) in ("acne on the cheeks", "acne")
    with pytest.raises(LangBRTInputError, match="prompt contains a control character"):
        normalize_prompt(text, strict=True)


def test_strict_still_folds_whitespace_that_is_no_control_character() -> None:
    assert normalize_prompt("acne\u00a0on the\u2028cheeks", strict=True) == "acne on the cheeks"


def test_prompt_at_the_length_limit_is_accepted_and_one_longer_is_rejected() -> None:
    assert len(normalize_prompt("a" * MAX_PROMPT_CHARS)) == MAX_PROMPT_CHARS
    with pytest.raises(LangBRTInputError, match=str(MAX_PROMPT_CHARS)):
        normalize_prompt("a" * (MAX_PROMPT_CHARS + 1))


def test_a_huge_prompt_is_refused_before_normalisation_and_its_error_line_stays_short() -> None:
    """U+FDFA grows 18-fold under NFKC: a megabyte of it held the server's event loop before the length check
    refused it (18 million characters then), and a control character's error line echoed the whole prompt."""
    with pytest.raises(LangBRTInputError, match="1000000 characters long") as err:
        normalize_prompt("\ufdfa" * 1_000_000)
    assert len(str(err.value)) < 200
    with pytest.raises(LangBRTInputError, match="control character") as err:
        normalize_prompt("acne\x07" + "a" * 2000, strict=True)
    assert len(str(err.value)) < MAX_PROMPT_CHARS + 200


# ---------------------------------------------------------------------------------------------------------
# Import cost and offline loading


def test_importing_langbrt_text_does_not_import_transformers_or_open_clip() -> None:
    code = (
        "import sys, langbrt.text; "
        "print([m for m in ('transformers', 'open_clip', 'sentence_transformers') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_hub_offline_sets_the_switches_and_restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    with hub_offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in os.environ
    assert os.environ["TRANSFORMERS_OFFLINE"] == "0"


def _no_network(*args: object, **kwargs: object) -> None:
    raise OSError("network access attempted during a test that must run offline")


@pytest.fixture(scope="module")
def minilm() -> MiniLMTextEncoder:
    """One MiniLM encoder for the module, loaded with every network path cut."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket.socket, "connect_ex", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        mp.setenv("HF_HUB_OFFLINE", "1")
        encoder = MiniLMTextEncoder()
        encoder.load()
        encoder.encode(["warm up"])
    return encoder


def test_minilm_loads_offline_and_ranks_a_paraphrase_above_an_unrelated_prompt(
    minilm: MiniLMTextEncoder,
) -> None:
    acne, pimples, wrinkles = minilm.encode(
        ["acne on the right cheek", "pimples on the right cheek", "forehead wrinkles"]
    )
    assert torch.dot(acne, pimples) > torch.dot(acne, wrinkles) + 0.2


def test_minilm_embeddings_are_unit_norm_float32_cpu_384d_without_grad(minilm: MiniLMTextEncoder) -> None:
    emb = minilm.encode(["acne", "dark circles under the eyes", "a much longer prompt " * 20])
    assert emb.shape == (3, 384) and minilm.dim == 384
    assert emb.dtype == torch.float32 and emb.device.type == "cpu" and not emb.requires_grad
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))


def test_minilm_is_a_text_encoder_and_constructing_it_loads_nothing() -> None:
    encoder = MiniLMTextEncoder()
    assert isinstance(encoder, TextEncoder)
    assert not encoder.loaded
    assert encoder.name == "minilm:all-MiniLM-L6-v2"


def test_default_text_encoder_is_one_minilm_instance_per_process() -> None:
    assert default_text_encoder() is default_text_encoder()
    assert default_text_encoder().name == MiniLMTextEncoder().name


def test_same_prompt_in_other_casing_and_spacing_gets_the_identical_embedding(
    minilm: MiniLMTextEncoder,
) -> None:
    bank = PromptBank(minilm)
    a, b = bank.embed(["Acne on the  RIGHT cheek", " acne on the right cheek"])
    assert torch.equal(a, b)
    assert bank.texts == ["acne on the right cheek"]


# ---------------------------------------------------------------------------------------------------------
# Registry


def test_text_encoder_from_name_rebuilds_minilm_from_its_name() -> None:
    assert text_encoder_from_name("minilm:all-MiniLM-L6-v2") is default_text_encoder()


def test_text_encoder_from_name_needs_weights_for_open_clip_and_names_the_option() -> None:
    """The option named is one the CLIs have (it once named `--text-weights`, which none had)."""
    with pytest.raises(LangBRTError, match="--clip-text-weights PATH"):
        text_encoder_from_name("open_clip:ViT-B-16")


def test_text_encoder_from_name_rejects_unknown_names() -> None:
    with pytest.raises(LangBRTInputError, match="unknown text encoder"):
        text_encoder_from_name("word2vec:google-news")


# ---------------------------------------------------------------------------------------------------------
# PromptBank with a fake encoder


class CountingEncoder:
    """Deterministic fake: embedding from a hash of the text; records every encode() batch."""

    def __init__(self, name: str = "fake:hash", dim: int = 8) -> None:
        self.name, self.dim = name, dim
        self.calls: list[list[str]] = []

    def encode(self, texts: list[str]) -> torch.Tensor:
        self.calls.append(list(texts))
        rows = [
            torch.tensor(list(hashlib.sha256(t.encode()).digest()[: self.dim]), dtype=torch.float32)
            for t in texts
        ]
        return F.normalize(torch.stack(rows) + 1.0, dim=-1)


def test_prompt_bank_encodes_only_missing_prompts_in_one_batch() -> None:
    encoder = CountingEncoder()
    bank = PromptBank(encoder)
    bank.embed(["acne", "Scars"])
    out = bank.embed(["scars", "wrinkles", "moles", "WRINKLES", "acne"])
    bank.embed(["moles"])
    assert encoder.calls == [["acne", "scars"], ["wrinkles", "moles"]]
    assert out.shape == (5, 8)
    assert torch.equal(out[1], out[3])
    assert bank.texts == ["acne", "scars", "wrinkles", "moles"]
    assert len(bank) == 4 and "ACNE " in bank and "freckles" not in bank


def hammer_from_threads(embed, threads: int = 8, calls: int = 1500) -> list[str]:
    """Call `embed` with two of 8 prompts from several threads at once, switching threads as often as Python
    can, and return the errors raised (a bounded cache of fewer than 8 evicts all the time)."""
    errors: list[str] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(calls):
            try:
                embed([f"prompt {rng.randrange(8)}", f"prompt {rng.randrange(8)}"])
            except Exception as err:  # noqa: BLE001 - any error is the finding
                errors.append(repr(err))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=work, args=(seed,)) for seed in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)
    return errors


def test_a_frozen_bank_shared_by_threads_answers_every_call() -> None:
    """Threads sharing one Retoucher share its bank; its LRU is not thread-safe by itself, and once it evicted,
    a lookup racing an eviction raised KeyError (QA, thousands of them in 8 threads x 3 000 calls)."""
    bank = PromptBank(CountingEncoder())
    bank.freeze(transient_prompts=4)
    assert hammer_from_threads(bank.embed) == []


def test_an_artifacts_extra_prompt_cache_shared_by_threads_answers_every_call() -> None:
    from cachetools import LRUCache

    from langbrt.artifact import ArtifactMetadata
    from langbrt.runtime.backends.artifact_backend import ExtraPromptEncoder

    metadata = ArtifactMetadata(64, ["acne"], [0], "fake:hash", 8, "0", extra_prompt_slots=2)
    extras = ExtraPromptEncoder(metadata, "m.onnx")
    extras._encoder, extras._cache = CountingEncoder(), LRUCache(maxsize=4)
    assert hammer_from_threads(extras._embed) == []


def test_prompt_bank_add_caches_prompts_for_later_lookups() -> None:
    encoder = CountingEncoder()
    bank = PromptBank(encoder)
    bank.add(["acne", "moles"])
    bank.embed(["moles", "acne"])
    assert encoder.calls == [["acne", "moles"]]


def test_prompt_bank_state_round_trip_answers_known_prompts_without_an_encoder() -> None:
    bank = PromptBank(CountingEncoder())
    expected = bank.embed(["acne", "red spots on the nose"])
    texts, embeddings = bank.state()
    assert texts == ["acne", "red spots on the nose"] and embeddings.shape == (2, 8)

    restored = PromptBank.from_state(texts, embeddings, encoder_name="fake:hash", dim=8)
    assert restored.encoder is None
    assert torch.equal(restored.embed(["Red spots on the nose", "acne"]), expected.flip(0))


def test_a_frozen_bank_keeps_its_own_prompts_and_caches_new_ones_in_a_bounded_lru() -> None:
    encoder = CountingEncoder()
    bank = PromptBank(encoder)
    bank.add(["acne", "moles"])
    bank.freeze(transient_prompts=2)
    first = bank.embed(["a client's secret prompt", "acne"])
    assert bank.texts == ["acne", "moles"] and bank.state()[0] == ["acne", "moles"]  # neither listed nor saved
    assert "a client's secret prompt" not in bank
    bank.embed(["a client's secret prompt"])  # an LRU hit: not encoded again, and now the most recent
    bank.embed(["freckles", "scars"])  # two more: the LRU holds two, so the secret prompt is evicted
    assert torch.equal(bank.embed(["a client's secret prompt"])[0], first[0])  # re-encoded, same embedding
    assert encoder.calls == [["acne", "moles"], ["a client's secret prompt"], ["freckles", "scars"],
                             ["a client's secret prompt"]]
    bank.embed(["acne", "moles"])  # its own prompts are never evicted
    assert len(encoder.calls) == 4


def test_a_frozen_bank_answers_a_batch_of_more_new_prompts_than_its_lru_holds() -> None:
    bank = PromptBank(CountingEncoder())
    bank.freeze(transient_prompts=1)
    out = bank.embed(["acne", "moles", "scars", "acne"])
    assert out.shape == (4, 8) and torch.equal(out[0], out[3]) and bank.texts == []


def test_unknown_prompt_without_encoder_raises_an_error_listing_available_prompts() -> None:
    bank = PromptBank.from_state(["acne", "moles"], torch.eye(2, 8), encoder_name="fake:hash", dim=8)
    with pytest.raises(LangBRTInputError, match="freckles") as err:
        bank.embed(["acne", "freckles"])
    assert "'acne'" in str(err.value) and "'moles'" in str(err.value)


def test_an_open_clip_bank_without_its_encoder_names_the_weights_option() -> None:
    """Why: the open_clip encoder is missing only because its weights file was not given (langbrt-eval on an
    open_clip model without --clip-text-weights said just "no text encoder is available")."""
    bank = PromptBank.from_state(["acne"], torch.eye(1, 8), encoder_name="open_clip:ViT-B-16", dim=8)
    with pytest.raises(LangBRTInputError, match="freckles.*--clip-text-weights PATH.*'acne'"):
        bank.embed(["freckles"])


def test_a_minilm_bank_without_its_encoder_names_no_weights_option() -> None:
    bank = PromptBank.from_state(["acne"], torch.eye(1, 8), encoder_name="minilm:all-MiniLM-L6-v2", dim=8)
    with pytest.raises(LangBRTInputError) as err:
        bank.embed(["freckles"])
    assert "weights" not in str(err.value)


def test_encoder_with_another_name_is_refused_with_both_names() -> None:
    bank = PromptBank(encoder_name="fake:hash", dim=8)
    with pytest.raises(CheckpointError, match="fake:hash.*fake:other"):
        bank.set_encoder(CountingEncoder(name="fake:other"))


def test_encoder_with_another_dim_is_refused_with_both_dims() -> None:
    bank = PromptBank(encoder_name="fake:hash", dim=8)
    with pytest.raises(CheckpointError, match="dim 8.*dim 16"):
        bank.set_encoder(CountingEncoder(dim=16))


def test_from_state_refuses_a_mismatched_encoder() -> None:
    with pytest.raises(CheckpointError, match="mismatch"):
        PromptBank.from_state(["acne"], torch.ones(1, 8), "fake:hash", 8, encoder=CountingEncoder(name="x:y"))


# ---------------------------------------------------------------------------------------------------------
# open_clip text tower from local files (a tiny random CLIP stands in for real weights)

TINY_ARCH = "langbrt-test-tiny-clip"
TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
PROMPTS = ["acne on the right cheek", "forehead wrinkles", "a mole"]


@pytest.fixture(scope="module")
def open_clip_tiny(tmp_path_factory: pytest.TempPathFactory):
    """Register the tiny architecture with open_clip (its public config API) and return the module."""
    open_clip = pytest.importorskip("open_clip")
    config_file = tmp_path_factory.mktemp("open_clip_configs") / f"{TINY_ARCH}.json"
    config_file.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config_file)
    return open_clip


def _tiny_clip(open_clip, quick_gelu: bool = False, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return open_clip.create_model(TINY_ARCH, pretrained=None, force_quick_gelu=quick_gelu).eval()


def _reference_embeddings(open_clip, model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_text(open_clip.get_tokenizer(TINY_ARCH)(PROMPTS), normalize=True)


def test_open_clip_text_tower_loads_from_a_full_state_dict_and_matches_the_source(open_clip_tiny, tmp_path):
    source = _tiny_clip(open_clip_tiny)
    weights = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), weights)

    encoder = OpenClipTextEncoder(TINY_ARCH, weights)
    assert not encoder.loaded and encoder.name == f"open_clip:{TINY_ARCH}" and encoder.dim == 16
    emb = encoder.encode(PROMPTS)

    assert isinstance(encoder, TextEncoder)
    assert emb.shape == (3, 16) and emb.dtype == torch.float32 and not emb.requires_grad
    torch.testing.assert_close(emb, _reference_embeddings(open_clip_tiny, source))


def test_a_damaged_safetensors_file_is_one_line_naming_it(open_clip_tiny, tmp_path):
    weights = tmp_path / "clip.safetensors"
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(CheckpointError, match=r"cannot read .*clip\.safetensors as CLIP weights") as err:
        OpenClipTextEncoder(TINY_ARCH, weights).encode(PROMPTS)
    assert "\n" not in str(err.value)


def test_open_clip_loads_safetensors_files(open_clip_tiny, tmp_path):
    from safetensors.torch import save_file

    source = _tiny_clip(open_clip_tiny, seed=1)
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    emb = OpenClipTextEncoder(TINY_ARCH, weights).encode(PROMPTS)
    torch.testing.assert_close(emb, _reference_embeddings(open_clip_tiny, source))


def test_open_clip_loads_torchscript_archives_like_openai_releases(open_clip_tiny, tmp_path):
    source = _tiny_clip(open_clip_tiny, seed=2)
    weights = tmp_path / "tiny_jit.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(source), str(weights))
    emb = OpenClipTextEncoder(TINY_ARCH, weights).encode(PROMPTS)
    torch.testing.assert_close(emb, _reference_embeddings(open_clip_tiny, source))


def test_open_clip_renames_in_proj_dot_weight_and_strips_wrapper_prefixes(open_clip_tiny, tmp_path):
    source = _tiny_clip(open_clip_tiny, seed=3)
    renamed = {
        "module." + k.replace("attn.in_proj_weight", "attn.in_proj.weight").replace(
            "attn.in_proj_bias", "attn.in_proj.bias"
        ): v
        for k, v in source.state_dict().items()
    }
    assert any("attn.in_proj.weight" in k for k in renamed)
    weights = tmp_path / "renamed.pth"
    torch.save({"epoch": 3, "state_dict": renamed}, weights)
    emb = OpenClipTextEncoder(TINY_ARCH, weights).encode(PROMPTS)
    torch.testing.assert_close(emb, _reference_embeddings(open_clip_tiny, source))


def test_quick_gelu_is_part_of_the_name_and_of_the_numerics(open_clip_tiny, tmp_path):
    source = _tiny_clip(open_clip_tiny, quick_gelu=True, seed=4)
    weights = tmp_path / "tiny_quickgelu.pt"
    torch.save(source.state_dict(), weights)

    encoder = OpenClipTextEncoder(TINY_ARCH, weights, quick_gelu=True)
    assert encoder.name == f"open_clip:{TINY_ARCH}-quickgelu"
    torch.testing.assert_close(encoder.encode(PROMPTS), _reference_embeddings(open_clip_tiny, source))
    rebuilt = text_encoder_from_name(encoder.name, weights)
    assert rebuilt.name == encoder.name
    torch.testing.assert_close(rebuilt.encode(PROMPTS), encoder.encode(PROMPTS))


def test_alpha_clip_visual_only_checkpoint_is_refused_with_advice(open_clip_tiny, tmp_path):
    source = _tiny_clip(open_clip_tiny)
    visual = {k.removeprefix("visual."): v for k, v in source.state_dict().items() if k.startswith("visual.")}
    visual["conv1_alpha.weight"] = torch.zeros_like(visual["conv1.weight"][:, :1])
    weights = tmp_path / "clip_b16_grit1m_fultune_8xe.pth"
    torch.save(visual, weights)
    with pytest.raises(CheckpointError, match="Alpha-CLIP.*OpenAI CLIP weights"):
        OpenClipTextEncoder(TINY_ARCH, weights).load()


def test_missing_text_keys_are_listed(open_clip_tiny, tmp_path):
    state = _tiny_clip(open_clip_tiny).state_dict()
    del state["ln_final.weight"], state["text_projection"]
    weights = tmp_path / "partial.pt"
    torch.save(state, weights)
    with pytest.raises(CheckpointError, match="ln_final.weight.*text_projection|text_projection.*ln_final"):
        OpenClipTextEncoder(TINY_ARCH, weights).load()


def test_weights_of_another_architecture_are_refused(open_clip_tiny, tmp_path):
    state = _tiny_clip(open_clip_tiny).state_dict()
    state["text_projection"] = torch.zeros(32, 24)
    weights = tmp_path / "other.pt"
    torch.save(state, weights)
    with pytest.raises(CheckpointError, match="shape mismatch.*text_projection"):
        OpenClipTextEncoder(TINY_ARCH, weights).load()


def test_missing_weights_file_is_an_input_error_naming_it(tmp_path):
    missing = tmp_path / "ViT-B-16.pt"
    with pytest.raises(LangBRTInputError, match="ViT-B-16.pt"):
        OpenClipTextEncoder("ViT-B-16", missing)


def test_unknown_open_clip_architecture_is_an_input_error(open_clip_tiny, tmp_path):
    weights = tmp_path / "any.pt"
    torch.save({}, weights)
    with pytest.raises(LangBRTInputError, match="unknown open_clip architecture"):
        OpenClipTextEncoder("ViT-Q-99", weights).load()
