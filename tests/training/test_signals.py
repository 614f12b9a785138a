"""SIGTERM sent to a training process from outside: the step in flight is finished and
checkpointed (before: the process died with no checkpoint), and resuming from it gives the
uninterrupted run bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

CHILD = r"""
import sys, time
from pathlib import Path
import torch
from thermotrain import samplers
from thermotrain.data import Minibatcher, spirals
from thermotrain.models import MLP
from thermotrain.training import Hook, Interrupted, train

out = Path(sys.argv[1])
steps = int(sys.argv[2])
mode = sys.argv[3]  # "paced" (waits for the signal), "resume" or "straight"
resume = mode == "resume"
x, y = spirals(60, turns=1, seed=3)
model = MLP([2, 8, 1], ensemble=3, seed=[0, 1, 2])
opt = samplers.BAOAB(model.parameters(), lr=0.1, temperature=1e-3, ensemble_dim=0,
                     seed=[10, 11, 12])
batcher = Minibatcher(60, 10, seeds=[20, 21, 22])

class Ready(Hook):  # tells the parent it is training, then paces the steps
    name = "ready"
    def after_step(self, state):
        if mode != "paced":
            return
        if state.step == 20:
            (out / "ready").write_text("1")
        if state.step >= 20:
            time.sleep(0.01)

ckpt = out / "ckpt.pt"
try:
    train(model, opt, batcher, steps=steps, x_train=x, y_train=y, hooks=[Ready()],
          checkpoint=ckpt, checkpoint_every=10_000,
          resume_from=torch.load(ckpt, weights_only=True) if resume else None)
except Interrupted as exc:
    sys.exit(100 + exc.signum)
torch.save(model.state_dict(), out / "final.pt")
"""


def _child(out: Path, steps: int, mode: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(steps), mode],
                            env=env, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # three Python processes (~2 s each idle); in-process: test_loop.py
def test_sigterm_from_outside_checkpoints_and_resumes(tmp_path: Path):
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    straight.mkdir(), cut.mkdir()
    steps = 3000  # paced at 10 ms a step after step 20: 30 s for the signal to arrive
    proc = _child(cut, steps, "paced")
    deadline = time.monotonic() + 120
    while not (cut / "ready").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the child did not start training"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 100 + signal.SIGTERM, proc.stderr.read()
    saved = torch.load(cut / "ckpt.pt", weights_only=True)
    assert 20 <= saved["step"] < steps and not saved["done"]
    # resume the cut run to the end, and run it straight through
    resumed = _child(cut, steps, "resume")
    whole = _child(straight, steps, "straight")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    a = torch.load(straight / "final.pt", weights_only=True)
    b = torch.load(cut / "final.pt", weights_only=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key
