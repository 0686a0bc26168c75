"""The same training code under torchrun: 2 CPU processes (gloo) end with identical weights, and an error is
said once and ends every rank promptly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

WORKER = textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    from langbrt.training import trainer
    from langbrt.training.losses.weights import LossWeights
    from langbrt.training.train_state import EMA
    from langbrt.training.train_config import TrainConfig

    real_update = EMA.update
    def update_and_dump(self, model):  # after every step, each rank records its own raw generator weights
        real_update(self, model)
        torch.save(model.state_dict(), os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.pt"))
    EMA.update = update_and_dump
    cfg = TrainConfig(output=sys.argv[1], steps=3, batch_size=2, synthetic_length=16, checkpoint_every=3,
                      image_every=3, weights=LossWeights(perceptual=0, semantic=0, adversarial=1),
                      ablation=sys.argv[2])
    trainer.train(cfg, progress=False)
""")


@pytest.mark.slow
@pytest.mark.parametrize("ablation", ["none", "no-tbd", "no-tca", "no-prior"])
def test_two_gloo_ranks_end_with_identical_weights(tmp_path, ablation):
    """Also: every parameter of both modules reaches the loss in every step of every model, which lets DDP
    skip its search for unused ones (a parameter without a gradient would fail the second step)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), str(out), ablation],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "find_unused_parameters" not in proc.stderr  # QA: DDP's warning about the search, on every rank
    a, b = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    assert (out / "final/model.safetensors").is_file()
    lines = (out / "log.jsonl").read_text().splitlines()
    assert len(lines) == 1  # log_every 10: only the last step is logged, once, by rank 0 alone


def torchrun(*args: str, timeout: float = 120, monitor_interval: float | None = None) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 ARGS` on CPU; the timeout guards against a hang (ranks waiting
    in a collective until gloo's 30-minute timeout), and ends the workers too, not only torchrun.
    `monitor_interval`: how often torchrun looks at its workers (it stops the others once one has failed)."""
    monitor = ["--monitor-interval", str(monitor_interval)] if monitor_interval is not None else []
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *monitor, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # also spares torchrun's four-line banner about it
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"torchrun {' '.join(args)} still running after {timeout} s: a rank waits for another")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("langbrt-train: error: ")]


FAST_ON_PAIRS = ["--perceptual-weight", "0", "--semantic-weight", "0", "--adversarial-weight", "0", "--steps", "1",
                 "--quiet"]
FAST = [*FAST_ON_PAIRS, "--synthetic-length", "16"]  # for the synthetic set: refused with --data DIR


@pytest.mark.slow
def test_an_input_error_found_after_the_process_group_starts_is_said_once(tmp_path):
    proc = torchrun("-m", "langbrt.training.cli_train", "--data", str(tmp_path / "missing"),
                    "--output", str(tmp_path / "run"), *FAST_ON_PAIRS)
    assert proc.returncode == 1, proc.stderr[-3000:]  # torchrun's own status when a worker fails
    assert error_lines(proc.stderr) == [f"langbrt-train: error: {tmp_path / 'missing'}: no such folder; expected a "
                                        "folder holding source/ and target/"], proc.stderr[-3000:]
    # The error comes before torchrun's report of the failed workers.
    assert proc.stderr.splitlines()[0].startswith("langbrt-train: error: ")
    assert "exitcode  : 2" in proc.stderr  # the report gives the command's own status
    assert not (tmp_path / "run").exists()


LATE_RANK_0 = textwrap.dedent("""
    import os, runpy, sys, time
    if os.environ["LOCAL_RANK"] == "0":
        time.sleep(1)  # a slow start on a busy node: rank 1 meets the error first
    sys.argv[0] = "langbrt-train"
    runpy.run_module("langbrt.training.cli_train", run_name="__main__")
""")


@pytest.mark.slow
def test_an_error_that_rank_0_reaches_last_is_still_said_once(tmp_path):
    """torchrun ends every worker as soon as one exits non-zero: a silent rank 1 exiting first would end rank 0
    before it says the error. A bad flag value is found before the process group starts, on each rank alone."""
    script = tmp_path / "late_rank_0.py"
    script.write_text(LATE_RANK_0)
    proc = torchrun(str(script), "--lr", "-1", "--output", str(tmp_path / "run"), *FAST)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert error_lines(proc.stderr) == [
        "langbrt-train: error: --lr must be a positive finite number (at most 3.4e+38), got -1.0"]


