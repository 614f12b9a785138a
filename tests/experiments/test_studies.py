"""``--quick`` smoke run of every study, and the report of a few of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _experiments_helpers import SHARED_DATA

from thermotrain.experiments import find_study, list_studies, load_study, run_study, write_report
from thermotrain.experiments.config import read_toml

#: the method studies (those with ``experiment = NAME`` are run by their experiment kind
#: and tested with it)
STUDIES = [name for name, _ in list_studies()
           if "experiment" not in read_toml(find_study(name))]
#: studies whose report is also drawn (each exercises other figures)
REPORTED = {
    "notebook-4turn": {"curves.png", "boundaries.png", "histograms.png"},
    "fig1": {"curves.png", "boundaries.png", "histograms.png", "sweep.png"},
    "fig15": {"curves.png", "heatmap.png"},
    "fig3-spiral": {"curves.png", "boundaries.png", "line.png"},
    "mnist-mlp": {"curves.png", "histograms.png"},
}


@pytest.mark.parametrize("name", STUDIES)
def test_quick_run(name: str, tmp_path: Path):
    study = load_study(find_study(name), quick=True)
    if study.data.kind == "mnist" and not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("MNIST files not available")
    # (no wall-clock bound here: speed is measured by benchmarks/, never by timed tests)
    summary = run_study(study, tmp_path / name, data_dir=SHARED_DATA)
    assert list(summary["methods"]) == [m.name for m in study.methods]
    for m in summary["methods"].values():
        assert 0 <= m["test_accuracy_mean"] <= 1
        assert m["n_seeds"] == study.training.seeds and m["steps"] == study.training.steps
        assert m["n_diverged"] == 0
    if name in REPORTED:
        report = write_report(tmp_path / name)
        text = report.read_text()
        assert "| method | ours" in text
        made = {p.name for p in (tmp_path / name / "figures").glob("*.png")}
        assert REPORTED[name] <= made
        for file in made:
            assert f"figures/{file}" in text
            assert (tmp_path / name / "figures" / file).stat().st_size > 1000
        if study.paper:
            first = next(iter(study.paper))
            assert f"| {first} |" in text
    saved = json.loads((tmp_path / name / "config.json").read_text())
    assert saved["name"] == name
