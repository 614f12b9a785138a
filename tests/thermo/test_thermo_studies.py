"""The four thermodynamics studies run with --quick through the CLI (into tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thermotrain.cli.main import main

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _run(name: str, out: Path, *extra: str) -> dict:
    code = main(["run", name, "--quick", "--out", str(out), "--data-dir", str(SHARED_DATA),
                 "--no-progress", *extra])
    assert code == 0
    for f in ("config.json", "summary.json", "report.md"):
        assert (out / f).is_file(), f
    assert json.loads((out / "config.json").read_text())["experiment"] == name
    return json.loads((out / "summary.json").read_text())


def _figures_linked(out: Path) -> None:
    text = (out / "report.md").read_text()
    figs = sorted((out / "figures").glob("*.png"))
    assert figs and all(f"figures/{f.name}" in text and f.stat().st_size > 5000 for f in figs)


@pytest.mark.skipif(not (SHARED_DATA / "ft-regression").is_dir(), reason="no ft-regression data")
def test_ft_regression_quick(tmp_path, capsys, one_thread):
    out = tmp_path / "ft"
    s = _run("ft-regression", out)
    assert s["theory"]["spec"]["mean_entropy_production"] == pytest.approx(3.12195e-4, rel=5e-6)
    assert s["theory"]["authors"]["mean_entropy_production"] == pytest.approx(3.14828e-4,
                                                                             rel=5e-6)
    # 5e4 steps: the FT checks hold within Monte Carlo error (4 s.e.), the WOR cloud is tighter
    for r in s["fluctuation"]["spec"]["ift"]:
        assert abs(r["deviation"]) < 4
    wor = s["without_replacement"]
    assert min(wor["variance_ratio"]) > 100
    # each ratio has a standard error from the chains' spread, and the report a row for it
    se = wor["variance_ratio_se"]
    assert len(se) == 7 and all(0 < e < r for e, r in zip(se, wor["variance_ratio"],
                                                          strict=True))
    assert "| weight | WR variance | WOR variance | WR/WOR ratio | s.e. |" in \
        (out / "report.md").read_text()
    _figures_linked(out)
    assert "| ⟨σ⟩ | 3.148285e-04 | 0.000314828 | 3.121953e-04 | 0.000312195 |" in \
        (out / "report.md").read_text()
    # report re-draws from the folder only; the table is printed after the run
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.md").is_file()
    assert "<sigma> theory" in capsys.readouterr().out


def test_chain_spread_is_the_standard_error_over_independent_chains():
    """sd over chains (ddof 1) / √K: exact on two chains, and for K = 4000 i.i.d. N(0, 1)
    chain values within 5 % of 1/√K (the sd's own relative s.e. is 1/√(2K) ≈ 1.1 %)."""
    import numpy as np

    from thermotrain.experiments.kinds._thermo_chains import chain_spread

    assert chain_spread(np.array([[1.0, 2.0], [3.0, 2.0]])).tolist() == [1.0, 0.0]
    assert np.isnan(chain_spread(np.ones((1, 3)))).all()
    x = np.random.default_rng(0).standard_normal((4000, 1))
    assert abs(chain_spread(x)[0] * np.sqrt(4000) - 1) < 0.05


def test_bayes_linreg_quick(tmp_path, one_thread):
    out = tmp_path / "bl"
    s = _run("bayes-linreg", out)
    err = {(r["method"], r["h"]): r["error"] for r in s["rows"]}
    assert err[("SGLD", 1e-4)] > 2 * err[("SGWORLD", 1e-4)]
    assert {r["method"] for r in s["rows"]} == {"ULA", "SGLD", "SGWORLD"}
    _figures_linked(out)


def test_temperatures_quick(tmp_path, one_thread):
    out = tmp_path / "t"
    s = _run("temperatures", out)
    labels = {c["label"] for c in s["cells"]}
    assert "AdLaLa tau=0.001 h=0.1 B=full" in labels and "BAOAB tau=0.001 h=0.1 B=25" in labels
    adlala = next(c for c in s["cells"] if c["method"] == "AdLaLa")
    assert set(adlala["kinetic"]) == {"group0", "group1"}  # per group, from the hooks
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert header == "study,method,seed,step,split,metric,value"
    _figures_linked(out)


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="no MNIST data")
def test_ft_mnist_quick(tmp_path, one_thread):
    out = tmp_path / "m"
    s = _run("ft-mnist", out)
    assert s["parameters"] == 3 * (3 + 1)  # 4 classes, 3 PCA components, reference class
    assert s["theory"]["mean_entropy_production"] > 0
    assert s["theory"]["lyapunov_residual"] < 1e-10
    _figures_linked(out)


def test_bad_study_values_are_one_line_errors(tmp_path, capsys):
    code = main(["run", "bayes-linreg", "--quick", "--out", str(tmp_path / "x"),
                 "--set", "sampling.methods=['ULA','HMC']"])
    assert code == 2
    err = capsys.readouterr().err
    assert "sampling.methods must list some of ULA, SGLD, SGWORLD" in err
    assert "Traceback" not in err
    code = main(["run", "ft-regression", "--quick", "--out", str(tmp_path / "y"),
                 "--set", "stationary.chain=3"])
    assert code == 2 and "unknown key 'stationary.chain'" in capsys.readouterr().err
    code = main(["run", "ft-regression", "--quick", "--out", str(tmp_path / "z"),
                 "--data-dir", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "ft-regression data not found" in err and "Traceback" not in err