@pytest.mark.slow
def test_ctrl_c_under_torchrun_is_said_once(tmp_path):
    """torchrun hands SIGINT to every worker and then waits, ending none: the ranks other than the node's first
    leave in silence at once (they used to wait out the error grace and then say the line too, 10 s later)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "langbrt.training.cli_train", "--output", str(out), *FAST, "--steps", "500", "--checkpoint-every", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not (out / "checkpoints/step_000002").is_dir() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does: torchrun gets it
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    said = [line for line in stderr.splitlines() if line.startswith("Interrupted")]
    assert len(said) == 1 and "--resume" in said[0], stderr[-3000:]


AGREE = textwrap.dedent("""
    import json, os, sys, torch
    import torch.distributed as dist
    from langbrt.errors import ConfigValueError
    from langbrt.training.distributed import fail_together, init_distributed
    from langbrt.training.train_errors import OutputNotWritten

    info = init_distributed(device="cpu")
    cases = {"none": None, "rank 1 alone": (1, ConfigValueError("lr", "must be positive")),
             "rank 0 alone": (0, OutputNotWritten("log.jsonl: no space left")), "a bug on rank 1": (1, KeyError("x"))}
    seen = {}
    for name, case in cases.items():
        try:
            with fail_together(info):
                if case is not None and case[0] == info.rank:
                    raise case[1]
            seen[name] = None
        except Exception as err:
            seen[name] = [type(err).__name__, str(err)]
    total = torch.tensor(float(info.rank))
    dist.all_reduce(total)  # the ranks' collectives still pair up after the failures
    seen["sum of ranks"] = float(total)
    with open(os.path.join(sys.argv[1], f"rank{info.rank}.json"), "w") as f:
        json.dump(seen, f)
    dist.destroy_process_group()  # without it gloo may abort the exit ("terminate called without an active exception")
""")


@pytest.mark.slow
def test_a_rank_failing_alone_stops_every_rank_with_its_error(tmp_path):
    script = tmp_path / "agree.py"
    script.write_text(AGREE)
    proc = torchrun(str(script), str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    for seen in (rank0, rank1):  # the same class and message on both: the command exits with one status
        assert seen["none"] is None
        assert seen["rank 1 alone"] == ["ConfigValueError", "--lr must be positive"]
        assert seen["rank 0 alone"] == ["OutputNotWritten", "log.jsonl: no space left"]
        assert seen["sum of ranks"] == 1.0
    assert rank1["a bug on rank 1"] == ["KeyError", "'x'"]  # its own exception, traceback and all
    assert rank0["a bug on rank 1"] == ["RuntimeError", "rank 1 failed with KeyError: 'x'"]


@pytest.mark.slow
def test_a_corrupt_image_that_one_rank_meets_mid_run_is_said_once_without_a_traceback(tmp_path):
    # QA, 2026-11-26: the rank that met it stopped alone; rank 0, waiting in the loss all-reduce, then printed
    # gloo's "Connection closed by peer" traceback after the error line
    from PIL import Image

    for side in ("source", "target"):
        (tmp_path / "data" / side).mkdir(parents=True)
        for name in ("p0", "p1"):
            Image.effect_noise((64, 64), 60).convert("RGB").save(tmp_path / "data" / side / f"{name}.jpg")
    jpeg = (tmp_path / "data/source/p1.jpg").read_bytes()
    (tmp_path / "data/source/p1.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # passes the header check
    # batch 1 of 2 pairs on 2 ranks: one rank meets p1 at step 1 (rank 1 with seed 0, rank 0 with seed 1)
    for seed in ("0", "1"):
        proc = torchrun("-m", "langbrt.training.cli_train", "--data", str(tmp_path / "data"), "--strict",
                        "--batch-size", "1", "--seed", seed, "--output", str(tmp_path / f"out{seed}"), *FAST_ON_PAIRS)
        assert proc.returncode != 0
        assert len(error_lines(proc.stderr)) == 1 and "p1.jpg: corrupt or truncated" in proc.stderr, proc.stderr
        assert "[rank0]: Traceback" not in proc.stderr and "Connection closed" not in proc.stderr, proc.stderr


DIES = textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    from langbrt.console import run_command
    from langbrt.training import cli_train
    from langbrt.training.train_state import EMA

    real_update = EMA.update
    def update_then_die_on_rank_1(self, model):  # rank 1 is killed (out of memory, say) after step 3
        real_update(self, model)
        if os.environ["RANK"] == "1" and self.updates == 3:
            os._exit(9)
    EMA.update = update_then_die_on_rank_1
    run_command(cli_train.main)
""")


