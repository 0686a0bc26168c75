"""`langbrt-train --ddp-timeout`: the process group's time limit under torchrun is the run's, not the backend's.

QA: the group took the backend's default (gloo 30 minutes, nccl 10 in torch 2.14), so a step that one rank takes
alone while the others wait in a collective (a checkpoint written to a slow disk) ended an nccl job after 10
minutes, and nothing could change that.
"""

from __future__ import annotations

import json
from datetime import timedelta

from click.testing import CliRunner

from langbrt.training import distributed, trainer
from langbrt.training.cli_train import main as train_main

FAST = ["--steps", "1", "--synthetic-length", "16", "--perceptual-weight", "0", "--semantic-weight", "0",
        "--adversarial-weight", "0", "--threads", "1", "--quiet"]


def test_the_process_group_takes_the_time_limit_given_and_30_minutes_by_default(monkeypatch):
    joined = []
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: joined.append(kwargs["timeout"]))
    distributed.init_distributed(device="cpu", timeout_s=7200)
    distributed.init_distributed(device="cpu")
    assert joined == [timedelta(hours=2), timedelta(minutes=30)]


def test_langbrt_train_passes_ddp_timeout_to_the_process_group_and_records_it(tmp_path, monkeypatch):
    """Typed on a run of one process, where there is no process group, it also says it has no effect there."""
    asked = []
    real_init = trainer.init_distributed
    monkeypatch.setattr(trainer, "init_distributed", lambda **kwargs: asked.append(kwargs) or real_init(**kwargs))
    result = CliRunner().invoke(train_main, [*FAST, "--ddp-timeout", "7200", "--output", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert asked == [{"timeout_s": 7200}]
    assert result.output.startswith("Warning: --ddp-timeout 7200 has no effect: this run is one process, not started "
                                    "by torchrun"), result.output
    assert json.loads((tmp_path / "run/train_config.json").read_text())["ddp_timeout"] == 7200


def test_a_ddp_timeout_below_one_second_is_one_error_line(tmp_path):
    result = CliRunner().invoke(train_main, [*FAST, "--ddp-timeout", "0", "--output", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.output == "langbrt-train: error: --ddp-timeout must be at least 1, got 0\n"
    assert not (tmp_path / "run").exists()
