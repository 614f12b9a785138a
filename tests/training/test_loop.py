"""The training loop: events, losses on both gradient paths, bit-identical resume with
stateful hooks, data swaps, metrics rows, loggers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from thermotrain import samplers
from thermotrain.data import Minibatcher, spirals
from thermotrain.models import MLP, ensemble_accuracy, ensemble_loss, fused
from thermotrain.training import (
    CSVLogger,
    Hook,
    Interrupted,
    TensorBoardLogger,
    train,
)

K, STEPS = 3, 24
needs_kernel = pytest.mark.skipif(fused._library() is None, reason="no C compiler here")


def _setup(optimizer: str = "baoab", k: int = K, seed: int = 0):
    x, y = spirals(60, turns=1, seed=3)
    model = MLP([2, 8, 1], ensemble=k, seed=[seed + i for i in range(k)])
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
    else:
        opt = samplers.BAOAB(model.parameters(), lr=0.1, temperature=1e-3, ensemble_dim=0,
                             seed=[100 + i for i in range(k)])
    batcher = Minibatcher(60, 10, seeds=[200 + i for i in range(k)])
    return model, opt, batcher, x, y


def _evaluate(x, y):
    def evaluate(model):
        logits = model(x)
        return {"train": {"loss": ensemble_loss(logits, y),
                          "accuracy": ensemble_accuracy(logits, y)}}
    return evaluate


class Jitter(Hook):
    """A stateful random hook: after each step it nudges the parameters with its own
    generator, and before each gradient it permutes the batch rows (a data rewrite)."""

    name = "jitter"

    def __init__(self):
        self.gen = torch.Generator().manual_seed(7)
        self.calls = 0

    def before_gradient(self, state, batch):
        batch.materialize(state.x_train, state.y_train)
        perm = torch.randperm(batch.x.shape[1], generator=self.gen)
        batch.x, batch.y = batch.x[:, perm], batch.y[:, perm]
        return batch

    def after_step(self, state):
        self.calls += 1
        with torch.no_grad():
            for p in state.model.parameters():
                p.add_(1e-3 * torch.randn(p.shape, generator=self.gen))
        state.log("calls", float(self.calls))

    def state_dict(self):
        return {"gen": self.gen.get_state(), "calls": self.calls}

    def load_state_dict(self, state):
        self.gen.set_state(state["gen"])
        self.calls = state["calls"]


@pytest.mark.parametrize("path", ["fused", "autograd"])
def test_gradient_returns_the_member_losses(path, monkeypatch):
    if path == "fused" and fused._library() is None:
        pytest.skip("no C compiler here")
    if path == "autograd":
        monkeypatch.setattr(fused, "_LIB", None)
    model, _, batcher, x, y = _setup()
    grad = fused.gradient_fn(model, x, y)
    idx = batcher.next()
    losses = grad(idx)
    assert losses.shape == (K,) and not losses.requires_grad
    with torch.no_grad():
        expected = ensemble_loss(model(x[idx]), y[idx])
    torch.testing.assert_close(losses, expected, rtol=1e-5, atol=1e-6)
    assert len(set(losses.tolist())) == K  # members differ: the comparison is not vacuous
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_events_order_and_state_contract():
    model, opt, batcher, x, y = _setup()
    seen: list[tuple] = []

    class Spy(Hook):
        name = "spy"

        def on_start(self, state):
            seen.append(("start", state.step))
            assert state.members == K and state.total_steps == 4 and state.model is model
            assert state.optimizer is opt and state.seeds == [5, 6, 7]
            assert state.energy(x, y).shape == (K,)

        def before_gradient(self, state, batch):
            seen.append(("before", state.step))
            assert batch.index.shape == (K, 10) and not batch.rewritten
            return batch

        def after_gradient(self, state, losses):
            seen.append(("grad", state.step))
            self.losses = losses

        def after_step(self, state):
            seen.append(("step", state.step))
            state.log("first_loss", self.losses)

        def on_evaluation(self, state, results):
            seen.append(("eval", state.step))
            assert set(results["train"]) == {"loss", "accuracy"}

        def on_checkpoint(self, state):
            seen.append(("ckpt", state.step))

        def on_end(self, state):
            seen.append(("end", state.step))

    saved = []
    state = train(model, opt, batcher, steps=4, x_train=x, y_train=y, hooks=[Spy()],
                  seeds=[5, 6, 7], evaluate=_evaluate(x, y), eval_steps=[0, 2, 4],
                  checkpoint=saved.append, checkpoint_every=3, study="s", method="m")
    assert seen == [("start", 0), ("eval", 0),
                    ("before", 0), ("grad", 0), ("step", 1),
                    ("before", 1), ("grad", 1), ("step", 2), ("eval", 2),
                    ("before", 2), ("grad", 2), ("step", 3), ("ckpt", 3),
                    ("before", 3), ("grad", 3), ("step", 4), ("eval", 4),
                    ("end", 4), ("ckpt", 4)]
    assert [c["step"] for c in saved] == [3, 4] and [c["done"] for c in saved] == [False, True]
    rows = state.rows
    assert {r[5] for r in rows} == {"loss", "accuracy", "first_loss"}
    assert all(r[:2] == ("s", "m") for r in rows)
    evals = [r for r in rows if r[5] == "accuracy"]
    assert [(r[2], r[3]) for r in evals] == [(s, t) for t in (0, 2, 4) for s in (5, 6, 7)]


def _run(tmp: Path, stop_at: int | None = None, resume: bool = False, hooks=None):
    model, opt, batcher, x, y = _setup()
    tmp.mkdir(exist_ok=True)
    ckpt = tmp / "ckpt.pt"
    resume_from = torch.load(ckpt, weights_only=True) if resume else None

    def callback(step):
        if step == stop_at:
            raise KeyboardInterrupt

    hooks = [Jitter()] if hooks is None else hooks
    state = train(model, opt, batcher, steps=STEPS, x_train=x, y_train=y, hooks=hooks,
                  evaluate=_evaluate(x, y), eval_steps=range(0, STEPS + 1, 5),
                  checkpoint=ckpt, checkpoint_every=8, resume_from=resume_from,
                  callback=callback)
    return state, model


def test_resume_with_a_stateful_random_hook_is_bit_identical(tmp_path: Path):
    straight, model_a = _run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", stop_at=13)
    ckpt = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 13 and ckpt["hooks"]["jitter"]["calls"] == 13
    resumed, model_b = _run(tmp_path / "b", resume=True)
    for (ka, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items(),
                               strict=True):
        assert torch.equal(a, b), ka
    assert resumed.rows == straight.rows
    # the hook mattered: without it the run ends elsewhere
    _, plain = _run(tmp_path / "c", hooks=[])
    assert not torch.equal(plain.layers[0].weight, model_a.layers[0].weight)


def test_data_rewrite_takes_the_gradient_on_the_new_batch():
    class Same(Hook):  # rewrites the batch with its own data: the same gradient
        name = "same"

        def before_gradient(self, state, batch):
            return batch.materialize(state.x_train, state.y_train)

    class Flip(Hook):  # flips the labels: another gradient
        name = "flip"

        def before_gradient(self, state, batch):
            batch.materialize(state.x_train, state.y_train)
            batch.y = 1 - batch.y
            return batch

    out = {}
    for name, hooks in (("plain", []), ("same", [Same()]), ("flip", [Flip()])):
        model, opt, batcher, x, y = _setup("adam")
        y_before = y.clone()
        train(model, opt, batcher, steps=6, x_train=x, y_train=y, hooks=hooks)
        assert torch.equal(y, y_before)  # the stored data set is never written
        out[name] = model.layers[0].weight.detach().clone()
    torch.testing.assert_close(out["same"], out["plain"], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out["flip"], out["plain"], atol=1e-4)


def test_bad_arguments_name_the_value():
    model, opt, batcher, x, y = _setup()
    with pytest.raises(ValueError, match="steps must be an integer >= 0, got -1"):
        train(model, opt, batcher, steps=-1, x_train=x, y_train=y)
    with pytest.raises(ValueError, match="repeated: jitter"):
        train(model, opt, batcher, steps=1, x_train=x, y_train=y, hooks=[Jitter(), Jitter()])

    class Bad(Hook):
        name = "bad"

        def before_gradient(self, state, batch):
            return None

    with pytest.raises(TypeError, match="must return a Batch, got NoneType"):
        train(model, opt, batcher, steps=1, x_train=x, y_train=y, hooks=[Bad()])


def test_csv_and_tensorboard_loggers(tmp_path: Path):
    import pandas as pd
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, opt, batcher, x, y = _setup()
    csv_path, tb = tmp_path / "metrics.csv", tmp_path / "tb"
    state = train(model, opt, batcher, steps=6, x_train=x, y_train=y, seeds=[5, 6, 7],
                  hooks=[Jitter(), CSVLogger(csv_path), TensorBoardLogger(tb)],
                  evaluate=_evaluate(x, y), eval_steps=[0, 3, 6], study="s", method="m")
    frame = pd.read_csv(csv_path)
    assert list(frame.columns) == ["study", "method", "seed", "step", "split", "metric",
                                   "value"]
    assert len(frame) == len(state.rows) == 3 * 2 * 3 + 6  # evaluations + the hook's rows
    acc = frame[(frame.metric == "accuracy") & (frame.step == 6)].set_index("seed")["value"]
    for seed, r in zip((5, 6, 7), [r for r in state.rows if r[5] == "accuracy" and r[3] == 6],
                       strict=True):
        assert acc[seed] == pytest.approx(r[6])
    ev = EventAccumulator(str(tb / "seed-6"))
    ev.Reload()
    assert set(ev.Tags()["scalars"]) == {"train/loss", "train/accuracy"}
    loss = ev.Scalars("train/loss")
    want = [r for r in state.rows if r[5] == "loss" and r[2] == 6]
    assert [e.step for e in loss] == [0, 3, 6]
    for e, r in zip(loss, want, strict=True):
        assert e.value == pytest.approx(r[6], rel=1e-6)
    calls = EventAccumulator(str(tb / "all"))
    calls.Reload()
    assert [e.value for e in calls.Scalars("train/calls")] == [1, 2, 3, 4, 5, 6]


def test_sigterm_checkpoints_the_completed_step(tmp_path: Path):
    model, opt, batcher, x, y = _setup()
    ckpt = tmp_path / "ckpt.pt"

    def callback(step):
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered now, handled at the step end

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info:
        train(model, opt, batcher, steps=20, x_train=x, y_train=y, checkpoint=ckpt,
              evaluate=_evaluate(x, y), eval_steps=[0, 5, 20], callback=callback)
    assert info.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is restored
    saved = torch.load(ckpt, weights_only=True)
    assert saved["step"] == 5 and not saved["done"]
    assert sorted({r[3] for r in saved["rows"]}) == [0, 5]  # step 5 fully recorded


def test_a_second_signal_mid_step_writes_no_half_recorded_checkpoint(tmp_path: Path):
    model, opt, batcher, x, y = _setup()
    ckpt = tmp_path / "ckpt.pt"

    class DoubleCtrlC(Hook):
        name = "ctrl-c"

        def after_step(self, state):  # mid-step: the step's evaluation is not logged yet
            if state.step == 10:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt) as info:
        train(model, opt, batcher, steps=20, x_train=x, y_train=y, checkpoint=ckpt,
              checkpoint_every=4, hooks=[DoubleCtrlC()], evaluate=_evaluate(x, y),
              eval_steps=range(0, 21, 5))
    assert not isinstance(info.value, Interrupted)  # stopped at once
    saved = torch.load(ckpt, weights_only=True)
    assert saved["step"] == 8  # the last consistent checkpoint, not the half step 10
    assert max(r[3] for r in saved["rows"]) == 5