@pytest.mark.slow
def test_a_rank_that_dies_mid_run_leaves_one_line_naming_the_checkpoint_not_a_traceback(tmp_path):
    # QA, 2026-11-26: rank 0's next collective failed with gloo's "Connection reset/closed by peer" and printed
    # a 40-line traceback, with no word of the checkpoint to resume from
    script = tmp_path / "dies.py"
    script.write_text(DIES)
    out = tmp_path / "run"
    # torchrun stops rank 0 (SIGTERM: "Interrupted: ... continue with --resume") once it sees rank 1 gone; looking
    # every 5 s, not 0.1 s, lets rank 0 meet the lost peer in its next collective first, as a slower launcher's would
    proc = torchrun(str(script), "--steps", "6", "--checkpoint-every", "2", "--batch-size", "2", "--output", str(out),
                    *[a for a in FAST if a not in ("--steps", "1")], monitor_interval=5)
    assert proc.returncode != 0
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("langbrt-train: error: another process of the job stopped ("), \
        proc.stderr
    assert f"continue with --resume {out / 'checkpoints/step_000002'}" in lines[0]
    assert "[rank0]: Traceback" not in proc.stderr and "GLHF" not in proc.stderr, proc.stderr


LEAVES = textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    from langbrt.console import run_command
    from langbrt.training import cli_train, trainer

    where = sys.argv.pop(1)  # where rank 1 ends (killed, say), after final/ is saved: exit 0, so that torchrun's
    final = os.path.join(sys.argv[sys.argv.index("--output") + 1], "final")  # status is rank 0's own
    real_validate, real_cleanup = trainer.validate, trainer.cleanup
    def validate_or_leave(model, ema, val, info):
        if where == "last validation" and info.rank == 1 and os.path.isdir(final):
            os._exit(0)
        return real_validate(model, ema, val, info)
    def cleanup_or_leave(info, *, finished=False):
        if where == "closing barrier" and info.rank == 1 and finished:
            os._exit(0)
        real_cleanup(info, finished=finished)
    trainer.validate, trainer.cleanup = validate_or_leave, cleanup_or_leave
    run_command(cli_train.main)
""")


def torchrun_where_rank_1_leaves(where: str, tmp_path, *flags: str) -> subprocess.CompletedProcess:
    """A run with --val synthetic into tmp_path/run whose rank 1 ends at `where`, after final/ is saved."""
    script = tmp_path / "leaves.py"
    script.write_text(LEAVES)
    return torchrun(str(script), where, *FAST, *flags, "--val", "synthetic", "--output", str(tmp_path / "run"))


def finished_anyway(proc: subprocess.CompletedProcess, run) -> None:
    """Rank 0 says in one warning that the run is complete, and succeeds: final/ holds every step."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    warned = [line for line in proc.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warned) == 1 and warned[0].startswith("Warning: another process of the job stopped after the run "
                                                     "finished ("), proc.stderr[-3000:]
    assert warned[0].endswith(f"; the run is complete: {run / 'final'}")
    assert "Traceback" not in proc.stderr and not error_lines(proc.stderr), proc.stderr[-3000:]
    assert proc.stdout.startswith(f"saved {run / 'final'} after ") and (run / "final/model.safetensors").is_file()


