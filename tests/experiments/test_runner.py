"""The runner: ensemble = separate runs, bit-identical resume, run folder contents."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from thermotrain.experiments import RunError, run_study
from thermotrain.experiments.config import slug
from thermotrain.experiments.runner import METRIC_COLUMNS, read_metrics
from thermotrain.training import Interrupted

ALL_OPTIMIZERS = [
    {"name": "AdLaLa", "optimizer": "adlala", "lr": 0.1, "temperature": [1e-3, 1e-4]},
    {"name": "LOL", "optimizer": "lol", "lr": 0.1},
    {"name": "LaLa", "optimizer": "lala", "lr": 0.1, "friction": [1.0, 2.0]},
    {"name": "BAOAB", "optimizer": "baoab", "lr": 0.1, "temperature": 1e-3},
    {"name": "SGLD", "optimizer": "sgld", "lr": 0.1, "sigma": 0.05},
    {"name": "SGD", "optimizer": "sgd", "lr": 0.1, "momentum": 0.5},
    {"name": "Adam", "optimizer": "adam", "lr": 0.01},
]


def _final(out: Path, method: str) -> dict:
    return torch.load(out / "methods" / slug(method) / "checkpoint.pt", weights_only=True)


class Stop(Exception):
    """Simulates a crash (no checkpoint is written on it)."""


@pytest.mark.parametrize("rng", ["torch", "philox"])
def test_ensemble_equals_separate_runs(tiny_study, tmp_path: Path, rng: str):
    methods = ALL_OPTIMIZERS if rng == "torch" else ALL_OPTIMIZERS[:5]  # samplers only
    ens = tiny_study(methods=methods, training={"replacement": True, "rng": rng})
    run_study(ens, tmp_path / "ens")
    rows_ens = read_metrics(tmp_path / "ens" / "metrics.csv")
    for k, seed in enumerate([5, 6, 7]):
        one = tiny_study(methods=methods, training={"seeds": 1, "seed": seed,
                                                    "replacement": True, "rng": rng})
        run_study(one, tmp_path / f"one{seed}")
        rows_one = read_metrics(tmp_path / f"one{seed}" / "metrics.csv")
        for m in methods:
            name = m["name"]
            big = _final(tmp_path / "ens", name)["model"]
            small = _final(tmp_path / f"one{seed}", name)["model"]
            for key in big:
                torch.testing.assert_close(big[key][k], small[key][0], rtol=1e-5, atol=1e-6,
                                           msg=f"{name} {key} member {k}")
            mine = [r for r in rows_ens if r["method"] == name and r["seed"] == seed]
            ref = [r for r in rows_one if r["method"] == name]
            assert [(r["step"], r["split"]) for r in mine] == [(r["step"], r["split"])
                                                                for r in ref]
            for a, b in zip(mine, ref, strict=True):
                assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-6)
                assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
    # the members really differ (different seeds), so the comparison above is not vacuous
    w = _final(tmp_path / "ens", "AdLaLa")["model"]["layers.0.weight"]
    assert not torch.equal(w[0], w[1])


@pytest.mark.parametrize("how,rng", [("keyboard", "torch"), ("crash", "torch"),
                                     ("crash", "philox"), ("sigterm", "torch")])
def test_resume_is_bit_identical(tiny_study, tmp_path: Path, how: str, rng: str):
    # epochs of 6 steps (60 / 10), checkpoints every 8 steps: interrupts fall mid-epoch
    study = tiny_study(
        methods=ALL_OPTIMIZERS[:1] + ALL_OPTIMIZERS[4:],
        training={"steps": 40, "checkpoint_every": 8, "eval_every": 5, "rng": rng},
    )
    run_study(study, tmp_path / "straight")

    def interrupt(method: str, step: int) -> None:
        if method == "SGD" and step == 19:
            if how == "sigterm":  # handled like Ctrl-C: at the end of the step
                os.kill(os.getpid(), signal.SIGTERM)
                return
            raise KeyboardInterrupt if how == "keyboard" else Stop()

    expected = {"keyboard": KeyboardInterrupt, "crash": Stop, "sigterm": Interrupted}[how]
    with pytest.raises(expected):
        run_study(study, tmp_path / "resumed", callback=interrupt)
    ckpt = _final(tmp_path / "resumed", "SGD")
    # Ctrl-C and SIGTERM save the current step; a crash leaves the last periodic checkpoint
    assert (ckpt["step"], ckpt["done"]) == ((16, False) if how == "crash" else (19, False))
    assert _final(tmp_path / "resumed", "AdLaLa")["done"]
    assert not (tmp_path / "resumed" / "summary.json").exists()
    with pytest.raises(RunError, match="already holds a run"):
        run_study(study, tmp_path / "resumed")
    run_study(study, tmp_path / "resumed", resume=True)

    for m in ("AdLaLa", "SGLD", "SGD", "Adam"):
        a, b = _final(tmp_path / "straight", m), _final(tmp_path / "resumed", m)
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (m, key)
        assert a["rows"] == b["rows"]
    assert (tmp_path / "straight" / "metrics.csv").read_text() == (
        tmp_path / "resumed" / "metrics.csv").read_text()
    sa = json.loads((tmp_path / "straight" / "summary.json").read_text())
    sb = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    for m in sa["methods"]:
        assert sa["methods"][m]["test_accuracy_mean"] == sb["methods"][m]["test_accuracy_mean"]


def test_resume_rejects_another_config(tiny_study, tmp_path: Path):
    run_study(tiny_study(), tmp_path / "run")
    with pytest.raises(RunError, match=r"different configuration \(differs in: training\)"):
        run_study(tiny_study(training={"steps": 31}), tmp_path / "run", resume=True)
    # resuming a finished run is a no-op that rewrites the same results
    before = (tmp_path / "run" / "metrics.csv").read_text()
    run_study(tiny_study(), tmp_path / "run", resume=True)
    assert (tmp_path / "run" / "metrics.csv").read_text() == before


def test_run_folder_contents(tiny_study, tmp_path: Path):
    study = tiny_study()
    summary = run_study(study, tmp_path / "run")
    out = tmp_path / "run"
    assert json.loads((out / "config.json").read_text())["training"]["steps"] == 30
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == METRIC_COLUMNS == ("study", "method", "seed", "step", "split",
                                                "metric", "value")
    # 2 methods × 3 seeds × 4 evaluations (0, 10, 20, 30) × 2 splits × (loss, accuracy)
    assert len(rows) - 1 == 2 * 3 * 4 * 2 * 2
    accs = [float(r[6]) for r in rows[1:] if r[5] == "accuracy"]
    assert len(accs) == 2 * 3 * 4 * 2 and all(0 <= a <= 1 for a in accs)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for name, m in on_disk["methods"].items():
        assert {"test_accuracy_mean", "test_accuracy_std", "n_seeds", "steps"} <= set(m)
        assert m["n_seeds"] == 3 and m["steps"] == 30 and m["steps_per_second"] > 0
        final = [float(r[6]) for r in rows[1:] if r[1] == name and r[3] == "30"
                 and r[4] == "test" and r[5] == "accuracy"]
        assert m["n_diverged"] == 0 and m["diverged"] == []
        assert m["test_accuracy_mean"] == pytest.approx(sum(final) / 3)
    assert on_disk["methods"]["AdLaLa"]["paper"]["test_accuracy"] == 0.9
    snaps = torch.load(out / "methods" / "AdLaLa" / "snapshots.pt", weights_only=True)
    assert [s["step"] for s in snaps["snapshots"]] == [0, 10, 30]
    last = snaps["snapshots"][-1]
    assert last["first_weight"].shape == (3, 8, 2)  # all members
    assert last["members"]["layers.0.weight"].shape == (2, 8, 2)  # saved_members = 2
    final_model = _final(out, "AdLaLa")["model"]
    assert torch.equal(last["first_weight"], final_model["layers.0.weight"])
    assert not list(out.rglob(".*tmp*"))  # atomic writes leave no temporary files


def test_fused_mlp_gradient_trains_like_autograd(tiny_study, tmp_path: Path, monkeypatch):
    from thermotrain.models import fused

    if fused._library() is None:
        pytest.skip("no C compiler here")
    study = tiny_study(methods=[ALL_OPTIMIZERS[0], ALL_OPTIMIZERS[6]])
    calls = []
    real = fused.loss_and_grad
    monkeypatch.setattr(fused, "loss_and_grad", lambda *a: calls.append(1) or real(*a))
    run_study(study, tmp_path / "fused")
    assert len(calls) == 2 * 30  # both methods took the fused path at every step
    monkeypatch.setattr(fused, "_LIB", None)  # the runner falls back to autograd
    run_study(study, tmp_path / "autograd")
    for name in ("AdLaLa", "Adam"):
        a = _final(tmp_path / "fused", name)["model"]
        b = _final(tmp_path / "autograd", name)["model"]
        for key in a:
            # float32, tens of steps: the two sum orders drift apart by rounding only
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


DIVERGING = [  # on this tiny problem, N(0, 3²) init: seeds 6-8 of SGD and seed 8 of AdLaLa
    {"name": "SGD", "optimizer": "sgd", "lr": 200.0, "momentum": 0.9},  # overflow, the
    {"name": "AdLaLa", "optimizer": "adlala", "lr": 15.0},              # others do not
    {"name": "Adam", "optimizer": "adam", "lr": 0.01},
]


def test_diverging_members_are_excluded_and_the_study_finishes(tiny_study, tmp_path: Path):
    from thermotrain.experiments import write_report

    model = {"hidden": [8], "init": "normal", "init_std": 3.0}
    study = tiny_study(methods=DIVERGING, model=model, training={"seeds": 4})
    # before: AdLaLa's FloatingPointError ended the study, SGD's NaN broke statistics.stdev
    summary = run_study(study, tmp_path / "run")
    m = summary["methods"]
    assert m["SGD"]["diverged"] == [{"seed": 6, "step": 13}, {"seed": 7, "step": 13},
                                    {"seed": 8, "step": 11}]
    assert m["AdLaLa"]["diverged"] == [{"seed": 8, "step": 13}]
    assert (m["SGD"]["n_diverged"], m["AdLaLa"]["n_diverged"], m["Adam"]["n_diverged"]) == \
        (3, 1, 0)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    for name, out in (("SGD", {6, 7, 8}), ("AdLaLa", {8})):
        final = {r["seed"]: r["accuracy"] for r in rows
                 if r["method"] == name and r["step"] == 30 and r["split"] == "test"}
        assert all(math.isnan(final[s]) for s in out)  # diverged: NaN from then on
        kept = [final[s] for s in (5, 6, 7, 8) if s not in out]
        assert m[name]["test_accuracy_mean"] == pytest.approx(sum(kept) / len(kept))
        assert m[name]["n_seeds"] == 4
    # the members that did not diverge are exactly the runs of their seeds alone
    alone = tiny_study(methods=DIVERGING, model=model, training={"seeds": 1, "seed": 5})
    run_study(alone, tmp_path / "alone")
    for name in ("SGD", "AdLaLa", "Adam"):
        a, b = _final(tmp_path / "run", name)["model"], _final(tmp_path / "alone", name)["model"]
        for key in a:
            torch.testing.assert_close(a[key][0], b[key][0], rtol=1e-5, atol=1e-6)
    # resuming the finished run changes nothing; the report is written with the counts
    again = run_study(study, tmp_path / "run", resume=True)
    assert json.dumps(again, sort_keys=True) == json.dumps(summary, sort_keys=True)
    assert write_report(tmp_path / "run").exists()


def test_tensorboard_logger_in_a_study(tiny_study, tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    study = tiny_study()
    run_study(study, tmp_path / "run", loggers=("csv", "tensorboard"))
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    ev = EventAccumulator(str(tmp_path / "run" / "tensorboard" / "Adam" / "seed-6"))
    ev.Reload()
    got = [(e.step, e.value) for e in ev.Scalars("test/accuracy")]
    want = [(r["step"], r["accuracy"]) for r in rows
            if r["method"] == "Adam" and r["seed"] == 6 and r["split"] == "test"]
    assert [s for s, _ in got] == [s for s, _ in want] == [0, 10, 20, 30]
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert a == pytest.approx(b, rel=1e-6)
    with pytest.raises(ValueError, match="loggers must be among csv, tensorboard; got 'wandb'"):
        run_study(study, tmp_path / "other", loggers=("wandb",))
