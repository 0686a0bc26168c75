"""The training loop: exact resume, the NaN guard, the schedule, fp32 losses under bf16, what a checkpoint holds."""

from __future__ import annotations

import json
import math
import multiprocessing
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from stand_in_text import HashedTextEncoder

from langbrt import checkpoint as checkpoint_module
from langbrt.config import LangBRTConfig
from langbrt.errors import LangBRTInputError, OutputWriteError
from langbrt.model import LangBRT, LangBRTOutput
from langbrt.modules.discriminator import PatchDiscriminator
from langbrt.text import default_text_encoder
from langbrt.training import run_setup
from langbrt.training import trainer as trainer_module
from langbrt.training.finite_checks import checkpoint_is_finite
from langbrt.training.losses import LossResources, VGGPerceptual, generator_objective
from langbrt.training.losses.generator_objective import generator_losses
from langbrt.training.losses.weights import LossWeights
from langbrt.training.optimizer import lr_factor
from langbrt.training.train_config import TrainConfig
from langbrt.training.train_errors import TrainingDiverged
from langbrt.training.train_state import EMA, load_trainer_state, save_checkpoint
from langbrt.training.trainer import train

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(output: Path, **overrides) -> TrainConfig:
    values = dict(output=str(output), steps=6, batch_size=2, synthetic_length=16, lr=1e-3, log_every=2,
                  image_every=3, checkpoint_every=3, ema_decay=0.9,
                  weights=LossWeights(perceptual=0, semantic=0, adversarial=1))
    values.update(overrides)
    return TrainConfig(**values)


def count_generator_steps(monkeypatch) -> list[int]:
    """One entry per generator loss computed, i.e. per training step run."""
    calls: list[int] = []
    real = generator_objective.generator_losses

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(generator_objective, "generator_losses", counting)
    return calls


def test_resumed_run_matches_uninterrupted_run(tmp_path, monkeypatch):
    full = train(tiny_config(tmp_path / "full"), progress=False)
    steps_run = count_generator_steps(monkeypatch)
    resumed = train(tiny_config(tmp_path / "resumed"), resume=tmp_path / "full/checkpoints/step_000003",
                    progress=False)
    assert len(steps_run) == 3  # steps 4-6 only: a run that ignored the checkpoint would run 6 and match too
    logged = [json.loads(line)["step"] for line in (tmp_path / "resumed/log.jsonl").read_text().splitlines()]
    assert logged == [4, 6] and load_trainer_state(resumed.final_dir)["step"] == 6
    a, b = load_file(full.final_dir / "model.safetensors"), load_file(resumed.final_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    raw_a, raw_b = load_trainer_state(full.final_dir), load_trainer_state(resumed.final_dir)
    for name in raw_a["model_raw"]:
        torch.testing.assert_close(raw_a["model_raw"][name], raw_b["model_raw"][name], rtol=0, atol=1e-6)
    for name in raw_a["discriminator"]:
        torch.testing.assert_close(raw_a["discriminator"][name], raw_b["discriminator"][name], rtol=0, atol=1e-6)


def test_checkpoint_holds_ema_weights_and_trainer_state(tmp_path):
    result = train(tiny_config(tmp_path, steps=3), progress=False)
    final = result.final_dir
    assert {p.name for p in final.iterdir()} >= {"model.safetensors", "prompt_bank.safetensors", "config.json",
                                                  "trainer_state.pt", "train_config.json"}
    state = load_trainer_state(final)
    assert state["step"] == 3 and set(state["rng"]) >= {"torch", "numpy", "python"}
    shipped = load_file(final / "model.safetensors")
    torch.testing.assert_close(shipped, state["ema"]["shadow"])  # the model weights are the EMA weights
    assert any(not torch.equal(shipped[k], state["model_raw"][k]) for k in shipped)  # raw ones kept aside
    model = LangBRT.from_pretrained(final)
    assert model.config.image_size == 64
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 3] and "loss/total" in lines[0]
    assert (tmp_path / "samples/step_000003.png").is_file()
    assert json.loads((tmp_path / "train_config.json").read_text())["steps"] == 3


