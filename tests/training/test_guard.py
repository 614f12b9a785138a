"""DivergenceGuard: a member going non-finite is marked, frozen at its last finite values,
reported; the other members are exactly those of a run without the failure."""

from __future__ import annotations

import math

import pytest
import torch

from thermotrain import samplers
from thermotrain.data import Minibatcher, spirals
from thermotrain.models import MLP, ensemble_accuracy, ensemble_loss
from thermotrain.training import DivergenceGuard, Hook, train

K = 3


class Poison(Hook):
    """Overflows member 1 at one step (what a too-large step does to one member)."""

    name = "poison"

    def __init__(self, at: int, where: str):
        self.at, self.where = at, where

    def after_step(self, state):
        if state.step == self.at:
            with torch.no_grad():
                w = state.model.layers[0].weight
                if self.where == "nan":  # reaches the loss
                    state.model.layers[-1].bias[1] = float("nan")
                elif self.where == "hidden":  # a NaN weight of a unit ReLU may switch off
                    w[1, 0, 0] = float("nan")
                else:  # finite but so large that the loss overflows
                    w[1] *= 1e37


class Record(Hook):
    name = "record"

    def __init__(self):
        self.weights = {}

    def after_step(self, state):
        self.weights[state.step] = state.model.layers[0].weight.detach().clone()


def _run(optimizer: str, hooks, steps: int = 20):
    x, y = spirals(60, turns=1, seed=3)
    model = MLP([2, 8, 1], ensemble=K, seed=[0, 1, 2])
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    else:  # the sampler's own NaN screen is left to the guard
        opt = samplers.BAOAB(model.parameters(), lr=0.1, temperature=1e-3, ensemble_dim=0,
                             seed=[10, 11, 12], nan_policy="ignore")
    batcher = Minibatcher(60, 10, seeds=[20, 21, 22])

    def evaluate(m):
        logits = m(x)
        return {"test": {"loss": ensemble_loss(logits, y),
                         "accuracy": ensemble_accuracy(logits, y)}}

    state = train(model, opt, batcher, steps=steps, x_train=x, y_train=y, hooks=hooks,
                  seeds=[5, 6, 7], evaluate=evaluate, eval_steps=[0, 10, steps])
    return state, model


@pytest.mark.parametrize("optimizer", ["sgd", "baoab"])
@pytest.mark.parametrize("where", ["nan", "overflow", "hidden"])
def test_a_diverging_member_is_marked_and_frozen(optimizer: str, where: str):
    clean_rec = Record()
    clean, clean_model = _run(optimizer, [DivergenceGuard(every=5), clean_rec])
    assert not clean.diverged.any()
    guard, rec = DivergenceGuard(every=5), Record()
    state, model = _run(optimizer, [guard, Poison(7, where), rec])
    assert state.diverged.tolist() == [False, True, False]
    # a non-finite loss is caught at the next gradient (taken at step 7's parameters) — also
    # a NaN weight of a unit ReLU switches off: the fused kernel gives a member with a
    # non-finite parameter a NaN loss, as autograd does (its ReLU alone would map NaN to 0)
    # (an overflowing weight gives a huge but finite loss at step 7: its step overflows)
    found, frozen_from = {"nan": (7, 8), "overflow": (8, 9), "hidden": (7, 8)}[where]
    assert guard.report(state.seeds) == [{"seed": 6, "step": found}]
    assert [r for r in state.rows if r[5] == "diverged"] == [("", "", 6, found, "train",
                                                             "diverged", float(found))]
    # the other members are bit for bit the run without the failure
    for k in (0, 2):
        assert torch.equal(model.layers[0].weight[k], clean_model.layers[0].weight[k])
    # member 1 is frozen at its last finite check (step 5) from then on (from the step
    # whose gradient saw the loss, or the check that saw the parameter)
    for step in range(frozen_from, 21):
        assert torch.equal(rec.weights[step][1], clean_rec.weights[5][1]), step
    finals = {(r[2], r[5]): r[6] for r in state.rows if r[3] == 20}
    assert math.isnan(finals[(6, "accuracy")]) and math.isnan(finals[(6, "loss")])
    assert not math.isnan(finals[(5, "accuracy")])
    before = {(r[2], r[5]): r[6] for r in state.rows if r[3] == 0}
    assert not math.isnan(before[(6, "loss")])  # evaluations before the failure stay


def test_without_the_guard_the_run_fails():
    # the regression: a sampler's NaN screen ends the run (every member lost) ...
    with pytest.raises(FloatingPointError):
        x, y = spirals(60, turns=1, seed=3)
        model = MLP([2, 8, 1], ensemble=K, seed=[0, 1, 2])
        opt = samplers.BAOAB(model.parameters(), lr=0.1, temperature=1e-3, ensemble_dim=0,
                             seed=[10, 11, 12])
        train(model, opt, Minibatcher(60, 10, seeds=[20, 21, 22]), steps=20, x_train=x,
              y_train=y, hooks=[Poison(7, "nan")])
    # ... and SGD carries the NaN to the end
    state, model = _run("sgd", [Poison(7, "nan")])
    assert not torch.isfinite(model.layers[0].weight[1]).all()


def test_guard_state_round_trips():
    guard = DivergenceGuard(every=5)
    state, _ = _run("sgd", [guard, Poison(7, "nan")])
    other = DivergenceGuard()
    other.load_state_dict(guard.state_dict())
    assert other.every == 5 and torch.equal(other.diverged, guard.diverged)
    assert other.report([5, 6, 7]) == [{"seed": 6, "step": 7}]
    with pytest.raises(ValueError, match="every must be an integer >= 1, got 0"):
        DivergenceGuard(every=0)