def test_validation_under_torchrun_is_logged_once_and_a_rank_lost_at_the_closing_barrier_is_one_warning(tmp_path):
    """Each validation is one log record and one line (the ranks score shares of it). QA: a rank that died after
    final/ was saved, before the closing barrier, left rank 0 gloo's traceback and exit status 1 for a run that
    was complete."""
    proc = torchrun_where_rank_1_leaves("closing barrier", tmp_path, "--steps", "2", "--checkpoint-every", "1",
                                        "--batch-size", "2", "--val-samples", "2")
    finished_anyway(proc, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val/psnr" in r] == [1, 2]
    assert sum(" val (2 images): " in line for line in proc.stderr.splitlines()) == 2, proc.stderr[-3000:]


@pytest.mark.slow
def test_a_rank_lost_in_the_validation_after_final_is_saved_is_one_warning(tmp_path):
    """Its collective failed in the loop, which said 'continue with --resume .../final', a run --resume refuses
    (no steps left), and exited 1; only the last validation's scores are missing."""
    proc = torchrun_where_rank_1_leaves("last validation", tmp_path, "--val-samples", "1")
    finished_anyway(proc, tmp_path / "run")


DIES_SETTING_UP = textwrap.dedent("""
    import os, time, torch
    torch.set_num_threads(1)
    from langbrt.console import run_command
    from langbrt.training import cli_train, run_setup

    real_build_optimizer = run_setup.build_optimizer
    def build_optimizer_or_die_on_rank_1(*args, **kwargs):  # rank 1 is killed (out of memory, say) setting up,
        if os.environ["RANK"] == "1":  # while rank 0 waits for it at the set-up's end
            time.sleep(2)
            os._exit(9)
        return real_build_optimizer(*args, **kwargs)
    run_setup.build_optimizer = build_optimizer_or_die_on_rank_1
    run_command(cli_train.main)
""")


@pytest.mark.slow
def test_set_up_warns_once_and_a_rank_that_dies_in_it_leaves_one_line_not_a_traceback(tmp_path):
    """QA: the data set's warnings, met alike by every rank, were said once per rank; and a peer lost before
    step 1 gave rank 0 gloo's traceback (only the loop turned it into the one line)."""
    from PIL import Image

    for side in ("source", "target"):
        (tmp_path / "data" / side).mkdir(parents=True)
        for name in ("p0", "p1", "p2"):
            Image.effect_noise((64, 64), 60).convert("RGB").save(tmp_path / "data" / side / f"{name}.png")
    (tmp_path / "data/source/p2.png").write_bytes(b"not a png")  # skipped with a warning before step 1
    script = tmp_path / "dies.py"
    script.write_text(DIES_SETTING_UP)
    # torchrun stops rank 0 with SIGTERM once it sees rank 1 gone; looking every 5 s lets rank 0 meet the lost
    # peer in its set-up's last collective first, as it does when the peer is on another node
    proc = torchrun(str(script), "--data", str(tmp_path / "data"), "--batch-size", "1", "--output",
                    str(tmp_path / "run"), *FAST_ON_PAIRS, monitor_interval=5)
    assert proc.returncode != 0
    assert sum(line.startswith("Warning: skipping 1 image pair") for line in proc.stderr.splitlines()) == 1, \
        proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("langbrt-train: error: another process of the job stopped ("), \
        proc.stderr
    assert lines[0].endswith("; stopped before the first training step; no checkpoint was written yet")
    assert "[rank0]: Traceback" not in proc.stderr, proc.stderr


def _prompts_and_raw_weights(checkpoint) -> tuple[set[str], dict[str, torch.Tensor]]:
    from langbrt.model import LangBRT

    state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
    return set(LangBRT.from_pretrained(checkpoint).prompt_bank.texts), state["model_raw"]


def _prompts_of_each_rank(cfg, steps: int) -> list[set[str]]:
    """The prompts each of 2 ranks' batches ask in the first `steps` steps of a run of `cfg`."""
    from langbrt.text.prompts import normalize_prompt
    from langbrt.training.batches import batches
    from langbrt.training.datasets import build_dataset
    from langbrt.training.distributed import DistInfo

    dataset, collate, base = build_dataset(cfg, image_size=64)
    streams = [batches(dataset, collate, base, cfg, DistInfo(rank, 2), 0) for rank in (0, 1)]
    return [{normalize_prompt(p) for _ in range(steps) for sample in next(stream)["prompts"] for p in sample}
            for stream in streams]


@pytest.mark.slow
def test_two_ranks_checkpoint_every_prompt_they_met_and_resume_bit_for_bit(tmp_path):
    """QA: each rank encodes the prompts of its own batches, so the checkpoint (rank 0's bank, which an export
    bakes in) lacked those only rank 1 met, and a resumed rank 1 encoded them again beside other prompts, a few
    bits off: a two-rank resume ended 1e-8 from the uninterrupted run."""
    from langbrt.training.train_config import TrainConfig

    run = tmp_path / "run"
    flags = [*FAST, "--steps", "2", "--checkpoint-every", "1", "--batch-size", "1", "--ema-decay", "0"]
    assert torchrun("-m", "langbrt.training.cli_train", *flags, "--output", str(run)).returncode == 0
    proc = torchrun("-m", "langbrt.training.cli_train", "--resume", str(run / "checkpoints/step_000001"), "--quiet",
                    "--output", str(tmp_path / "resumed"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    prompts, weights = _prompts_and_raw_weights(run / "final")
    resumed_prompts, resumed_weights = _prompts_and_raw_weights(tmp_path / "resumed/final")
    for name, value in weights.items():
        torch.testing.assert_close(resumed_weights[name], value, rtol=0, atol=0, msg=name)
    rank_0, rank_1 = _prompts_of_each_rank(TrainConfig(batch_size=1, synthetic_length=16), steps=2)
    assert rank_1 - rank_0  # the test's point: rank 1 met prompts rank 0 did not
    assert rank_0 | rank_1 <= prompts == resumed_prompts


SCORES = textwrap.dedent("""
    import json, os, sys, torch
    torch.set_num_threads(1)
    from langbrt.training.distributed import cleanup, init_distributed
    from langbrt.training.train_config import TrainConfig
    from langbrt.training.run_setup import build_model, build_text_encoder
    from langbrt.training.validation import build_validation, val_result, validate

    info = init_distributed(device="cpu")  # one process when not started by torchrun
    torch.manual_seed(0)
    model = build_model(TrainConfig(), build_text_encoder(TrainConfig()))
    results, scored = {}, {}
    for val in ("synthetic", sys.argv[2]):
        held_out = build_validation(TrainConfig(val=val, val_samples=19), model.config.image_size)
        mine = validate(model, None, held_out, info)
        scored[val] = sum(batch.n for batch in mine)
        results[val] = val_result(mine, held_out, info)
    with open(os.path.join(sys.argv[1], f"scored{info.rank}.json"), "w") as f:
        json.dump(scored, f)
    if info.is_main:
        with open(os.path.join(sys.argv[1], "results.json"), "w") as f:
            json.dump({val: result.to_dict() for val, result in results.items()}, f)
    cleanup(info, finished=True)
""")


@pytest.mark.slow
def test_validation_sharded_over_two_ranks_scores_what_one_process_scores(tmp_path, monkeypatch):
    """QA: rank 0 scored the whole held-out set while the others waited in a collective, which the process
    group's time limit ends (nccl: 10 minutes). Each rank now scores its batches; the numbers are one process's,
    bit for bit: 19 synthetic samples (batches of 8, 8, 3: rank 0 gets two, and a per-type AP that is NaN) and
    10 pairs (8 + 2) of which two are identical (their blemish PSNR is NaN, left out of the mean)."""
    import runpy

    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for i in range(10):
        source = (torch.rand(64, 64, 3, generator=generator) * 255).byte()
        target = source.clone()
        if i not in (3, 9):  # identical pairs: no blemish region
            target[8:20, 8:20] = 128
        for side, image in (("source", source), ("target", target)):
            (tmp_path / "pairs" / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.numpy()).save(tmp_path / "pairs" / side / f"p{i}.png")
    script = tmp_path / "scores.py"
    script.write_text(SCORES)
    pairs, one, two = tmp_path / "pairs", tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    proc = torchrun(str(script), str(two), str(pairs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    monkeypatch.setattr(sys, "argv", [str(script), str(one), str(pairs)])
    runpy.run_path(str(script), run_name="__main__")
    assert [json.loads((two / f"scored{rank}.json").read_text()) for rank in (0, 1)] == \
        [{"synthetic": 11, str(pairs): 8}, {"synthetic": 8, str(pairs): 2}]
    expected = json.loads((one / "results.json").read_text())
    assert expected["synthetic"]["num_samples"] == 19 and expected[str(pairs)]["num_samples"] == 10
    assert expected["synthetic"]["detection_per_type"]["eye_wrinkles"]["ap"] is None
    assert json.loads((two / "results.json").read_text()) == expected
