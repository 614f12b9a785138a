"""The landscape studies run end to end with --quick through the CLI (thermotrain run), write
their run folders, reports and figures, resume, and reject bad configurations with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from thermotrain.cli.main import main
from thermotrain.experiments.kinds import experiments

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ROOT / "studies"
SHARED_DATA = ROOT.parent / "shared" / "data"
needs_mnist = pytest.mark.skipif(
    not (SHARED_DATA / "mnist").is_dir() or not (SHARED_DATA / "fashion_mnist").is_dir(),
    reason=f"MNIST / Fashion-MNIST not found in {SHARED_DATA}")


def test_kinds_are_registered():
    kinds = experiments()
    assert {"mli", "landscape-spiral"} <= set(kinds)


@needs_mnist
def test_mli_mnist_quick_run_report_and_resume(tmp_path: Path, capsys):
    out = tmp_path / "mli"
    argv = ["run", str(STUDIES / "mli-mnist.toml"), "--quick", "--out", str(out),
            "--data-dir", str(SHARED_DATA)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    labels = [c["label"] for c in summary["cells"]]
    assert labels == ["sgd-lr0.1", "sgd-lr0.1-bn", "adam-lr0.001", "adam-lr0.001-bn"]
    assert [f["claim"] for f in summary["findings"]][0].startswith("SGD without batch norm")
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs.columns) == ["study", "method", "seed", "step", "split", "metric", "value"]
    assert set(runs.metric) >= {"delta_min", "distance", "gauss_length", "final_train_loss"}
    lines = pd.read_csv(out / "lines.csv")
    assert len(lines) == 4 * 2 * 6 * 2 * 2  # cells x seeds x alphas x splits x metrics
    for cell in summary["cells"]:
        for run in cell["runs_detail"]:
            sub = lines[(lines.method == cell["label"]) & (lines.seed == run["seed"])
                        & (lines.split == "train") & (lines.metric == "loss")]
            from thermotrain import landscape

            assert landscape.delta_min(sub.value.to_numpy()).item() == pytest.approx(
                run["delta_min"], abs=1e-12)
    report = (out / "report.md").read_text()
    assert "## Findings beside the paper's" in report
    for fig in ("lines.png", "delta_min_vs_distance.png", "fraction_vs_lr.png"):
        assert (out / "figures" / fig).stat().st_size > 1000
    # report again from the folder alone; resume reuses every finished cell
    assert main(["report", str(out)]) == 0
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    assert capsys.readouterr().out.count("done before (resumed)") == 4


@needs_mnist
@pytest.mark.parametrize("study", ["mli-fashion", "mli-far", "mli-mnist-wide"])
def test_other_mli_studies_quick(tmp_path: Path, study):
    out = tmp_path / study
    assert main(["run", str(STUDIES / f"{study}.toml"), "--quick", "--out", str(out),
                 "--data-dir", str(SHARED_DATA), "--set", "training.seeds=1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == ("fashion-mnist" if study == "mli-fashion" else "mnist")
    if study == "mli-far":
        assert {c["reward"] for c in summary["cells"]} == {0.0, 0.1}
    assert (out / "report.md").exists()


def test_landscape_spiral_quick(tmp_path: Path):
    out = tmp_path / "spiral"
    assert main(["run", str(STUDIES / "landscape-spiral.toml"), "--quick", "--out",
                 str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["methods"]) == ["AdLaLa", "Adam", "SGD"]
    for m in summary["methods"].values():
        assert len(m["top_eigenvalues"]) == 2 and len(m["top_eigenvalues"][0]) == 2
        assert m["top_eigenvalues"][0][0] >= m["top_eigenvalues"][0][1]
    assert set(summary["pairs"]) == {"AdLaLa->Adam", "AdLaLa->SGD", "Adam->SGD"}
    assert all(b >= 0 for p in summary["pairs"].values() for b in p["barrier_train"])
    for fig in ("between.png", "mli.png", "plane_adlala.png", "plane_three.png"):
        assert (out / "figures" / fig).stat().st_size > 1000


def test_bad_configuration_is_a_one_line_error(tmp_path: Path, capsys):
    code = main(["run", str(STUDIES / "landscape-spiral.toml"), "--quick", "--out",
                 str(tmp_path / "x"), "--set", "analysis.plane_grids=3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown key 'analysis.plane_grids'" in err and "Traceback" not in err
    code = main(["run", str(STUDIES / "mli-mnist.toml"), "--quick", "--out",
                 str(tmp_path / "y"), "--set", "mli.batchnorm_mode='reset'"])
    assert code == 2
    assert "mli.batchnorm_mode must be one of recompute, interpolate, freeze" in \
        capsys.readouterr().err
