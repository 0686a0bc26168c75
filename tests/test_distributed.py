"""The same training code under torchrun: 2 CPU processes (gloo) end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

WORKER = textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    from langbrt.training import trainer
    from langbrt.training.losses.weights import LossWeights
    from langbrt.training.train_config import TrainConfig

    real_update = trainer.EMA.update
    def update_and_dump(self, model):  # after every step, each rank records its own raw generator weights
        real_update(self, model)
        torch.save(model.state_dict(), os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.pt"))
    trainer.EMA.update = update_and_dump
    cfg = TrainConfig(output=sys.argv[1], steps=3, batch_size=2, synthetic_length=16, checkpoint_every=3,
                      image_every=3, weights=LossWeights(perceptual=0, semantic=0, adversarial=1))
    trainer.train(cfg, progress=False)
""")


@pytest.mark.slow
def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    assert (out / "final/model.safetensors").is_file()
    lines = (out / "log.jsonl").read_text().splitlines()
    assert len(lines) == 1  # log_every 10: only the last step is logged, once, by rank 0 alone
