"""Packed sweeps: the cells of a swept method × the seeds trained as one ensemble equal the
cells trained one by one (same seed streams), and resume bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _experiments_helpers import tiny_raw

from thermotrain.experiments import parse_study, run_study
from thermotrain.experiments.builders import (
    member_hyperparameters,
    supports_member_hyperparameters,
    sweep_packs,
)
from thermotrain.experiments.config import slug
from thermotrain.experiments.runner import read_metrics

SWEPT = [
    {"name": "AdLaLa", "optimizer": "adlala", "lr": 0.1, "temperature": [1e-4, 1e-8],
     "sweep": {"temperature[0]": [1e-5, 1e-3], "noise": [0.003, 0.03]}},
    {"name": "SGLD", "optimizer": "sgld", "lr": 0.1, "sweep": {"sigma": [0.01, 0.1]}},
    {"name": "Adam", "optimizer": "adam", "sweep": {"lr": [0.001, 0.01]}},
    {"name": "SGD", "optimizer": "sgd", "momentum": 0.9, "sweep": {"lr": [0.01, 0.05]}},
]


@pytest.fixture
def tiny_study():
    """The tiny study without its [paper] table (the sweep renames its methods)."""

    def make(**tables):
        raw = tiny_raw(**tables)
        raw.pop("paper")
        return parse_study(raw, "tiny.toml")

    return make


pytestmark = pytest.mark.skipif(not supports_member_hyperparameters("adlala"),
                                reason="the samplers take no per-member hyperparameters yet")


def _final(out: Path, method: str) -> dict:
    return torch.load(out / "methods" / slug(method) / "checkpoint.pt", weights_only=True)


def test_sweep_cells_form_packs(tiny_study):
    study = tiny_study(methods=SWEPT)
    units = sweep_packs(study.methods)
    # samplers.MemberAdam / MemberSGD take (K,) values: their sweeps pack too
    assert [len(u) for u in units] == [4, 2, 2, 2]
    hp = member_hyperparameters(units[0], repeat=3)
    assert hp["lr"] == 0.1 and hp["temperature"][1] == 1e-8
    cells = [m.hyperparameters["noise"] for m in units[0]]
    assert hp["noise"].tolist() == [v for v in cells for _ in range(3)]  # cell-major


@pytest.mark.parametrize("rng", ["torch", "philox"])
def test_packed_sweep_equals_the_cells_run_one_by_one(tiny_study, tmp_path: Path, rng: str):
    study = tiny_study(methods=SWEPT, training={"rng": rng, "snapshot_average": 2})
    packed = run_study(study, tmp_path / "packed")
    cells = run_study(study, tmp_path / "cells", pack=False)
    assert list(packed["methods"]) == list(cells["methods"]) == [m.name for m in study.methods]
    for m in study.methods:
        a, b = _final(tmp_path / "packed", m.name), _final(tmp_path / "cells", m.name)
        for key in a["model"]:
            torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6,
                                       msg=f"{m.name} {key}")
        pa, pb = packed["methods"][m.name], cells["methods"][m.name]
        assert pa["test_accuracy_mean"] == pytest.approx(pb["test_accuracy_mean"], abs=1e-6)
        assert pa.get("packed_cells") == (4 if m.base == "AdLaLa" else 2)
        sa = torch.load(tmp_path / "packed" / "methods" / slug(m.name) / "snapshots.pt",
                        weights_only=True)
        sb = torch.load(tmp_path / "cells" / "methods" / slug(m.name) / "snapshots.pt",
                        weights_only=True)
        for x, y in zip(sa["snapshots"], sb["snapshots"], strict=True):
            assert x["step"] == y["step"] and x["first_weight"].shape == y["first_weight"].shape
            torch.testing.assert_close(x["first_weight"], y["first_weight"], rtol=1e-5,
                                       atol=1e-6)
            for k in x["members"]:
                torch.testing.assert_close(x["window"]["members"][k],
                                           y["window"]["members"][k], rtol=1e-5, atol=1e-6)
    # the cells really differ (else the comparison says little)
    w = [_final(tmp_path / "packed", m.name)["model"]["layers.0.weight"]
         for m in study.methods[:4]]
    assert not torch.allclose(w[0], w[3])
    ra = read_metrics(tmp_path / "packed" / "metrics.csv")
    rb = read_metrics(tmp_path / "cells" / "metrics.csv")
    key = lambda r: (r["method"], r["seed"], r["step"], r["split"])  # noqa: E731
    assert sorted(map(key, ra)) == sorted(map(key, rb))
    by = {key(r): r for r in rb}
    for r in ra:
        assert r["accuracy"] == pytest.approx(by[key(r)]["accuracy"], abs=1e-6)
        assert r["loss"] == pytest.approx(by[key(r)]["loss"], rel=1e-4, abs=1e-6)


def test_packed_sweep_resumes_bit_for_bit(tiny_study, tmp_path: Path):
    study = tiny_study(methods=SWEPT[:1], training={"checkpoint_every": 8})
    run_study(study, tmp_path / "straight")

    def interrupt(method: str, step: int) -> None:
        if step == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(study, tmp_path / "resumed", callback=interrupt)
    pack = torch.load(tmp_path / "resumed" / "methods" / "AdLaLa.pack" / "checkpoint.pt",
                      weights_only=True)
    assert pack["step"] == 13 and not pack["done"]
    run_study(study, tmp_path / "resumed", resume=True)
    for m in study.methods:
        a, b = _final(tmp_path / "straight", m.name), _final(tmp_path / "resumed", m.name)
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (m.name, key)
        assert a["rows"] == b["rows"]
    assert (tmp_path / "straight" / "metrics.csv").read_text() == (
        tmp_path / "resumed" / "metrics.csv").read_text()
    sa = json.loads((tmp_path / "straight" / "summary.json").read_text())
    sb = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    for name in sa["methods"]:
        assert sa["methods"][name]["test_accuracy_mean"] == \
            sb["methods"][name]["test_accuracy_mean"]
