"""Fig. 3 (MNIST half): the quick study, its line plot and report section (the line itself
is ``thermotrain.landscape.interpolate``, tested in tests/landscape)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _experiments_helpers import SHARED_DATA

from thermotrain.experiments import find_study, load_study, run_study, write_report
from thermotrain.experiments.run_folder import RunFolder


def test_fig3_mnist_study_is_the_same_init_comparison():
    for quick in (False, True):
        s = load_study(find_study("fig3-mnist"), quick=quick)
        assert s.data.kind == "mnist" and s.model.hidden == (100,)
        assert [m.base for m in s.methods] == ["AdLaLa", "Adam"]
        assert {(m.init, m.init_std) for m in s.methods} == {(None, None)}  # same init
        assert s.training.saved_members >= 2
    quick = load_study(find_study("fig3-mnist"), quick=True)
    assert (quick.data.n_train, quick.data.n_test) == (1000, 500)


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(),
                    reason=f"MNIST files not found in {SHARED_DATA / 'mnist'} (../shared/data "
                           "relative to the repository); the Fig. 3 MNIST half needs them")
def test_fig3_mnist_quick_run_draws_the_line(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("THERMOTRAIN_DATA", raising=False)
    study = load_study(find_study("fig3-mnist"), quick=True)
    out = tmp_path / "run"
    run_study(study, out, data_dir=SHARED_DATA)
    # the report finds the files through the run's data.json (no data_dir, no env var)
    assert Path(json.loads((out / "data.json").read_text())["data_dir"]) == SHARED_DATA.resolve()
    text = write_report(out).read_text()
    line = out / "figures" / "line.png"
    assert line.stat().st_size > 1000 and "figures/line.png" in text
    assert "## Loss along the line between the two solutions (Fig. 3)" in text
    assert "θ(α) = (1 − α) θ_AdLaLa + α θ_Adam" in text
    for seed in study.training.run_seeds:
        assert f"| {seed} | train |" in text and f"| {seed} | test |" in text
    rows = (out / "figures" / "line.csv").read_text().splitlines()
    assert rows[0] == "alpha,seed,split,loss,accuracy"
    assert len(rows) == 1 + 41 * 2 * study.training.seeds
    assert rows[1].startswith("-0.5,") and any(r.startswith("1.5,") for r in rows)
    # the line's endpoints are the two methods' final losses of the same seed
    line_loss = {tuple(r.split(",")[:3]): float(r.split(",")[3]) for r in rows[1:]}
    metrics = RunFolder(out).read_metrics()
    final = metrics[(metrics["step"] == study.training.steps) & (metrics["metric"] == "loss")]
    assert len(final) == 2 * 2 * study.training.seeds
    for r in final.itertuples():
        alpha = "0" if r.method == "AdLaLa" else "1"
        assert line_loss[(alpha, str(r.seed), r.split)] == pytest.approx(r.value, rel=1e-4)
    # without the files the figure is skipped with a note, not an error
    (out / "data.json").write_text(json.dumps({"data_dir": str(tmp_path / "nowhere")}))
    monkeypatch.setenv("THERMOTRAIN_DATA", str(tmp_path / "empty"))
    line.unlink()
    text = write_report(out).read_text()
    assert "Line plot skipped" in text and not line.exists()


@pytest.mark.slow  # ~15 s on 2 busy cores (41 CNN evaluations); the fast rebuild check is
# tests/experiments/test_run_folder.py::test_run_loads_once_and_rebuilds_any_model
@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(),
                    reason=f"MNIST files not found in {SHARED_DATA / 'mnist'}")
def test_report_rebuilds_a_cnn_for_the_line(tmp_path: Path):
    """The snapshots store the model's spec, so the report's analyses work for CNNs too: the
    Fig. 3 line of a tiny CNN study, its endpoints the two methods' final losses."""
    from _experiments_helpers import tiny_raw

    from thermotrain.experiments import parse_study

    raw = tiny_raw(data={"kind": "mnist", "n_train": 30, "n_test": 20},
                   model={"kind": "cnn", "channels": [2]},
                   training={"seeds": 2, "steps": 4, "eval_every": 4, "snapshot_at": [2],
                             "batch_size": 5},
                   methods=[{"name": "SGD", "optimizer": "sgd", "lr": 0.05},
                            {"name": "Adam", "optimizer": "adam", "lr": 0.001}])
    for key in ("turns", "seed"):
        raw["data"].pop(key)
    raw.pop("paper")
    raw["model"].pop("hidden")
    out = tmp_path / "cnn"
    run_study(parse_study(raw, "tiny-cnn.toml"), out, data_dir=SHARED_DATA)
    text = write_report(out).read_text()
    assert "θ(α) = (1 − α) θ_SGD + α θ_Adam" in text
    assert (out / "figures" / "line.png").stat().st_size > 1000
    rows = (out / "figures" / "line.csv").read_text().splitlines()[1:]
    line_loss = {tuple(r.split(",")[:3]): float(r.split(",")[3]) for r in rows}
    metrics = RunFolder(out).read_metrics()
    final = metrics[(metrics["step"] == 4) & (metrics["metric"] == "loss")]
    assert len(final) == 2 * 2 * 2
    for r in final.itertuples():
        alpha = "0" if r.method == "SGD" else "1"
        assert line_loss[(alpha, str(r.seed), r.split)] == pytest.approx(r.value, rel=1e-4)
