"""The four swap studies run end to end with --quick through the CLI, write the run folder
(config.json, metrics.csv, summary.json, report.md, figures/), redraw with `report`, and
reject bad configurations with a one-line message (exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from thermotrain.cli.main import main
from thermotrain.data import colorize, load_colorized_mnist

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"
needs_mnist = pytest.mark.skipif(not (SHARED_DATA / "mnist").exists() or
                                 not (SHARED_DATA / "fashion_mnist").exists(),
                                 reason=f"MNIST / Fashion-MNIST not in {SHARED_DATA}")
COLUMNS = ["study", "method", "seed", "step", "split", "metric", "value"]


def _run(study: str, out: Path, *extra: str) -> int:
    return main(["run", str(ROOT / "studies" / f"{study}.toml"), "--quick", "--out", str(out),
                 "--data-dir", str(SHARED_DATA), "--no-progress", *extra])


def _check_folder(out: Path) -> dict:
    for name in ("config.json", "metrics.csv", "summary.json", "report.md"):
        assert (out / name).is_file(), name
    assert list((out / "figures").glob("*.png"))
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns) == COLUMNS and len(metrics) > 0
    return json.loads((out / "summary.json").read_text())


def test_swap_acceptance_quick(tmp_path):
    out = tmp_path / "acc"
    assert _run("swap-acceptance", out) == 0
    summary = _check_folder(out)
    units = [c["moves"]["units"] for c in summary["cells"]]
    # the unit swap is an exact symmetry: every proposal accepted, ΔL at float32 rounding
    assert all(min(u["acceptance"]) == 1.0 for u in units)
    assert max(u["max_abs_delta"] for u in units) < 1e-5
    assert main(["report", str(out)]) == 0


def test_replica_exchange_quick(tmp_path):
    out = tmp_path / "rex"
    assert _run("replica-exchange", out) == 0
    summary = _check_folder(out)
    assert set(summary["coldest"]) == {"exchange", "no-exchange", "adlala"}
    well = summary["double_well"][0]
    assert well["sampler"] == "metropolis" and len(well["x2"]) == 4


@needs_mnist
def test_aging_quick_and_resume(tmp_path):
    out = tmp_path / "aging"
    assert _run("aging-mnist", out) == 0
    summary = _check_folder(out)
    assert set(summary["spread"]) == {"sgd-m10", "baoab-m10", "sgd-m50", "baoab-m50"}
    table = pd.read_csv(out / "aging.csv")
    assert {"t_w", "t", "msd", "overlap", "participation"} <= set(table.columns)
    before = (out / "summary.json").read_text()
    assert _run("aging-mnist", out, "--resume") == 0        # cells done: nothing retrained
    after = json.loads((out / "summary.json").read_text())
    assert after["spread"] == json.loads(before)["spread"]


@needs_mnist
def test_swap_speedup_quick(tmp_path):
    out = tmp_path / "speed"
    assert _run("swap-speedup", out) == 0
    summary = _check_folder(out)
    names = {(c["dataset"], c["model"], c["protocol"]) for c in summary["cells"]}
    assert ("colorized-mnist-cnn", "cnn", "1SA") in names
    assert ("fashion-mnist", "mlp", "rows-greedy") in names


def test_bad_study_values_are_one_line_errors(tmp_path, capsys):
    code = _run("swap-acceptance", tmp_path / "x", "--set", "protocol.moves=['diagonal']")
    assert code == 2
    err = capsys.readouterr().err
    assert "diagonal" in err and "Traceback" not in err
    assert _run("replica-exchange", tmp_path / "y", "--set", "ladder.speed=3") == 2
    assert "ladder.speed" in capsys.readouterr().err
    assert _run("swap-speedup", tmp_path / "z", "--set", "protocols.rows.kind='x'") == 2


def test_colorize_definition():
    grey = torch.rand(500, 1, 6, 6)
    colour = colorize(grey, seed=3)
    assert colour.shape == (500, 3, 6, 6) and torch.equal(colour, colorize(grey, seed=3))
    assert float(colour.min()) >= 0 and float(colour.max()) <= 1
    # background where m = 0, foreground where m = 1, every channel contrast >= 0.25
    ends = colorize(torch.cat([torch.zeros(500, 1, 1, 1), torch.ones(500, 1, 1, 1)], 2), seed=3)
    contrast = (ends[:, :, 0, 0] - ends[:, :, 1, 0]).abs()
    assert float(contrast.min()) >= 0.25 - 1e-6
    assert torch.equal(colorize(grey[:100], seed=3), colour[:100])   # subsets: same colours
    with pytest.raises(ValueError, match="N, 1, H, W"):
        colorize(torch.rand(2, 3, 4, 4))


@needs_mnist
def test_colorized_mnist_loads_subsets_consistently():
    x, y = load_colorized_mnist("test", SHARED_DATA, count=50)
    assert x.shape == (50, 3, 28, 28) and y.shape == (50,)
    x_train, _ = load_colorized_mnist("train", SHARED_DATA, count=50)
    assert not torch.equal(x, x_train)
    with pytest.raises(ValueError, match="split must be"):
        load_colorized_mnist("valid", SHARED_DATA)


def test_report_of_an_incomplete_run_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "broken"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"experiment": "swap-acceptance"}))
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "summary.json" in err and "Traceback" not in err
    (out / "summary.json").write_text("{not json")
    assert main(["report", str(out)]) == 2
    assert "corrupt" in capsys.readouterr().err