def test_a_failed_checkpoint_save_keeps_the_previous_folder_and_leaves_nothing_hidden(tmp_path, monkeypatch):
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder())
    cfg = tiny_config(tmp_path)
    save_checkpoint(tmp_path / "final", model, None, {"step": 3}, cfg)
    before = {p.name: p.read_bytes() for p in (tmp_path / "final").iterdir()}
    real_save_file, calls = checkpoint_module.save_file, []

    def fail_on_the_prompt_bank(*args, **kwargs):  # the weights file is written, then the disk fills
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_save_file(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", fail_on_the_prompt_bank)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(OutputWriteError, match="No space left"):
        save_checkpoint(tmp_path / "final", model, None, {"step": 6}, cfg)
    assert [p.name for p in tmp_path.iterdir()] == ["final"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "final").iterdir()} == before


def test_a_trainer_state_that_does_not_fit_on_disk_is_one_line_naming_the_checkpoint(tmp_path, monkeypatch):
    """torch.save into a full file system says "enforce fail at inline_container.cc"; the error must say why."""
    model = LangBRT(LangBRTConfig.tiny(), text_encoder=default_text_encoder())
    real_write_bytes = Path.write_bytes

    def full(self, data):
        if self.name == "trainer_state.pt":
            raise OSError(28, "No space left on device")
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OutputWriteError) as err:
        save_checkpoint(tmp_path / "final", model, None, {"step": 3}, tiny_config(tmp_path))
    assert str(err.value) == f"cannot write checkpoint {tmp_path / 'final'}: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_nan_loss_stops_with_step_and_last_checkpoint(tmp_path, monkeypatch):
    real = generator_objective.consistency_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss, parts = real(*args, **kwargs)
        return (loss * float("nan") if calls["n"] == 5 else loss), parts

    monkeypatch.setattr(generator_objective, "consistency_loss", poisoned)
    with pytest.raises(TrainingDiverged) as info:
        train(tiny_config(tmp_path), progress=False)
    message = str(info.value)
    assert "at step 5" in message and "step_000003" in message and "\n" not in message


def test_a_discriminator_loss_non_finite_on_another_rank_is_named_with_the_mean(tmp_path, monkeypatch):
    """Under torchrun every rank stops on the mean over ranks; the line gave the speaking rank's own loss, finite
    ("loss became 0.69 at step 1"), and did not say it was the discriminator's."""
    real_mean = trainer_module.all_reduce_mean

    def mean_with_a_nan_rank(value, info):  # another rank's discriminator loss is NaN, this one's is not
        nan = sys._getframe(1).f_code.co_name == "_discriminator_step"
        return real_mean(value, info) * float("nan") if nan else real_mean(value, info)

    monkeypatch.setattr(trainer_module, "all_reduce_mean", mean_with_a_nan_rank)
    with pytest.raises(TrainingDiverged) as info:
        train(tiny_config(tmp_path), progress=False)
    assert str(info.value).startswith("the discriminator loss became nan at step 1; stopping")


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=2e-4, min_lr=2e-5)
    factors = [lr_factor(s, cfg) for s in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    assert factors[100] == pytest.approx(0.1)
    assert lr_factor(55, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_batch_larger_than_data_is_a_clear_error_before_the_output_folder_is_created(tmp_path):
    with pytest.raises(LangBRTInputError, match="fewer than one batch"):
        train(tiny_config(tmp_path / "run", synthetic_length=1, batch_size=2), progress=False)
    assert not (tmp_path / "run").exists()


def test_a_run_that_fails_mid_way_stops_its_data_workers(tmp_path, monkeypatch):
    """The error's traceback keeps the loop's frame alive (pytest holds it, so does a caller that logs it):
    the data workers must not live on with it."""

    def fail(*args, **kwargs):
        raise LangBRTInputError("a bad batch")

    monkeypatch.setattr(generator_objective, "generator_losses", fail)
    before = set(multiprocessing.active_children())
    with pytest.raises(LangBRTInputError, match="a bad batch") as raised:
        train(tiny_config(tmp_path, num_workers=1), progress=False)
    assert raised.tb is not None and set(multiprocessing.active_children()) <= before


def test_train_config_round_trips_through_json(tmp_path):
    cfg = tiny_config(tmp_path, fraction=0.5, warmup_steps=3)
    (tmp_path / "c.json").write_text(cfg.to_json())
    assert TrainConfig.from_json(tmp_path / "c.json") == cfg


def _bce_outside_autocast(monkeypatch) -> list[torch.dtype]:
    """Make F.binary_cross_entropy fail the way CUDA does under autocast ("unsafe to autocast"), on CPU too;
    returns the list of input dtypes it was called with."""
    real, dtypes = torch.nn.functional.binary_cross_entropy, []

    def guarded(pred, label, *args, **kwargs):
        if torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda"):
            raise RuntimeError("binary_cross_entropy is unsafe to autocast")
        dtypes.append(pred.dtype)
        return real(pred, label, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "binary_cross_entropy", guarded)
    return dtypes


def test_bf16_run_computes_the_losses_in_fp32_outside_autocast(tmp_path, monkeypatch):
    dtypes = _bce_outside_autocast(monkeypatch)
    result = train(tiny_config(tmp_path, steps=2, precision="bf16", checkpoint_every=2), progress=False)
    assert math.isfinite(result.last_loss)
    assert dtypes and set(dtypes) == {torch.float32}


def test_generator_losses_leave_a_callers_autocast(monkeypatch):
    dtypes = _bce_outside_autocast(monkeypatch)
    cfg = TrainConfig(weights=LossWeights(perceptual=0, semantic=0, adversarial=1))
    out = LangBRTOutput(image=torch.rand(2, 3, 32, 32), mask=torch.rand(2, 1, 32, 32),
                        maps=torch.rand(2, 1, 32, 32), soft_mask=torch.rand(2, 1, 32, 32),
                        soft_maps=torch.rand(2, 1, 32, 32), residual=torch.rand(2, 3, 32, 32))
    batch = {"source": torch.rand(2, 3, 32, 32), "target": torch.rand(2, 3, 32, 32), "prompts": [["acne"]] * 2}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, parts = generator_losses(cfg, out, batch, LossResources(), PatchDiscriminator(16))
    assert loss.dtype == torch.float32 and set(dtypes) == {torch.float32} and "detection" in parts


def test_resume_drops_log_records_written_after_the_checkpoint(tmp_path):
    train(tiny_config(tmp_path, steps=4, log_every=1, checkpoint_every=2), progress=False)
    train(tiny_config(tmp_path, steps=3, log_every=1, checkpoint_every=2),
          resume=tmp_path / "checkpoints/step_000002", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]


def test_ema_state_keeps_the_runs_own_decay():
    model = torch.nn.Linear(2, 2)
    saved = EMA(model, 0.9)
    saved.update(model)
    resumed = EMA(model, 0.5)
    resumed.load_state_dict(saved.state_dict())
    assert resumed.decay == 0.5 and resumed.updates == 1


def _batch_with_every_target(b: int = 2, k: int = 2, p: int = 3, size: int = 32) -> dict:
    """A synthetic-style batch: exact masks, per-prompt masks and face regions, so every loss term can run."""
    return {"source": torch.rand(b, 3, size, size), "target": torch.rand(b, 3, size, size),
            "prompts": [["acne", "mole"]] * b, "removed_mask": (torch.rand(b, 1, size, size) > 0.9).float(),
            "prompt_masks": (torch.rand(b, k, size, size) > 0.9).float(), "prompt_valid": torch.ones(b, k),
            "predefined_region_masks": (torch.rand(b, p, size, size) > 0.5).float()}


def _output_without_tbd(b: int = 2, k: int = 2, size: int = 32) -> LangBRTOutput:
    """What a model without TBD returns: all-ones maps, the decoder's image everywhere."""
    ones = torch.ones(b, 1, size, size)
    return LangBRTOutput(image=torch.rand(b, 3, size, size), mask=ones, maps=torch.ones(b, k, size, size),
                         soft_mask=ones, soft_maps=torch.ones(b, k, size, size), residual=torch.rand(b, 3, size, size))


@pytest.mark.parametrize("ablation, detection_terms", [("none", {"detection", "prompt_maps", "component"}),
                                                       ("no-tbd", set())])
def test_no_tbd_ablation_skips_the_map_losses(ablation, detection_terms):
    """Without TBD the maps are a constant: eq. 5, eq. 6 and the per-prompt loss would add ~50 to the total
    and no gradient, so the ablation does not compute them."""
    cfg = TrainConfig(ablation=ablation, weights=LossWeights(perceptual=0, semantic=0, adversarial=0))
    loss, parts = generator_losses(cfg, _output_without_tbd(), _batch_with_every_target(), LossResources(),
                                   PatchDiscriminator(16))
    assert set(parts) == {"l1"} | detection_terms
    if ablation == "no-tbd":
        assert float(loss) == pytest.approx(float(parts["l1"]))


def test_ablations_drop_the_terms_the_paper_removes():
    cfg = TrainConfig(weights=LossWeights(semantic=2.0))
    assert replace(cfg, ablation="no-tbd").loss_weights().active() == ["adversarial", "l1", "perceptual", "semantic"]
    assert "semantic" not in replace(cfg, ablation="no-prior").loss_weights().active()
    assert replace(cfg, ablation="no-tca").loss_weights() == cfg.weights


def test_checkpoint_check_refuses_a_nan_weight_in_any_of_the_three_weight_sets():
    torch.manual_seed(0)
    cfg = tiny_config(Path("unused"))
    model = run_setup.build_model(cfg, run_setup.build_text_encoder(cfg))
    discriminator, ema = PatchDiscriminator(model.config.discriminator_channels), EMA(model, 0.9)
    batch = {"source": torch.rand(1, 3, 64, 64), "prompts": [["acne"]]}
    assert checkpoint_is_finite(model, ema, discriminator, batch)
    for weights in (dict(model.named_parameters()), ema.shadow, dict(discriminator.named_parameters())):
        first = next(iter(weights.values()))
        saved = first.detach().clone()
        with torch.no_grad():
            first.view(-1)[0] = float("nan")
        assert not checkpoint_is_finite(model, ema, discriminator, batch)
        with torch.no_grad():
            first.copy_(saved)


def test_loss_resources_move_their_networks_to_the_training_device():
    resources = LossResources(perceptual=VGGPerceptual()).to(torch.device("meta"))
    assert {p.device.type for p in resources.perceptual.parameters()} == {"meta"}
    assert LossResources().to(torch.device("meta")).perceptual is None


@pytest.fixture
def random_vgg_file(tmp_path):
    """Random VGG-19 conv weights in torchvision's naming: the perceptual term runs, its value is irrelevant."""
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(VGGPerceptual().state_dict(), path)
    return path


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gpu_training_with_ema_and_perceptual_loss_runs_and_resumes_on_cuda(tmp_path, monkeypatch, random_vgg_file,
                                                                            precision):
    """`train` picks CUDA by itself: the EMA shadow and the VGG must live there with the model (both stayed on
    the CPU once, and the first EMA update raised a device mismatch)."""
    monkeypatch.setattr(run_setup, "build_text_encoder", lambda cfg: HashedTextEncoder())
    weights = LossWeights(perceptual=1, semantic=0, adversarial=1)
    cfg = tiny_config(tmp_path / "run", steps=3, precision=precision, weights=weights,
                      vgg_weights=str(random_vgg_file))
    result = train(cfg, progress=False)
    assert math.isfinite(result.last_loss) and load_trainer_state(result.final_dir)["ema"]["updates"] == 3
    resumed = train(replace(cfg, output=str(tmp_path / "resumed"), steps=4), resume=result.final_dir,
                    progress=False)
    assert math.isfinite(resumed.last_loss) and load_trainer_state(resumed.final_dir)["step"] == 4


def test_a_cuda_rng_state_resumes_on_a_machine_with_fewer_gpus(monkeypatch):
    """A checkpoint of an 8-GPU node, resumed with one GPU visible: the state of the GPU in use is restored
    (old checkpoints held one state per visible GPU, and restoring all of them raised IndexError)."""
    from langbrt.training import train_state

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state: restored.append(state))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("restores every GPU's state"))
    eight_gpus = [torch.full((8,), i, dtype=torch.uint8) for i in range(8)]
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: torch.full((8,), 42, dtype=torch.uint8))
    with torch.random.fork_rng(devices=[]):  # set_rng_state also restores the CPU generators
        saved = train_state.rng_state()
        train_state.set_rng_state({**saved, "cuda": eight_gpus})
        train_state.set_rng_state(saved)
    assert [int(s[0]) for s in restored] == [0, 42]


def test_resume_drops_log_lines_it_cannot_read_instead_of_crashing(tmp_path):
    """json.loads raises a plain ValueError for a 5000-digit number and RecursionError for deep nesting."""
    from langbrt.training.run_log import truncate_jsonl

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": ' + "1" * 5000 + "}\n" + "[" * 100_000 + '\n{"step": "x"}\n{"step": 5}\n')
    truncate_jsonl(log, 3)
    assert log.read_text() == '{"step": 1}\n'


def test_a_kernel_pair_the_kernels_refuse_stops_training_before_the_output_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("LANGBRT_ATTENTION", "triton")
    monkeypatch.setenv("LANGBRT_TCA_KERNEL", "direct")
    monkeypatch.setenv("LANGBRT_TCA_MMA", "wgmma")
    pytest.importorskip("triton")
    with pytest.raises(LangBRTInputError, match="cannot build the direct kernel"):
        train(tiny_config(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()
